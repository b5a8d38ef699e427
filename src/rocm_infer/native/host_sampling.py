"""Sampling on the host for all rows of a step at once, without sorting the vocabulary.

llama.cpp's CPU samplers take one row at a time, and ``top_p`` without ``top_k``
sorts a large part of the vocabulary for every row (about 6 ms per row on a 262k
vocabulary), which is longer than a whole decode step on a GPU.  Here the rows of a
step go through numpy together, and each row's filters run on a few candidates:

1. ``top_candidates`` finds the K largest logits of every row with no full sort.  A
   row is cut into strided blocks of ``BLOCK`` elements (element j belongs to block
   j mod n_blocks, so the blocks are one reshaped view and their maxima one
   vectorised pass); the K blocks with the largest maxima hold the K largest
   elements, because each of those lies in a block whose maximum is at least the
   K-th largest element and at most K blocks have such a maximum.  Only those
   K * BLOCK elements are then partitioned.
2. Per row, on its candidates, llama.cpp's chain in llama.cpp's order: penalties,
   top_k, top_p (on the softmax at temperature 1, over what top_k left, or over the
   whole vocabulary), min_p (relative to the best logit), temperature, then one
   seeded uniform draw from the request's own generator.
3. Only what needs the whole row pays for a pass over it: the softmax normaliser for
   top_p without top_k (one ``exp``), and the tail of a pure-temperature draw.  A
   nucleus wider than the candidates widens them for that row alone.

The result has llama.cpp's distribution for the same settings (the tests compare
sampled frequencies with llama.cpp's chain), not its random stream.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Candidates per row when top_k does not bound them: wider than the 0.95-nucleus of
# a trained model on almost every step, small enough to sort in microseconds.
CANDIDATES = 1024
BLOCK = 16


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


def sample_rows(rows: np.ndarray, samplers: Sequence[HostSampler], candidates: int = CANDIDATES, block: int = BLOCK) -> np.ndarray:
    """One token per row: ``rows[i]`` (logits, modified in place by penalties) is
    sampled with ``samplers[i]``.  Greedy rows are one argmax over all of them."""
    tokens = np.empty(len(samplers), dtype=np.int64)
    for i, sampler in enumerate(samplers):
        if sampler.penalised:
            sampler.penalise(rows[i])
    drawn = [i for i, s in enumerate(samplers) if not s.greedy]
    if not drawn:
        return np.argmax(rows, axis=1)
    for i, sampler in enumerate(samplers):
        if sampler.greedy:
            tokens[i] = np.argmax(rows[i])
    width = max(s.top_k if s.top_k > 0 else candidates for s in (samplers[i] for i in drawn))
    # fancy indexing copies: hand the whole block over when every row draws
    picked = rows if len(drawn) == len(samplers) else rows[drawn]
    ids, logits = top_candidates(picked, width, block)
    bounded = [j for j, i in enumerate(drawn) if 0 < samplers[i].top_k <= width]
    if bounded:
        chosen = _draw_top_k_rows(ids[bounded], logits[bounded], [samplers[drawn[j]] for j in bounded])
        tokens[[drawn[j] for j in bounded]] = chosen
    for j, i in enumerate(drawn):
        if not 0 < samplers[i].top_k <= width:
            tokens[i] = _draw(rows[i], ids[j], logits[j], samplers[i], block)
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
    """``_draw`` for rows whose top_k bounds what they keep, all rows in each numpy call:
    per row, its chain costs a dozen calls on a few dozen candidates, so a step of 16
    rows paid more in call overhead than in arithmetic.  Same filters, same order, one
    draw from each request's own generator: the same tokens as ``_draw``."""
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


def _draw(row: np.ndarray, ids: np.ndarray, logits: np.ndarray, sampler: HostSampler, block: int) -> int:
    """Apply the filters to one row's candidates (sorted, best first) and draw."""
    best = float(logits[0])
    if sampler.top_k > 0:
        ids, logits = ids[: sampler.top_k], logits[: sampler.top_k]
    bounded = sampler.top_k > 0 or len(ids) == row.shape[0]  # the candidates are the whole kept set
    keep = len(logits)
    if 0 < sampler.top_p < 1:
        weights = np.exp(logits.astype(np.float64) - best)
        total = weights.sum() if bounded else _normaliser(row, best, 1.0)
        cumulative = np.cumsum(weights) / total
        if cumulative[-1] < sampler.top_p and not bounded and len(ids) < row.shape[0]:  # a nucleus wider than the candidates
            return _redraw_wider(row, sampler, len(ids), block)
        keep = min(keep, int(np.searchsorted(cumulative, sampler.top_p, side="left")) + 1)
        bounded = True
    if sampler.min_p > 0:
        floor = best + math.log(sampler.min_p)
        passing = int(np.count_nonzero(logits[:keep] >= floor))
        if passing == keep and not bounded and len(ids) < row.shape[0]:
            return _redraw_wider(row, sampler, len(ids), block)
        keep = max(1, passing)
        bounded = True
    u = sampler.rng.random()
    weights = np.exp((logits[:keep].astype(np.float64) - best) / sampler.temperature)
    if bounded or keep == row.shape[0]:
        return int(ids[_pick(weights, u * weights.sum())])
    return _draw_with_tail(row, ids[:keep], weights, best, sampler.temperature, u)


def _normaliser(row: np.ndarray, best: float, temperature: float) -> float:
    """Sum over the whole row of exp((logit - best) / temperature).  Row by row, not
    all rows at once: one row's scratch stays in the cache (measured: 16 rows of 128k
    one by one take about half the time of one pass over the 8 MB block)."""
    scaled = np.subtract(row, np.float32(best))
    if temperature != 1.0:
        scaled /= np.float32(temperature)
    return float(np.exp(scaled, out=scaled).sum(dtype=np.float64))


def _draw_with_tail(row: np.ndarray, ids: np.ndarray, weights: np.ndarray, best: float, temperature: float, u: float) -> int:
    """A pure-temperature draw from the whole vocabulary: one pass for the normaliser,
    and a second (a cumulative sum over the row) only when the draw lands past the
    candidates, which hold most of the mass."""
    total = _normaliser(row, best, temperature)
    target = u * total
    head = weights.sum()
    if target < head:
        return int(ids[_pick(weights, target)])
    tail = np.exp((row.astype(np.float64) - best) / temperature)
    tail[ids] = 0.0
    return _pick(tail, target - head)


def _redraw_wider(row: np.ndarray, sampler: HostSampler, width: int, block: int) -> int:
    ids, logits = top_candidates(row[None, :], min(width * 8, row.shape[0]), block)
    return _draw(row, ids[0], logits[0], sampler, block)


def _pick(weights: np.ndarray, target: float) -> int:
    """The index where the running sum of ``weights`` first passes ``target``."""
    index = int(np.searchsorted(np.cumsum(weights), target, side="right"))
    return min(index, len(weights) - 1)
