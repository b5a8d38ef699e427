"""Per-request state, owned by the engine thread once submitted.

A request needs no prefill or decode phase: it holds its token ids (prompt,
then what it generated) and how many of them are already in the KV cache;
each step feeds the ones that are not.  Only ``cancel_event`` is touched by
another thread (the caller's), and it is an ``Event``.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..stream import Sink
from ..types import GenerateConfig, GenerateMetrics
from .detokenize import Detokenizer
from .stops import StopMatcher

if TYPE_CHECKING:
    from .constraints import Constraint
    from .host_sampling import HostSampler


class RequestKind(enum.Enum):
    GENERATE = "generate"
    CLASSIFY = "classify"  # prefill only: logits at the last prompt position (its cells may stay cached)


class RequestStatus(enum.IntEnum):
    """Ordered: every status above RUNNING is finished."""

    WAITING = 0
    RUNNING = 1
    FINISHED_STOPPED = 2
    FINISHED_LENGTH = 3
    FINISHED_CANCELLED = 4
    FINISHED_ERROR = 5

    @property
    def finished(self) -> bool:
        return self > RequestStatus.RUNNING


@dataclass(eq=False)
class Request:
    prompt: list[int]
    config: GenerateConfig
    sink: Sink
    kind: RequestKind = RequestKind.GENERATE
    constraint: Constraint | None = None  # structured output: its matcher (sampled on the host)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.perf_counter)
    # ---- engine-owned from here on ----
    status: RequestStatus = RequestStatus.WAITING
    seq_id: int = -1
    n_computed: int = 0
    reserved_end: int = 0  # while running: its cells cover positions [0, reserved_end)
    generated: list[int] = field(default_factory=list)
    host_sampler: HostSampler | None = None  # set at its first admission; None when the device samples it
    plain: bool = False  # set at admission: its decode steps may run natively (``decode_run.is_plain``)
    # set before each plan while waiting (kv_slots.match): the prefix it would reuse
    reuse_from: int | None = None
    reuse_len: int = 0
    deferred: bool = False
    detokenizer: Detokenizer = field(default_factory=Detokenizer)
    stops: StopMatcher = field(init=False)
    # the last recorded token's (id, logprob, top logprobs, is an end token) until its text is delivered
    undelivered: tuple[int, float | None, tuple[tuple[int, float], ...] | None, bool] | None = None
    error: BaseException | None = None  # why it ended, once it has
    announced: bool = False  # its ``Finished`` was sent
    admitted_at: float = 0.0
    first_token_at: float = 0.0
    last_token_at: float = 0.0

    def __post_init__(self) -> None:
        self.stops = StopMatcher(self.config.stop)
        self._prompt_ids: np.ndarray | None = None
        self.deadline = self.submitted_at + self.config.timeout if self.config.timeout else None

    @property
    def n_tokens(self) -> int:
        return len(self.prompt) + len(self.generated)

    @property
    def pending(self) -> int:
        """Tokens not yet in the KV cache: the prompt's rest, or the last sampled token."""
        return self.n_tokens - self.n_computed

    def prompt_ids(self) -> np.ndarray:
        """The prompt as an array, made once, for prefix matching."""
        if self._prompt_ids is None:
            self._prompt_ids = np.asarray(self.prompt, dtype=np.int32)
        return self._prompt_ids

    def computed_ids(self) -> np.ndarray:
        """The token ids whose cells are in the KV cache."""
        return np.asarray(self.tokens(0, self.n_computed), dtype=np.int32)

    @property
    def last_token(self) -> int:
        return self.generated[-1] if self.generated else self.prompt[-1]

    def tokens(self, start: int, count: int) -> list[int]:
        """Token ids at positions [start, start + count) of prompt + generated."""
        n_prompt = len(self.prompt)
        end = start + count
        if end <= n_prompt:
            return self.prompt[start:end]
        if start >= n_prompt:  # decoding: slice the generated tail, never copy the whole history
            return self.generated[start - n_prompt : end - n_prompt]
        return self.prompt[start:] + self.generated[: end - n_prompt]

    def limit_end(self, n_ctx: int) -> int:
        """The position its cells can never pass: the prompt plus every token it may still
        generate, capped by the context (generation stops at its end); a classify request
        only ever holds its prompt."""
        if self.kind is RequestKind.CLASSIFY:
            return len(self.prompt)
        return min(len(self.prompt) + self.config.max_tokens, n_ctx)

    def steps_left(self, n_ctx: int) -> int:
        """Decode steps it may take before it ends by length or needs more cells."""
        return min(self.config.max_tokens - len(self.generated), n_ctx - self.n_tokens, self.reserved_end - self.n_computed)

    def cells_needed(self, n_ctx: int, growth: int) -> int:
        """KV cells to reserve at admission, past its reused prefix: positions up to
        ``growth`` (one slot's share of the context, its tokens counted in it, so that a
        full set of slots with short prompts fits at once), or its tokens (the prompt, and
        what it generated before a preemption) and one more where they pass that; never
        past ``limit_end``.  ``max_tokens`` is a ceiling, not a reservation: the rest is
        reserved ``growth`` cells at a time as it generates (``KvSlots.grow``)."""
        return min(self.limit_end(n_ctx), max(growth, self.n_tokens + 1)) - self.reuse_len

    def release(self, piece: bytes) -> tuple[str, bool]:
        """A token's bytes in: the text they release (held back while a character or a
        possible stop string is unfinished), and whether a stop string ended it."""
        return self.stops.feed(self.detokenizer.feed(piece))

    def flush_text(self) -> str:
        """The text still held back (an unfinished character, the start of a possible stop
        string) when generation ends without a stop string: released, up to a stop string
        the flushed character completes."""
        tail, stopped = self.stops.feed(self.detokenizer.flush())
        return tail if stopped else tail + self.stops.flush()

    def metrics(self, now: float, active_bytes: int, peak_bytes: int) -> GenerateMetrics:
        """This request's numbers as it ends: the first token's time belongs to prefill."""
        first = self.first_token_at
        return GenerateMetrics(
            prompt_tokens=len(self.prompt),
            generated_tokens=len(self.generated),
            time_to_first_token_s=first - self.submitted_at if first else 0.0,
            prefill_s=first - self.admitted_at if first and self.admitted_at else 0.0,
            decode_s=self.last_token_at - first if first else 0.0,
            total_s=now - self.submitted_at,
            active_memory_bytes=active_bytes,
            peak_memory_bytes=peak_bytes,
        )

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline
