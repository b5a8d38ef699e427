"""Faults of the llama-server child that the other tests do not cover: a server that stops
answering in the middle of a stream, and one killed in the middle of a stream, each
checked for a typed error, no child process left behind, and a clean re-load.  (Killed
mid-stream with the reload, stopped before a request, a taken port, a missing or broken
binary, an exit at start-up and a killed parent are in ``test_server.py`` and
``test_server_edges.py``; out of memory at load on both backends in ``test_bad_inputs.py``.)"""

from __future__ import annotations

import os
import signal

import pytest
from processes import live_children

import rocm_infer as ri

PROMPT = "Once upon a time"
NEVER_S = 120.0  # only a broken build waits this long


def test_a_server_that_hangs_mid_stream_ends_the_request_with_a_timeout(gemma_path):
    """SIGSTOP after the first token: the server neither answers nor dies.  The request's
    timeout ends it, ``close()`` is bounded (SIGTERM cannot reach a stopped process,
    SIGKILL can), and no child is left."""
    before = live_children()
    model = ri.load_model(gemma_path, backend="llama_server", parallel_slots=1, context_len=512)
    pid = model.server_pid
    try:
        stream = model.generate(PROMPT, max_tokens=400, ignore_eos=True, timeout=3.0)
        next(stream)
        os.kill(pid, signal.SIGSTOP)
        with pytest.raises(ri.RequestTimeoutError, match="timeout"):
            list(stream)
        with pytest.raises(ri.RequestTimeoutError, match="timeout"):  # classify waits no longer
            model.classify([PROMPT], timeout=2.0)
        assert isinstance(model.err(), ri.RequestTimeoutError)
    finally:
        model.close()
    assert pid not in live_children() and live_children() <= before
    with ri.load_model(gemma_path, backend="llama_server", parallel_slots=1, context_len=256) as again:
        assert len(list(again.generate(PROMPT, max_tokens=2, ignore_eos=True, timeout=NEVER_S))) == 2


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV], ids=["SIGKILL", "SIGTERM", "SIGSEGV"])
def test_a_server_that_dies_mid_stream_is_a_crash_naming_its_exit(sig, gemma_path):
    before = live_children()
    model = ri.load_model(gemma_path, backend="llama_server", parallel_slots=1, context_len=512)
    try:
        stream = model.generate(PROMPT, max_tokens=400, ignore_eos=True, timeout=NEVER_S)
        next(stream)
        os.kill(model.server_pid, sig)
        with pytest.raises(ri.ServerCrashedError, match="exited with code|connection"):
            list(stream)
        # SIGTERM is llama-server's own clean shutdown (code 0); the others are its signal's code
        code = "0" if sig == signal.SIGTERM else f"-{int(sig)}"
        with pytest.raises(ri.ServerCrashedError, match=f"exited with code {code}"):
            list(model.generate(PROMPT, max_tokens=2, timeout=NEVER_S))
    finally:
        model.close()
    assert live_children() <= before
    with ri.load_model(gemma_path, backend="llama_server", parallel_slots=1, context_len=256) as again:
        assert len(list(again.generate(PROMPT, max_tokens=2, ignore_eos=True, timeout=NEVER_S))) == 2


def test_no_kv_slot_for_a_step_fails_its_newest_request_only(gemma_path):
    """``llama_decode`` returning 1 (no KV cells for the batch): the cells here are taken
    behind the engine's back (a sequence it is not using), so its ledger admits a request
    that does not fit.  Only that request fails; the one already running goes on."""
    from rocm_infer.native.batch import Batch

    with ri.load_model(gemma_path, backend="llama_cpp", context_len=512, parallel_slots=4, prefix_cache=False) as model:
        def occupy(ctx) -> int:
            batch = Batch(512)
            batch.clear()
            batch.add([235] * 440, 0, 3, False)  # sequence 3: the last the engine hands out
            ctx.launch(batch.finish())
            ctx.wait()
            return ctx.sequence_max_pos(3)

        assert model._engine.call(occupy) == 439
        running = model.generate(PROMPT, max_tokens=40, ignore_eos=True, timeout=NEVER_S)
        next(running)
        newest = model.generate("word " * 150, max_tokens=4, ignore_eos=True, timeout=NEVER_S)
        with pytest.raises(ri.OutOfMemoryError, match="no free KV"):
            list(newest)
        assert len(list(running)) == 39 and running.finish_reason == "length"
