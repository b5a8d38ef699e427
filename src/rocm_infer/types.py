"""The public contract: frozen dataclasses, validated on construction.

Every option is checked here, before any work starts, so a bad value raises
``InvalidConfigError`` (a ``ValueError``) in the caller's thread and never
reaches the engine or the server.  No dict crosses the public API.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from .errors import InvalidConfigError

if TYPE_CHECKING:  # numpy is only needed at run time by the backends
    import numpy as np

FinishReason = Literal["stop", "length", "cancelled", "error"]
FlashAttn = Literal["auto", "on", "off"]
DeviceSampling = Literal["auto", "on", "off"]
ROLES = ("system", "user", "assistant", "tool")
MAX_PARALLEL_SLOTS = 256  # llama.cpp's LLAMA_MAX_SEQ
DEFAULT_PARALLEL_SLOTS = 16  # parallel_slots=0
DEFAULT_CONTEXT_CAP = 4096  # context_len=0: the trained context, capped here
# A year: a stream waits with queue.get(timeout=...), which raises a bare OverflowError past
# threading.TIMEOUT_MAX (9.2e9 s on Linux); a request that may wait longer wants timeout=None.
MAX_TIMEOUT_S = 365 * 24 * 3600.0
INT32_MAX = 2**31 - 1  # the largest count llama.cpp's C ints and llama-server's fields take
# The largest logit bias or penalty taken: far past any logit (a bias of 100 already decides),
# and far enough below float32's range that a logit plus it, or a window of counts times it,
# stays finite
LOGIT_ADJUSTMENT_LIMIT = 1e6
MAX_TOP_LOGPROBS = 20  # OpenAI's bound on top_logprobs


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidConfigError(message)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_int(value: Any, low: int = -INT32_MAX - 1) -> bool:
    """An int (not a bool) in [low, INT32_MAX]: llama.cpp and llama-server take these
    options as C ints, where a larger value would wrap around instead of failing."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= INT32_MAX


def token_ids(values: Iterable[Any], what: str, vocab_size: int | None = None) -> list[int]:
    """``values`` as a list of plain ints, each a token id: >= 0, and below ``vocab_size``
    where the caller knows it (the vocabulary's own lookup reads an id past its end as
    nothing, which would hide a caller's mistake), else a C int.  Any integer type is taken
    (numpy's too: ``tokenize``'s output often passes through an array), a bool is not.  The
    one rule for prompts, ``detokenize``, ``stop_tokens`` and ``logit_bias`` on every backend."""
    try:
        ids = list(values)
    except TypeError as exc:  # a 0-d numpy array
        raise InvalidConfigError(f"{what} must be a list of token ids, got {values!r}") from exc
    end = vocab_size if vocab_size is not None else INT32_MAX + 1
    for token in ids:
        integer = isinstance(token, numbers.Integral) and not isinstance(token, bool)
        if not integer or not 0 <= token < end:
            bound = f"the vocabulary size {vocab_size}" if vocab_size is not None else "2**31"
            raise InvalidConfigError(f"{what} must be integers >= 0 and below {bound}, got {token!r}")
    return [int(token) for token in ids]


def _real(value: Any, name: str, ban: bool = False) -> float:
    """A logit adjustment as a float: any real number type (numpy's too), within
    ``LOGIT_ADJUSTMENT_LIMIT`` (past it a sum of logits in float32 can reach +inf), or
    ``-inf`` where it means a ban."""
    try:
        number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int too large for a float
        number = math.nan
    ok = abs(number) <= LOGIT_ADJUSTMENT_LIMIT or (ban and number == -math.inf)
    _require(ok, f"{name} must be numbers within ±{LOGIT_ADJUSTMENT_LIMIT:g}{' or -inf (a ban)' if ban else ''}, got {value!r}")
    return number


def penalties_on(repeat_penalty: float, frequency_penalty: float, presence_penalty: float, repeat_last_n: int) -> bool:
    """Some penalty is on and has a window to count in (llama.cpp's rule)."""
    return (repeat_penalty != 1.0 or frequency_penalty != 0.0 or presence_penalty != 0.0) and repeat_last_n > 0


def _is_sequence(value: Any) -> bool:
    """A collection of items: not one string, not a mapping, not a lone number (a 0-d numpy
    array is iterable by type but raises when iterated)."""
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping)) and getattr(value, "ndim", 1) != 0


def _is_number(value: Any) -> bool:
    """A finite int or float; an int too large for a float (``10**400``) is none, where
    ``math.isfinite`` would raise a bare OverflowError."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def merge_options(cls: type, config: Any, options: dict[str, Any]) -> Any:
    """Build a ``cls`` from an optional ``config=`` object plus keyword overrides.

    Unknown keywords are an ``InvalidConfigError``, not a silent no-op: a typo
    such as ``max_token=`` must not run with the default.
    """
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - names)
    _require(not unknown, f"unknown {cls.__name__} option(s): {', '.join(unknown)}")
    if config is None:
        return cls(**options)
    _require(isinstance(config, cls), f"config= must be a {cls.__name__}, not {type(config).__name__}")
    if not options:
        return config
    merged = {f.name: getattr(config, f.name) for f in fields(cls)}
    merged.update(options)
    return cls(**merged)


@dataclass(frozen=True)
class Token:
    """One generated token. ``text`` is the text this token releases: it may be empty
    while a multi-byte character or a possible stop string is still incomplete, and
    the concatenation of all ``text`` values is exactly the generated text.  An
    end-of-generation (or ``stop_tokens``) token is yielded only when it releases text
    held back before it; otherwise generation ends without yielding it.  On the
    llama_server backend ``id`` is -1 for a token llama-server never sent (it ended
    inside a character and the id could not be recovered from byte tokens).
    ``top_logprobs`` (with ``top_logprobs=N``): the N most likely tokens at this step as
    (id, log-probability), most likely first, from the model's own logits.  On
    llama_server a token recovered inside a character (see above) has neither."""

    id: int
    text: str
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] | None = None


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def __post_init__(self) -> None:
        _require(self.role in ROLES, f"unknown chat role {self.role!r}; use one of {', '.join(ROLES)}")
        _require(isinstance(self.content, str), "message content must be a string")
        try:  # a lone surrogate has no UTF-8 form: neither backend could ever send it
            self.content.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidConfigError(
                f"message content contains a lone surrogate {exc.object[exc.start:exc.end]!r} at index "
                f"{exc.start}: it is not valid Unicode text and has no UTF-8 form"
            ) from exc

    @classmethod
    def coerce(cls, value: Message | dict[str, Any]) -> Message:
        """Accept the OpenAI-style dicts users already have, as well as ``Message``."""
        if isinstance(value, Message):
            return value
        _require(isinstance(value, dict), f"a chat message must be a Message or a dict, not {type(value).__name__}")
        _require(set(value) >= {"role", "content"}, "a chat message needs 'role' and 'content'")
        return cls(role=value["role"], content=value["content"])


@dataclass(frozen=True)
class GenerateConfig:
    """Per-request options.  ``temperature=0`` selects greedy decoding; ``top_k=0``,
    ``top_p=0``/``1``, ``min_p=0`` and ``repeat_penalty=1`` switch that filter off.
    ``ignore_eos`` keeps generating past end-of-generation tokens (benchmarks that
    need exactly ``max_tokens``, like llama.cpp's own).  ``json_schema``, ``grammar``
    (GBNF) or ``regex`` constrain the output (structured output); the request ends when
    the constraint is complete, or at ``max_tokens`` with the output unfinished.
    ``logit_bias`` (token id -> a number added to its logit before sampling, ``-inf`` to
    ban it; OpenAI's and llama.cpp's) steers each choice, e.g. a classifier's answer to
    its labels' tokens; log-probabilities stay the model's own.  The penalties are
    llama.cpp's, over the last ``repeat_last_n`` tokens (prompt included): a token seen
    there has its logit divided by ``repeat_penalty`` (multiplied, when negative), then
    lowered by ``frequency_penalty`` per time seen and ``presence_penalty`` once (OpenAI's
    two, counted over that window rather than over the whole answer).  ``logprobs`` gives
    each token its log-probability, ``top_logprobs=N`` (with it, up to 20) the N most
    likely tokens at each step too."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 0.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    stop: tuple[str, ...] = ()
    stop_tokens: tuple[int, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    return_logits: bool = False
    ignore_eos: bool = False
    timeout: float | None = None
    json_schema: str | dict[str, Any] | None = None
    grammar: str | None = None
    regex: str | None = None
    logit_bias: Mapping[int, float] | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        self._check_constraint()
        self._check_logit_bias()
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        _require(_is_sequence(self.stop), f"stop must be a string or a list of strings, got {self.stop!r}")
        _require(_is_sequence(self.stop_tokens), f"stop_tokens must be a list of token ids, got {self.stop_tokens!r}")
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_tokens", tuple(self.stop_tokens))
        _require(_is_int(self.max_tokens, 1), f"max_tokens must be an integer in [1, {INT32_MAX}], got {self.max_tokens!r}")
        _require(_is_number(self.temperature) and self.temperature >= 0, f"temperature must be a finite number >= 0, got {self.temperature!r}")
        _require(_is_int(self.top_k, 0), f"top_k must be an integer in [0, {INT32_MAX}], got {self.top_k!r}")
        _require(_is_number(self.top_p) and 0 <= self.top_p <= 1, f"top_p must be in [0, 1], got {self.top_p!r}")
        _require(_is_number(self.min_p) and 0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p!r}")
        _require(_is_number(self.repeat_penalty) and self.repeat_penalty > 0, f"repeat_penalty must be a finite number > 0, got {self.repeat_penalty!r}")
        _require(_is_int(self.repeat_last_n, 0), f"repeat_last_n must be an integer in [0, {INT32_MAX}], got {self.repeat_last_n!r}")
        for name in ("frequency_penalty", "presence_penalty"):
            object.__setattr__(self, name, _real(getattr(self, name), name))
        _require(all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty strings")
        _require(all(_utf8(s) for s in self.stop), "stop strings must be valid Unicode text (a lone surrogate has no UTF-8 form)")
        object.__setattr__(self, "stop_tokens", tuple(token_ids(self.stop_tokens, "stop_tokens")))
        for flag in ("logprobs", "return_logits", "ignore_eos"):
            _require(isinstance(getattr(self, flag), bool), f"{flag} must be True or False, got {getattr(self, flag)!r}")
        _require(_is_int(self.top_logprobs, 0) and self.top_logprobs <= MAX_TOP_LOGPROBS,
                 f"top_logprobs must be an integer in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs!r}")
        _require(self.logprobs or not self.top_logprobs, "top_logprobs needs logprobs=True (as in OpenAI's API)")
        _require(self.seed is None or (isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**32), f"seed must be None or an integer in [0, 2**32), got {self.seed!r}")
        _require(self.timeout is None or (_is_number(self.timeout) and 0 < self.timeout <= MAX_TIMEOUT_S),
                 f"timeout must be None (no limit) or a number of seconds in (0, {MAX_TIMEOUT_S:.0f}] (a year), got {self.timeout!r}")

    def _check_logit_bias(self) -> None:
        """Kept as a ``{int: float}`` of its own, a copy (numpy's ids and numbers taken; a
        plain dict, so that a config pickles); a bias of ``+inf`` or NaN has no meaning in a
        softmax and is refused."""
        if self.logit_bias is None:
            return
        _require(isinstance(self.logit_bias, Mapping), f"logit_bias must be a mapping of token id to bias, got {self.logit_bias!r}")
        ids = token_ids(self.logit_bias.keys(), "logit_bias's token ids")
        biases = [_real(value, "logit_bias's values", ban=True) for value in self.logit_bias.values()]
        object.__setattr__(self, "logit_bias", dict(zip(ids, biases)) or None)

    def _check_constraint(self) -> None:
        """Structured output: at most one of ``json_schema`` (a dict or its JSON text, kept as
        compact JSON text), ``grammar`` (llama.cpp's GBNF) and ``regex``; each is compiled by
        llguidance here, so a bad one fails before any work (``structured.py``)."""
        from .structured import llguidance_grammar, normalise_json_schema

        given = [name for name in ("json_schema", "grammar", "regex") if getattr(self, name) is not None]
        _require(len(given) <= 1, f"give at most one of json_schema, grammar and regex, not {' and '.join(given)}")
        if self.json_schema is not None:
            object.__setattr__(self, "json_schema", normalise_json_schema(self.json_schema))
        for name in given:
            _require(isinstance(getattr(self, name), str) and getattr(self, name), f"{name} must be a non-empty string")
            llguidance_grammar(name, getattr(self, name))  # type: ignore[arg-type]

    @property
    def constraint(self) -> tuple[str, str] | None:
        """``(kind, text)`` of the structured-output constraint, None when output is free."""
        for name in ("json_schema", "grammar", "regex"):
            if getattr(self, name) is not None:
                return name, getattr(self, name)
        return None

    @property
    def penalised(self) -> bool:
        return penalties_on(self.repeat_penalty, self.frequency_penalty, self.presence_penalty, self.repeat_last_n)

    @property
    def greedy(self) -> bool:
        """The argmax of the model's own logits: the filters cannot change it, a
        penalty or a logit bias can."""
        return self.temperature == 0 and not self.penalised and not self.logit_bias


@dataclass(frozen=True)
class LoadConfig:
    """Options fixed when a model is loaded.

    ``context_len=0``: the model's trained context, capped by free VRAM on a HIP build
    and at 4096 tokens otherwise (``models.size_context``).  ``gpu_layers=-1``: offload every
    layer the build can.  ``parallel_slots=0``: 16 sequences share one KV cache.
    ``n_threads=0``: llama.cpp's own default, one per physical core (``cpu_threads``).  ``device_sampling``: where
    tokens are chosen; ``"auto"`` samples in the decode graph (only the chosen token comes
    back) the requests whose host sampling needs a pass over the whole vocabulary (top-p
    without top-k, min-p alone, pure temperature) when the output layer is on a GPU and
    at most four requests run or wait (counted up to ``parallel_slots``), and everything else on the host (all rows of a step at
    once, in ``csrc/host_sampler.c``, split over up to eight threads); ``"on"`` puts every
    request the device can sample there, ``"off"`` none (the llama-server backend passes
    ``"on"`` as ``--backend-sampling``).  ``prefix_cache``: a finished request's KV cells
    stay cached, and a new request reuses the longest prefix it shares with any cached
    or running one (in-process; see ``native/kv_slots.py``).  ``overlap_decode``: the
    in-process engine does a step's text work (detokenizing, stop strings, handing tokens
    to their streams) while the next step decodes; ``"auto"`` does it where the layers are
    on a GPU (``llama_decode`` returns before the device is done), not on the CPU, whose
    decode keeps every core busy (there, each token would only reach its stream one
    step later).  ``decode_runs``: while every running request is plain (no per-token
    work that needs Python before the next step), the in-process engine decodes a run of
    steps in one native call (``native/decode_run.py``); ``False`` takes every step
    through Python, for comparison.  ``base_url`` and ``api_key``: the openai backend's server (e.g.
    ``http://host:8000/v1``) and key (also read from ``ROCM_INFER_OPENAI_BASE_URL`` and
    ``ROCM_INFER_OPENAI_API_KEY``); this library never shows the key.
    """

    backend: str | None = None
    context_len: int = 0
    gpu_layers: int = -1
    parallel_slots: int = 0
    flash_attn: FlashAttn = "auto"
    n_threads: int = 0
    batch_size: int = 512
    device_sampling: DeviceSampling = "auto"
    prefix_cache: bool = True
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never printed or logged
    overlap_decode: Literal["auto", "on", "off"] = "auto"
    decode_runs: bool = True

    def __post_init__(self) -> None:
        _require(self.backend is None or (isinstance(self.backend, str) and self.backend != ""), f"backend must be a name or None, got {self.backend!r}")
        _require(_is_int(self.context_len, 0), f"context_len must be an integer in [0, {INT32_MAX}], got {self.context_len!r}")
        _require(_is_int(self.gpu_layers, -1), f"gpu_layers must be -1 (all) or an integer in [0, {INT32_MAX}], got {self.gpu_layers!r}")
        _require(_is_int(self.parallel_slots) and 0 <= self.parallel_slots <= MAX_PARALLEL_SLOTS, f"parallel_slots must be an integer in [0, {MAX_PARALLEL_SLOTS}], got {self.parallel_slots!r}")
        _require(self.flash_attn in ("auto", "on", "off"), f"flash_attn must be 'auto', 'on' or 'off', got {self.flash_attn!r}")
        _require(_is_int(self.n_threads, 0), f"n_threads must be an integer in [0, {INT32_MAX}], got {self.n_threads!r}")
        _require(_is_int(self.batch_size, 1), f"batch_size must be an integer in [1, {INT32_MAX}], got {self.batch_size!r}")
        _require(self.device_sampling in ("auto", "on", "off"), f"device_sampling must be 'auto', 'on' or 'off', got {self.device_sampling!r}")
        _require(isinstance(self.prefix_cache, bool), f"prefix_cache must be True or False, got {self.prefix_cache!r}")
        _require(self.base_url is None or (isinstance(self.base_url, str) and self.base_url.startswith(("http://", "https://"))),
                 f"base_url must be an http:// or https:// URL, got {self.base_url!r}")
        _require(self.api_key is None or (isinstance(self.api_key, str) and self.api_key.isprintable()), "api_key must be a printable string")
        _require(self.overlap_decode in ("auto", "on", "off"), f"overlap_decode must be 'auto', 'on' or 'off', got {self.overlap_decode!r}")
        _require(isinstance(self.decode_runs, bool), f"decode_runs must be True or False, got {self.decode_runs!r}")


@dataclass(frozen=True)
class GenerateMetrics:
    """Timing and counts of one finished operation.  ``generated_tokens`` counts
    exactly the tokens the stream yielded (end-of-generation tokens are not yielded)."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    time_to_first_token_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    active_memory_bytes: int = 0
    peak_memory_bytes: int = 0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first over the time after the first: the first token's
        cost belongs to prefill, as in llama.cpp's own figures."""
        return (self.generated_tokens - 1) / self.decode_s if self.decode_s > 0 and self.generated_tokens > 1 else 0.0


@dataclass(frozen=True)
class CacheStats:
    """The in-process prefix cache (``model.cache_stats()``): entries kept, the KV cells
    they hold, admissions that reused a prefix, prompt tokens reused, entries evicted."""

    entries: int = 0
    cells_held: int = 0
    hits: int = 0
    tokens_reused: int = 0
    evictions: int = 0


@dataclass(frozen=True)
class ClassifyResult:
    """The most likely next token after a prompt; ``logits`` (vocab-sized) when asked."""

    token: int
    text: str
    logits: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class BatchResult:
    """One item of ``batch_generate``.  A failure is this item's ``err``, not an
    exception for the whole batch."""

    text: str = ""
    tokens: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    metrics: GenerateMetrics | None = None
    err: Exception | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded and how.  ``context_reason`` says why ``context_len`` was chosen."""

    path: str
    backend: str
    architecture: str
    name: str
    vocab_size: int
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    n_params: int
    size_bytes: int
    quantization: str
    quant_bits: int | None
    quant_group: int | None
    context_train: int
    context_len: int
    context_reason: str
    parallel_slots: int
    gpu_layers: int
    flash_attn: FlashAttn
    has_chat_template: bool


@dataclass(frozen=True)
class BuildInfo:
    """What the native libraries were compiled for (read from the installed build)."""

    gpu_backend: str
    gpu_targets: tuple[str, ...]
    flash_attn_kernels: str
    llama_cpp_commit: str
    library_path: str
    bin_path: str
    supports_gpu_offload: bool
    system_info: str


@dataclass(frozen=True)
class ModelEntry:
    """One model found by ``discover()``, read from its GGUF header alone.

    A split model (``name-00001-of-00003.gguf``...) is one entry: ``path`` is its first
    part, ``file_size_bytes`` and ``parameter_count`` cover all parts.  A file that cannot
    be used is an entry too, with ``problem`` saying why; the others have ``problem=None``.
    """

    path: str
    name: str
    architecture: str | None = None
    display_name: str | None = None
    parameter_count: int | None = None
    quantization: str | None = None
    file_size_bytes: int = 0
    context_length: int | None = None
    has_chat_template: bool = False
    split_count: int = 1
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None
