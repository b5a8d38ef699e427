"""The cell ledger on its own: shared prefixes are paid for once, and freed once."""

from rocm_infer.native.cells import CellLedger


def test_a_sequence_pays_for_its_reservation_then_for_what_it_filled():
    ledger = CellLedger(100)
    ledger.open(0, base=0, cells=40)
    assert ledger.free == 60
    ledger.settle(0, end=25)
    assert ledger.free == 75
    assert ledger.release(0) == 25 and ledger.free == 100


def test_a_growing_sequence_pays_for_each_reservation_then_for_what_it_filled():
    ledger = CellLedger(100)
    ledger.open(0, base=0, cells=20)
    ledger.grow(0, 16)
    ledger.grow(0, 16)
    assert ledger.free == 48 and ledger.charge(0) == 52
    ledger.settle(0, end=45)
    assert ledger.release(0) == 45 and ledger.free == 100


def test_a_shared_prefix_is_paid_once_and_outlives_its_first_owner():
    ledger = CellLedger(100)
    ledger.open(0, base=0, cells=30)
    ledger.settle(0, end=30)  # a cached entry of 30 cells
    ledger.open(1, base=20, cells=15)  # reuses 20, may add 15
    ledger.share(0, 1, 20)
    assert ledger.free == 100 - 30 - 15
    assert ledger.freeable(0) == 10
    assert ledger.release(0) == 10  # cells 20..29 were only its own; 0..19 stay with seq 1
    assert ledger.charge(1) == 35
    ledger.settle(1, end=28)  # seq 1 filled 20..27 and now owns 0..27
    assert ledger.charge(1) == 28
    assert ledger.release(1) == 28 and ledger.free == 100


def test_copies_of_copies_share_transitively():
    ledger = CellLedger(1000)
    ledger.open(0, base=0, cells=100)
    ledger.settle(0, end=100)
    ledger.open(1, base=60, cells=50)
    ledger.share(0, 1, 60)
    ledger.open(2, base=80, cells=50)
    ledger.share(1, 2, 80)  # 0..59 are seq 0's cells, 60..79 seq 1's
    for seq, end in ((1, 110), (2, 130)):
        ledger.settle(seq, end)
    assert ledger.free == 1000 - 100 - 50 - 50
    freed = []
    for seq in (0, 1, 2):
        expected = ledger.freeable(seq)
        freed.append(ledger.release(seq))
        assert freed[-1] == expected
    assert sum(freed) == 200 and ledger.free == 1000  # 100 + 50 + 50 cells, each freed once


def test_an_entry_whose_cells_all_live_on_in_another_sequence_frees_none():
    ledger = CellLedger(100)
    ledger.open(0, base=0, cells=20)
    ledger.settle(0, end=20)  # a cached system prompt
    ledger.open(1, base=20, cells=30)
    ledger.share(0, 1, 20)  # a running request holds all of it
    assert ledger.freeable(0) == 0 and ledger.freeable(1) == 30
    assert ledger.release(0) == 0 and ledger.free == 50 and ledger.charge(1) == 50  # seq 1 now pays for them


def test_releasing_in_any_order_frees_every_cell_once():
    for order in ((0, 1, 2), (2, 1, 0), (1, 0, 2), (1, 2, 0), (0, 2, 1), (2, 0, 1)):
        ledger = CellLedger(500)
        ledger.open(0, base=0, cells=50)
        ledger.settle(0, end=50)
        ledger.open(1, base=30, cells=20)
        ledger.share(0, 1, 30)
        ledger.open(2, base=40, cells=20)
        ledger.share(0, 2, 40)
        for seq in (1, 2):
            ledger.settle(seq, end=ledger.charge(seq) + (30 if seq == 1 else 40))
        assert sum(ledger.release(seq) for seq in order) == 90, order
        assert ledger.free == 500
