"""Who pays for which KV cells when sequences share a prefix (pure: no model needed).

In llama.cpp's unified cache ``llama_memory_seq_cp`` makes a prefix's cells belong to
two sequences at once; a cell is freed only when no sequence holds it.  So a request
that starts from another sequence's prefix adds only its own cells, and a sequence
that ends frees only the cells nobody else still holds.  The ledger keeps that count
exact, which is what lets the engine give every decode its cells before it runs:

- each live sequence *owns* a contiguous run of positions ``[base, end)`` and is
  *charged* for it (plus, while it runs, the cells reserved for what it generates next);
- ``share`` records that ``dst`` now holds ``src``'s first ``length`` cells; overlaps
  are kept for every pair, since sharing is transitive (a copy of a copy);
- ``release`` frees a sequence's charge except the part still held by others: the
  sequence with the largest overlap inherits those cells (its ``base`` moves down).
"""

from __future__ import annotations


class CellLedger:
    def __init__(self, n_cells: int) -> None:
        self.n_cells = n_cells
        self._charge: dict[int, int] = {}
        self._base: dict[int, int] = {}
        self._overlap: dict[int, dict[int, int]] = {}

    @property
    def free(self) -> int:
        return self.n_cells - sum(self._charge.values())

    def charge(self, seq: int) -> int:
        return self._charge.get(seq, 0)

    def open(self, seq: int, base: int, cells: int) -> None:
        """A new sequence that holds ``base`` shared cells and may add ``cells`` more."""
        self._charge[seq] = cells
        self._base[seq] = base
        self._overlap[seq] = {}

    def grow(self, seq: int, cells: int) -> None:
        """A running sequence reserves ``cells`` more for the tokens it generates next."""
        self._charge[seq] += cells

    def share(self, src: int, dst: int, length: int) -> None:
        """``dst`` holds ``src``'s cells at positions ``[0, length)``."""
        for other, common in self._overlap[src].items():
            if other != dst:
                self._set_overlap(dst, other, min(length, common))
        self._set_overlap(dst, src, length)

    def settle(self, seq: int, end: int) -> None:
        """A sequence stopped growing at position ``end``: it keeps paying only for the
        cells it really filled, ``[base, end)``, and its unused reservation is returned."""
        self._charge[seq] = max(0, end - self._base[seq])

    def freeable(self, seq: int) -> int:
        """The cells ``release(seq)`` would free."""
        return self._charge[seq] - self._held_of_own_run(seq)

    def _held_of_own_run(self, seq: int) -> int:
        """Cells of ``seq``'s own run ``[base, ...)`` that another sequence also holds: the
        one holding the most inherits them when ``seq`` goes."""
        return max(0, max(self._overlap[seq].values(), default=0) - self._base[seq])

    def release(self, seq: int) -> int:
        """Forget ``seq``; returns the cells this frees."""
        moved = self._held_of_own_run(seq)  # cells of [base, held) that seq owned and the heir still holds
        overlaps = self._overlap.pop(seq)
        charge = self._charge.pop(seq)
        base = self._base.pop(seq)
        for other in overlaps:
            self._overlap[other].pop(seq, None)
        if not overlaps:
            return charge
        held = max(overlaps.values())
        # among the sequences holding the most, one whose own run starts where the shared
        # part ends, so that its run stays contiguous once it inherits
        candidates = [other for other, common in overlaps.items() if common == held]
        heir = next((other for other in candidates if self._base[other] <= held), candidates[0])
        if moved:
            self._charge[heir] += moved
            self._base[heir] = min(self._base[heir], base)
        for other, common in overlaps.items():
            if other != heir:
                self._set_overlap(other, heir, max(self._overlap[other].get(heir, 0), min(common, held)))
        return charge - moved

    def _set_overlap(self, a: int, b: int, length: int) -> None:
        if length > 0:
            self._overlap[a][b] = length
            self._overlap[b][a] = length
