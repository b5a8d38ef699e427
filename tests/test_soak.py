"""The short soak (benchmarks/soak.py) on both backends: 300 requests of every kind, sync
and async, a fifth cancelled mid-stream and a tenth timed out.  Every request ends as its
fate says (a normal one in a result, a cancelled one cancelled or done first, a timed-out
one in ``RequestTimeoutError`` or done first), nothing crashes or hangs, and once the
backend is idle no thread, file descriptor, child process or KV cell is left over.
Resident memory growth is printed, not asserted: on a shared machine it is noise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from repo_scripts import load_script

import rocm_infer as ri


soak = load_script("benchmarks/soak.py")

EXPECTED = {  # what each fate may end in
    "normal": {"ok"},
    "cancel": {"cancelled", "ok"},  # "ok": it ended before the cancel reached it
    "timeout": {"error:RequestTimeoutError", "ok"},
}


@pytest.fixture(scope="module", params=["llama_cpp", "llama_server"])
def loaded(request, gemma_path) -> Iterator[ri.TextModel]:
    with ri.load_model(gemma_path, backend=request.param, parallel_slots=8, context_len=2048) as model:
        yield model


def test_short_soak_ends_every_request_and_leaks_nothing(loaded):
    report = soak.soak(loaded, requests=300, concurrency=8, cancel_share=0.2, timeout_share=0.1, max_tokens=4,
                       hang_s=600.0, seed=1)
    print(report.as_dict())  # RSS growth: reported, not asserted
    assert report.hangs == 0 and report.crashes == 0
    assert report.submitted == report.done == 300 and report.measured == 300 - 16  # the warm-up: twice the concurrency
    unexpected = {key: n for key, n in report.outcomes.items() if key.split("/", 1)[1] not in EXPECTED[key.split("/", 1)[0]]}
    assert unexpected == {}
    assert sum(n for key, n in report.outcomes.items() if key == "cancel/cancelled") > 0  # the mix really cancels
    # and really times out: of ~30 requests asked for 8x max_tokens within 5 ms, some run past it
    assert report.outcomes.get("timeout/error:RequestTimeoutError", 0) > 0
    assert report.leaks == {"python_threads": 0, "os_threads": 0, "fds": 0, "children": 0, "kv_cells_live": 0, "busy_slots": 0}
