"""Property test (hypothesis) of ``CellLedger`` against the cells themselves: random programs
of opening sequences (some starting from another's prefix, as ``llama_memory_seq_cp``
shares cells), filling, growing, settling and releasing them, run beside a model that
gives every position a physical cell id.  After each operation the ledger's used count
is the distinct cells filled plus what running sequences reserved and have not filled,
and for every sequence ``freeable`` and ``release`` (on a copy) both equal the cells that
releasing it really frees, through copies of copies and every inheritance."""

from __future__ import annotations

import copy
import itertools

from hypothesis import given, settings, strategies as st

from rocm_infer.native.cells import CellLedger

N_CELLS = 10_000
OPS = st.tuples(st.integers(0, 3), st.integers(0, 50), st.integers(0, 50), st.integers(0, 50))


class Cells:
    """Which physical cell holds each position of each sequence, and what each running
    sequence has reserved up to."""

    def __init__(self) -> None:
        self.held: dict[int, list[int]] = {}
        self.reserved: dict[int, int] = {}
        self.running: set[int] = set()
        self._ids = itertools.count()

    def fill(self, seq: int, end: int) -> None:
        self.held[seq] += [next(self._ids) for _ in range(end - len(self.held[seq]))]

    def frees(self, seq: int) -> int:
        others = {cell for other, cells in self.held.items() if other != seq for cell in cells}
        unfilled = self.reserved[seq] - len(self.held[seq]) if seq in self.running else 0
        return len(set(self.held[seq]) - others) + unfilled

    def used(self) -> int:
        distinct = {cell for cells in self.held.values() for cell in cells}
        return len(distinct) + sum(self.reserved[s] - len(self.held[s]) for s in self.running)


@settings(max_examples=500, deadline=None)
@given(st.lists(OPS, min_size=1, max_size=40))
def test_the_ledger_counts_the_cells_that_are_really_shared_and_freed(program):
    ledger, cells, new_ids = CellLedger(N_CELLS), Cells(), itertools.count()
    for op, a, b, c in program:
        live = sorted(cells.held)
        if op in (0, 1) or not live:  # open, from a live sequence's prefix with op 1
            seq = next(new_ids)
            source = live[a % len(live)] if live and op == 1 else None
            shared = min(b, len(cells.held[source])) if source is not None else 0
            reserved = shared + c + 1
            ledger.open(seq, shared, reserved - shared)
            cells.held[seq] = list(cells.held[source][:shared]) if source is not None else []
            if shared:
                ledger.share(source, seq, shared)
            cells.reserved[seq] = reserved
            cells.running.add(seq)
            cells.fill(seq, min(reserved, shared + b % (c + 2)))
        elif op == 2 and cells.running:  # a running sequence grows, fills, maybe settles
            seq = sorted(cells.running)[a % len(cells.running)]
            if b % 3 == 0:
                ledger.grow(seq, c)
                cells.reserved[seq] += c
            cells.fill(seq, min(cells.reserved[seq], len(cells.held[seq]) + c))
            if b % 2:
                ledger.settle(seq, len(cells.held[seq]))
                cells.running.discard(seq)
                cells.reserved[seq] = len(cells.held[seq])
        elif op == 3:
            seq = live[a % len(live)]
            ledger.release(seq)
            del cells.held[seq], cells.reserved[seq]
            cells.running.discard(seq)
        assert N_CELLS - ledger.free == cells.used()
        for seq in cells.held:
            assert ledger.freeable(seq) == copy.deepcopy(ledger).release(seq) == cells.frees(seq), seq
