"""The context's sequence ids and KV cells, and the prefix cache that lives in them.

One owner for both: a request is admitted when a sequence id and the cells it needs
now are free (those depend on what it can reuse), and a running one is given more cells
``growth`` at a time as it generates (``grow``).  With the prefix cache on:

- a request that ends well (stop or length) leaves its sequence in the cache as an
  entry (its token ids and cells) instead of freeing it; entries are evicted least
  recently used, and only when a waiting request needs their id or their cells;
- a waiting request starts from the longest common prefix with any entry or running
  request: ``llama_memory_seq_cp`` makes those cells its own too (the unified cache
  shares cells, nothing is recomputed) and only the rest of its prompt is prefilled;
  at least one prompt token is always decoded, so the step has logits for it;
- when a running request is still prefilling a prefix a waiting request shares (16
  requests arriving with one system prompt), the waiting one is *deferred* until that
  prefix is computed, then copies it: the prefix is computed once.

What holds for which model: the context keeps a full-size SWA cache (``swa_full``,
set in ``handles.LlamaContext``; ``llama_kv_cache_iswa`` then prunes no cell outside
the window), so a Gemma 3 prefix copied with ``seq_cp`` carries its sliding-window
layers' cells as well and reuse is exact; with one slot an entry's id is the only one, so it is evicted
before the next request and nothing is reused.  Recurrent and hybrid models (Mamba,
Jamba, Qwen 3.5's linear attention) keep one state per sequence, not per position: a
prefix of it cannot be cut out, so only an exact extension could reuse it; this
cache is meant for attention models and is not checked for those.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from ..types import CacheStats
from .cells import CellLedger
from .decode_run import MAX_RUN_STEPS
from .handles import LlamaContext
from .request import Request

# A running request's prompt prefix shared with a waiting one is worth waiting for (the
# waiting one is deferred) when at least this many of its tokens are still to compute.
WAIT_FOR_PREFIX = 16
# The fewest cells a request is given at a time for what it generates: a native run's
# longest twice over, so a run is rarely cut short for want of cells.
MIN_GROWTH = 2 * MAX_RUN_STEPS


class KvSlots:
    def __init__(self, ctx: LlamaContext, n_slots: int, prefix_cache: bool) -> None:
        self._ctx = ctx
        self._n_slots = n_slots
        self._prefix_cache = prefix_cache
        self._free_ids = list(range(n_slots - 1, -1, -1))
        self._ledger = CellLedger(ctx.n_ctx)
        # one slot's share of the context: while every request stays within it (prompt
        # included), none is ever preempted; with one slot, a request reserves all it may
        # generate at once
        self.growth = max(MIN_GROWTH, ctx.n_ctx // n_slots)
        self._entries: OrderedDict[int, np.ndarray] = OrderedDict()  # seq id -> its token ids, oldest first
        self._hits = self._reused = self._evictions = 0

    @property
    def free_ids(self) -> int:
        return len(self._free_ids)

    @property
    def free_cells(self) -> int:
        return self._ledger.free

    def cached_ids(self) -> set[int]:
        return set(self._entries)

    def stats(self) -> CacheStats:
        held = sum(self._ledger.charge(seq) for seq in self._entries)
        return CacheStats(len(self._entries), held, self._hits, self._reused, self._evictions)

    # ---- before planning -------------------------------------------------------------
    def match(self, waiting: Sequence[Request], running: Sequence[Request]) -> None:
        """Set each waiting request's best prefix source (``reuse_from``, ``reuse_len``,
        and ``n_computed`` to match), or mark it deferred behind a request that will
        compute a longer shared prefix first: a running one still prefilling it, or one
        ahead in the queue (admitted in the same step, the two would each compute it).
        Only the requests a step could admit (one per free or evictable id) are looked at."""
        ahead: list[Request] = []
        for request in itertools.islice(waiting, len(self._free_ids) + len(self._entries)):
            request.reuse_from, request.reuse_len, request.deferred = None, 0, False
            request.n_computed = 0
            if not self._prefix_cache:
                continue
            limit = len(request.prompt) - 1  # at least one token is decoded
            ids = request.prompt_ids()
            for seq, tokens in self._entries.items():
                self._consider(request, seq, _common_prefix(ids, tokens, limit))
            for source in running:
                computed = min(source.n_computed, len(source.prompt))
                full = _common_prefix(ids, source.prompt_ids(), limit)
                if full - max(computed, request.reuse_len) >= WAIT_FOR_PREFIX:
                    request.deferred = True
                    break
                self._consider(request, source.seq_id, min(full, computed))
            if not request.deferred:
                request.deferred = any(
                    _common_prefix(ids, earlier.prompt_ids(), limit) - request.reuse_len >= WAIT_FOR_PREFIX for earlier in ahead
                )
            request.n_computed = request.reuse_len
            ahead.append(request)

    @staticmethod
    def _consider(request: Request, seq: int, length: int) -> None:
        if length > request.reuse_len:
            request.reuse_from, request.reuse_len = seq, length

    def free_ids_for(self, waiting: Sequence[Request], n_running: int) -> None:
        """Evict least recently used entries until every waiting request a step could
        admit has an id, sparing the entries those requests reuse from (so their matches
        stay valid): one eviction per step would admit one request per step."""
        wanted = min(len(waiting), self._n_slots - n_running)
        spared = {request.reuse_from for request in itertools.islice(waiting, wanted)}
        for seq in [seq for seq in self._entries if seq not in spared]:
            if len(self._free_ids) >= wanted:
                break
            self._evict(seq)

    def evict_for(self, request: Request, short_of_ids: bool) -> bool:
        """Evict the least recently used entry that gives ``request`` what it lacks: any
        entry when it lacks an id, one whose eviction frees cells when it lacks only cells
        (an entry whose cells running requests share, a common system prompt, frees none:
        it stays for the requests to come, as in ``grow``).  The entry ``request`` reuses
        from goes last (a request that needs nearly the whole context may need its cells
        too).  False when no such entry is left."""
        useful = [seq for seq in self._entries if short_of_ids or self._ledger.freeable(seq)]
        victim = next((seq for seq in useful if seq != request.reuse_from), request.reuse_from if request.reuse_from in useful else None)
        if victim is None:
            return False
        self._evict(victim)
        return True

    # ---- admission and the end of a request --------------------------------------------
    def admit(self, request: Request, n_ctx: int) -> None:
        """Give ``request`` a sequence id holding its reused prefix, and its cells."""
        request.seq_id = self._free_ids.pop()
        cells = request.cells_needed(n_ctx, self.growth)
        request.reserved_end = request.reuse_len + cells
        self._ledger.open(request.seq_id, request.reuse_len, cells)
        if request.reuse_from is not None and request.reuse_len > 0:
            self._ctx.copy_prefix(request.reuse_from, request.seq_id, request.reuse_len)
            self._ledger.share(request.reuse_from, request.seq_id, request.reuse_len)
            if request.reuse_from in self._entries:
                self._entries.move_to_end(request.reuse_from)
            self._hits += 1
            self._reused += request.reuse_len

    def grow(self, request: Request, n_ctx: int) -> bool:
        """Reserve ``growth`` more cells for a running request (fewer near its
        ``limit_end``), evicting least recently used entries for them (only those that free
        cells: an entry whose cells running requests share, a common system prompt, stays
        for the requests to come); where running requests hold the rest, it takes the cells
        that are free.  False when it got fewer than it asked for."""
        wanted = min(request.limit_end(n_ctx), request.reserved_end + self.growth) - request.reserved_end
        while wanted > self._ledger.free:
            victim = next((seq for seq in self._entries if self._ledger.freeable(seq)), None)
            if victim is None:
                break
            self._evict(victim)
        cells = min(wanted, self._ledger.free)
        self._ledger.grow(request.seq_id, cells)
        request.reserved_end += cells
        return cells == wanted

    def finish(self, request: Request, keep: bool) -> None:
        """A running request ended: its sequence becomes a cache entry (``keep``) or is freed."""
        tokens = request.computed_ids()
        if keep and self._prefix_cache and len(tokens):
            self._ledger.settle(request.seq_id, len(tokens))
            self._entries[request.seq_id] = tokens
        else:
            self._drop(request.seq_id)

    def _evict(self, seq: int) -> None:
        del self._entries[seq]
        self._drop(seq)
        self._evictions += 1

    def _drop(self, seq: int) -> None:
        self._ctx.remove_sequence(seq)
        self._ledger.release(seq)
        self._free_ids.append(seq)


def _common_prefix(a: np.ndarray, b: np.ndarray, limit: int) -> int:
    """Length of the common prefix of two token arrays, at most ``limit``."""
    n = min(len(a), len(b), limit)
    if n <= 0:
        return 0
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n
