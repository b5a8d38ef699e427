"""Sampling on the host for all rows of a step at once, without sorting the vocabulary.

llama.cpp's CPU samplers take one row at a time, and ``top_p`` without ``top_k``
sorts a large part of the vocabulary for every row (about 6 ms per row on a 262k
vocabulary), which is longer than a whole decode step on a GPU.  Here a step's rows go
to one native call (``csrc/host_sampler.c``, built with the package: its header says
why C), which runs llama.cpp's chain in llama.cpp's order on each row, rows shared over
threads: the logit bias and penalties (applied here, in numpy, before the call), top_k
(the k best found without a sort), top_p on the softmax at temperature 1 over what top_k
left or over the whole vocabulary (the nucleus found among the tokens whose weight is at
least e^-10 of the best one's, widening when they do not hold it), min_p relative to the
best logit, then a draw at the request's temperature with one uniform number from the
request's own generator.  A seed therefore gives the same tokens whatever the thread count.

The result has llama.cpp's distribution for the same settings (the tests compare
sampled frequencies with llama.cpp's chain), not its random stream.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..types import penalties_on
from .host_library import host_library


@dataclass
class HostSampler:
    """One request's sampling settings, its recent tokens (for the penalties) and its
    own random generator: a seed gives the same tokens run after run."""

    temperature: float
    top_k: int = 0
    top_p: float = 0.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int = 0
    logit_bias: Mapping[int, float] | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    recent: collections.deque[int] = field(init=False)
    # settled once here, read for every row of every step: some penalty is on, and its row is
    # changed before sampling (a logit bias, a penalty)
    penalised: bool = field(init=False)
    adjusts_logits: bool = field(init=False)

    def __post_init__(self) -> None:
        self.penalised = penalties_on(self.repeat_penalty, self.frequency_penalty, self.presence_penalty, self.repeat_last_n)
        self.adjusts_logits = self.penalised or bool(self.logit_bias)
        bias = self.logit_bias or {}
        self._bias_ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
        self._bias_values = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        # draws taken for a decode run that ended before using them, next in line: the
        # request's uniform numbers are used in one order however its steps were run
        self._spare: collections.deque[float] = collections.deque()
        self.recent = collections.deque(maxlen=self.repeat_last_n if self.penalised else 0)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def next_uniform(self) -> float:
        return self._spare.popleft() if self._spare else float(self.rng.random())

    def uniforms(self, n: int) -> np.ndarray:
        """The next ``n`` uniform numbers; ``give_back`` returns those left unused."""
        head = [self._spare.popleft() for _ in range(min(n, len(self._spare)))]
        return np.concatenate((head, self.rng.random(n - len(head))))

    def give_back(self, unused: np.ndarray) -> None:
        self._spare.extendleft(reversed(unused.tolist()))

    def accept(self, token: int) -> None:
        """Record a token of the sequence (prompt or generated) for the penalty window."""
        self.recent.append(token)

    def adjust(self, row: np.ndarray) -> None:
        """The logit bias, then the penalties, in place: llama.cpp's chain order."""
        if self._bias_ids.size:
            row[self._bias_ids] += self._bias_values
        self.penalise(row)

    def penalise(self, row: np.ndarray) -> None:
        """llama.cpp's penalties, in place: a token seen in the window has a positive logit
        divided by the repeat penalty and a negative one multiplied by it, then loses the
        frequency penalty once per time seen and the presence penalty once."""
        if not self.penalised or not self.recent:
            return
        ids, counts = np.unique(np.fromiter(self.recent, dtype=np.int64, count=len(self.recent)), return_counts=True)
        seen = row[ids]
        if self.repeat_penalty != 1.0:
            seen = np.where(seen <= 0, seen * self.repeat_penalty, seen / self.repeat_penalty)
        row[ids] = seen - (counts * self.frequency_penalty + self.presence_penalty)


class RowSampler:
    """Samples a step's rows in the native sampler, on up to ``threads`` threads.

    The threads are OpenMP's: the engine thread that calls ``llama_decode`` calls this
    too, so a CPU build reuses the pool ggml's decode has just left (the cores are idle
    while a step is sampled); the numpy path this replaced could not use a second core
    on the CPU build (measured: no gain), and spent 0.3 ms a row on top-p over 128k
    tokens where this takes about 0.1 ms."""

    def __init__(self, n_vocab: int, threads: int = 1) -> None:
        self._n_vocab = n_vocab
        self.threads = max(1, threads)
        self._sample = host_library().rocm_infer_sample_rows
        self.scratch = np.empty(self.threads * 3 * n_vocab, dtype=np.float32)  # shared with the decode runs
        self._scratch_address = self.scratch.ctypes.data
        self._grow(64)

    def _grow(self, n_rows: int) -> None:
        """Per-row settings in arrays kept between steps, with their addresses: a fresh
        array and its ``ctypes.data`` each step cost about as much as sampling one row."""
        self._ids = np.empty(n_rows, dtype=np.int64)
        self._settings = [np.empty(n_rows, dtype=dtype) for dtype in (np.float32, np.int32, np.float32, np.float32, np.float64)]
        self._tokens = np.empty(n_rows, dtype=np.int32)
        self._addresses = [array.ctypes.data for array in (self._ids, *self._settings, self._tokens)]

    def sample(self, rows: np.ndarray, samplers: Sequence[HostSampler], row_ids: Sequence[int] | None = None) -> np.ndarray:
        """One token per sampler: ``samplers[i]`` samples ``rows[row_ids[i]]`` (``rows[i]``
        without ``row_ids``).  Biases and penalties change those rows in place."""
        n = len(samplers)
        if rows.ndim != 2 or rows.dtype != np.float32 or not rows.flags.c_contiguous or rows.shape[1] != self._n_vocab:
            raise ValueError(f"rows must be a C-contiguous float32 matrix of width {self._n_vocab}")
        if row_ids is None:
            row_ids = range(n)
        if len(row_ids) != n or (n and not 0 <= min(row_ids) <= max(row_ids) < rows.shape[0]):
            raise ValueError(f"row ids {list(row_ids)} do not pick {n} of the {rows.shape[0]} rows")
        if n > len(self._tokens):
            self._grow(n)
        for row, sampler in zip(row_ids, samplers):
            if sampler.adjusts_logits:
                sampler.adjust(rows[row])
        temperature, top_k, top_p, min_p, uniform = self._settings
        self._ids[:n] = row_ids
        temperature[:n] = [s.temperature for s in samplers]
        top_k[:n] = [s.top_k for s in samplers]
        top_p[:n] = [s.top_p for s in samplers]
        min_p[:n] = [s.min_p for s in samplers]
        uniform[:n] = [0.0 if s.greedy else s.next_uniform() for s in samplers]
        self._sample(rows.ctypes.data, self._n_vocab, self._n_vocab, n, *self._addresses, self._scratch_address, self.threads)
        return self._tokens[:n].copy()
