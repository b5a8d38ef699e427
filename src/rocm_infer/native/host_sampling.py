"""Sampling on the host for all rows of a step at once, without sorting the vocabulary.

llama.cpp's CPU samplers take one row at a time, and ``top_p`` without ``top_k``
sorts a large part of the vocabulary for every row (about 6 ms per row on a 262k
vocabulary), which is longer than a whole decode step on a GPU.  Here the rows of a
step go through numpy together, and each row's filters run on a few candidates:

1. Rows that top_k bounds: ``top_candidates`` finds the K largest logits of every row
   with no full sort.  A row is cut into strided blocks of ``BLOCK`` elements (element
   j belongs to block j mod n_blocks, so the blocks are one reshaped view and their
   maxima one vectorised pass); the K blocks with the largest maxima hold the K largest
   elements, because each of those lies in a block whose maximum is at least the K-th
   largest element and at most K blocks have such a maximum.  Only those K * BLOCK
   elements are then partitioned, and the chain runs on all those rows in each numpy
   call (``_draw_top_k_rows``).
2. Rows that it does not bound (top_p, min_p, temperature alone): the candidates are
   the tokens above a threshold (``_draw_unbounded``): one compare over the row, no
   partition.  top_p needs the softmax normaliser over the whole row, one ``exp`` pass:
   that pass is this path's floor.
3. Per row, llama.cpp's chain in llama.cpp's order: penalties, top_k, top_p (on the
   softmax at temperature 1, over what top_k left, or over the whole vocabulary), min_p
   (relative to the best logit), temperature, then one seeded uniform draw from the
   request's own generator.

The result has llama.cpp's distribution for the same settings (the tests compare
sampled frequencies with llama.cpp's chain), not its random stream.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

BLOCK = 16
# Candidates of a row that top_k does not bound: the tokens whose weight is at least
# this share of the best one's (within 10 of the best logit at temperature 1, 10 T at T).  On Gemma
# 3 270M that is tens to about 1,500 tokens of 262k, on the random-weight stand-in
# 400-3,700 of 128k holding 98% of the mass, and the 0.95-nucleus lies among them; a row
# where it does not widens (``_draw_unbounded``).
HEAD_FLOOR = math.exp(-10.0)


@dataclass
class HostSampler:
    """One request's sampling settings, its recent tokens (for the repeat penalty) and
    its own random generator: a seed gives the same tokens run after run."""

    temperature: float
    top_k: int = 0
    top_p: float = 0.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int = 0
    recent: collections.deque[int] = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        self.recent = collections.deque(maxlen=self.repeat_last_n if self.repeat_penalty != 1.0 else 0)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalised(self) -> bool:
        return self.repeat_penalty != 1.0 and self.repeat_last_n > 0

    def accept(self, token: int) -> None:
        """Record a token of the sequence (prompt or generated) for the penalty window."""
        self.recent.append(token)

    def penalise(self, row: np.ndarray) -> None:
        """llama.cpp's repeat penalty, in place: a token seen in the window has a positive
        logit divided by the penalty and a negative one multiplied by it."""
        if not self.penalised or not self.recent:
            return
        ids = np.fromiter(set(self.recent), dtype=np.int64)
        seen = row[ids]
        row[ids] = np.where(seen <= 0, seen * self.repeat_penalty, seen / self.repeat_penalty)


def sample_rows(rows: np.ndarray, samplers: Sequence[HostSampler], block: int = BLOCK, floor: float = HEAD_FLOOR) -> np.ndarray:
    """One token per row: ``rows[i]`` (logits, modified in place by penalties) is
    sampled with ``samplers[i]``.  Greedy rows are one argmax over all of them; rows
    that top_k bounds are drawn together from their candidates; the others row by row
    from the tokens whose weight is at least ``floor`` of their best's (``_draw_unbounded``)."""
    tokens = np.empty(len(samplers), dtype=np.int64)
    for i, sampler in enumerate(samplers):
        if sampler.penalised:
            sampler.penalise(rows[i])
    if all(s.greedy for s in samplers):
        return np.argmax(rows, axis=1)
    bounded = []
    for i, sampler in enumerate(samplers):
        if sampler.greedy:
            tokens[i] = np.argmax(rows[i])
        elif sampler.top_k > 0:
            bounded.append(i)
        else:
            tokens[i] = _draw_unbounded(rows[i], sampler, floor)
    if bounded:
        # fancy indexing copies: hand the whole block over when every row is bounded
        picked = rows if len(bounded) == len(samplers) else rows[bounded]
        ids, logits = top_candidates(picked, max(samplers[i].top_k for i in bounded), block)
        tokens[bounded] = _draw_top_k_rows(ids, logits, [samplers[i] for i in bounded])
    return tokens


class RowPool:
    """Samples a step's rows in groups on several threads.

    numpy releases the GIL in the passes that cost (argmax, partitions, ``exp``, block
    maxima), so groups of rows on their own threads run side by side.  Measured on 64
    rows of 128k logits with 2 threads on the 2-core VM: argmax 1.46 -> 0.87 ms, top-p
    36 -> 19 ms (top-k, whose cost is mostly per-call overhead, does not move); on a GPU
    host the decode leaves every core idle while the step is sampled.  A request's row
    stays in one group, so its draws come from its own generator as before."""

    MIN_ROWS = 4  # below this a group's work is about the cost of handing it over

    def __init__(self, threads: int) -> None:
        self._threads = max(1, threads)
        self._pool = concurrent.futures.ThreadPoolExecutor(self._threads - 1, thread_name_prefix="rocm-infer-sampling") if self._threads > 1 else None

    def sample(self, rows: np.ndarray, samplers: Sequence[HostSampler]) -> np.ndarray:
        """``sample_rows`` over the groups; the calling thread takes the first."""
        groups = min(self._threads, len(samplers) // self.MIN_ROWS)
        if self._pool is None or groups < 2:
            return sample_rows(rows, samplers)
        bounds = [len(samplers) * i // groups for i in range(groups + 1)]
        futures = [self._pool.submit(sample_rows, rows[a:b], samplers[a:b]) for a, b in zip(bounds[1:-1], bounds[2:])]
        try:
            first = sample_rows(rows[: bounds[1]], samplers[: bounds[1]])
        finally:  # no group may still read the logits when the next decode overwrites them
            concurrent.futures.wait(futures)
        return np.concatenate([first, *(future.result() for future in futures)])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def _draw_top_k_rows(ids: np.ndarray, logits: np.ndarray, samplers: Sequence[HostSampler]) -> np.ndarray:
    """The chain for rows whose top_k bounds what they keep, all rows in each numpy call:
    row by row, the chain cost a dozen calls on a few dozen candidates, so a step of 16
    rows paid more in call overhead than in arithmetic.  Same filters in llama.cpp's
    order, one draw from each request's own generator."""
    n_rows, width = logits.shape
    columns = np.arange(width)
    top_k = np.array([s.top_k for s in samplers])
    keep = top_k.copy()
    best = logits[:, :1].astype(np.float64)
    shifted = logits.astype(np.float64) - best
    shifted[columns >= top_k[:, None]] = -np.inf  # a row's candidates past its own top_k
    top_p = np.array([s.top_p for s in samplers])
    nucleus = (top_p > 0) & (top_p < 1)
    if nucleus.any():
        weights = np.exp(shifted)
        cumulative = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
        within = np.count_nonzero(cumulative < top_p[:, None], axis=1) + 1
        keep = np.where(nucleus, np.minimum(keep, within), keep)
    min_p = np.array([s.min_p for s in samplers])
    if (min_p > 0).any():
        floors = np.log(np.where(min_p > 0, min_p, 1.0))
        passing = np.count_nonzero((shifted >= floors[:, None]) & (columns < keep[:, None]), axis=1)
        keep = np.where(min_p > 0, np.maximum(1, passing), keep)
    temperature = np.array([s.temperature for s in samplers])
    weights = np.exp(shifted / temperature[:, None])
    weights[columns >= keep[:, None]] = 0.0
    running = np.cumsum(weights, axis=1)
    targets = np.array([s.rng.random() for s in samplers]) * running[:, -1]
    picked = np.minimum(np.count_nonzero(running <= targets[:, None], axis=1), keep - 1)
    return ids[np.arange(n_rows), picked]


def top_candidates(rows: np.ndarray, k: int, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest logits of each row and their token ids, best first."""
    n_rows, n_vocab = rows.shape
    k = min(k, n_vocab)
    n_blocks = n_vocab // block
    if k * block * 4 >= n_vocab:  # the blocks would gather most of the row anyway
        ids = np.argpartition(rows, n_vocab - k, axis=1)[:, n_vocab - k :] if k < n_vocab else np.broadcast_to(np.arange(n_vocab), rows.shape)
    else:
        if n_vocab % block == 0 and rows.flags.c_contiguous:  # a plain reshape reduces about twice as fast
            body = rows.reshape(n_rows, block, n_blocks)
        else:
            body = np.lib.stride_tricks.as_strided(
                rows, shape=(n_rows, block, n_blocks), strides=(rows.strides[0], n_blocks * rows.strides[1], rows.strides[1]), writeable=False
            )
        best_blocks = np.argpartition(body.max(axis=1), n_blocks - k, axis=1)[:, n_blocks - k :]
        gathered = (best_blocks[:, None, :] + n_blocks * np.arange(block)[None, :, None]).reshape(n_rows, -1)
        tail = np.arange(n_blocks * block, n_vocab)
        if tail.size:
            gathered = np.concatenate([gathered, np.broadcast_to(tail, (n_rows, tail.size))], axis=1)
        # one flat gather: cheaper than take_along_axis on this many indices
        values = np.ascontiguousarray(rows).ravel()[gathered + n_vocab * np.arange(n_rows)[:, None]]
        best = np.argpartition(values, values.shape[1] - k, axis=1)[:, values.shape[1] - k :]
        ids = np.take_along_axis(gathered, best, axis=1)
    values = np.take_along_axis(rows, ids, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(values, order, axis=1)


def _draw_unbounded(row: np.ndarray, sampler: HostSampler, floor: float) -> int:
    """A row that top_k does not bound: llama.cpp's top_p (softmax at temperature 1 over
    the whole row), then min_p, then a draw at the request's temperature.

    Candidates are found by a threshold, not a sort: the tokens whose weight
    exp(logit - best) is at least ``floor`` are exactly the row's best ones, so when their
    mass reaches the nucleus the nucleus lies among them (else the floor drops and they
    widen).  The normaliser needs the whole row: one ``exp`` over it, this path's floor
    (a 128k row of the random-weight stand-in on the 2-core VM: the ``exp`` 60 us, the
    threshold 50 us, sorting ~3,000 candidates 26 us, 260 us in all, against 390 us with
    the 1,024 best found by partition first).  min_p alone needs no ``exp`` over the row:
    its floor is a logit."""
    best = float(row.max())
    if 0 < sampler.top_p < 1:
        weights = _shifted_exp(row, best, 1.0)
        total = float(weights.sum())  # numpy sums pairwise: float32 loses ~1e-6 of it, float64 took 2x as long
        while True:
            ids = np.flatnonzero(weights >= floor)
            kept = weights[ids]
            if floor == 0.0 or float(kept.sum()) >= sampler.top_p * total:
                break
            floor = floor * floor if floor > 1e-30 else 0.0
        order = np.argsort(-kept)  # numpy's SIMD sort: a stable one took 7x as long
        ids, kept = ids[order], kept[order]
        keep = min(len(ids), int(np.searchsorted(np.cumsum(kept, dtype=np.float64) / total, sampler.top_p, side="left")) + 1)
        if sampler.min_p > 0:  # relative to the best logit: a weight of at least min_p
            keep = max(1, int(np.count_nonzero(kept[:keep] >= sampler.min_p)))
        ids = ids[:keep]
    elif sampler.min_p > 0:
        ids = np.flatnonzero(row >= best + math.log(sampler.min_p))
    else:
        return _draw_whole_row(row, best, sampler.temperature, sampler.rng.random(), floor)
    weights = np.exp((row[ids].astype(np.float64) - best) / sampler.temperature)
    return int(ids[_pick(weights, sampler.rng.random() * weights.sum())])


def _draw_whole_row(row: np.ndarray, best: float, temperature: float, u: float, floor: float) -> int:
    """A pure-temperature draw from the whole vocabulary: one pass for the weights and
    their sum, then the draw among the heaviest tokens (which hold most of the mass), and
    a running sum over the rest only when it lands past them."""
    weights = _shifted_exp(row, best, temperature)
    head = np.flatnonzero(weights >= floor)
    head_weights = weights[head].astype(np.float64)
    head_total = float(head_weights.sum())
    weights[head] = 0.0
    # the total from the same float64 sums the picks walk: a float32 total could land the
    # target past the running sum's end
    target = u * (head_total + float(weights.sum(dtype=np.float64)))
    if target < head_total:
        return int(head[_pick(head_weights, target)])
    return _pick(weights, target - head_total)


_scratch = threading.local()


def _shifted_exp(row: np.ndarray, best: float, temperature: float) -> np.ndarray:
    """exp((row - best) / temperature) in float32, in a buffer this thread reuses (a fresh
    vocabulary-sized array per row is fresh pages to fault in on every row).  Valid until
    this thread's next call."""
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.shape != row.shape:
        buffer = _scratch.buffer = np.empty(row.shape, dtype=np.float32)
    np.subtract(row, np.float32(best), out=buffer)
    if temperature != 1.0:
        buffer /= np.float32(temperature)
    return np.exp(buffer, out=buffer)


def _pick(weights: np.ndarray, target: float) -> int:
    """The index where the running sum of ``weights`` first passes ``target`` (past the
    end by rounding: the last index with any weight)."""
    index = int(np.searchsorted(np.cumsum(weights, dtype=np.float64), target, side="right"))
    return index if index < len(weights) else int(np.flatnonzero(weights)[-1])
