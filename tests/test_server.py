"""The llama_server backend: a real llama-server child on 127.0.0.1, the real Gemma model."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest
from near_tie import assert_same_until_near_tie

import rocm_infer as ri
from rocm_infer.server.process import ServerProcess, find_server_binary

PROMPTS = [f"Fact {i}: the most famous city in country number {i} is" for i in range(8)]


@pytest.fixture(scope="module")
def server(gemma_path):
    # prefix cache off, as the in-process ``model``: both compute each prompt whole
    with ri.load_model(gemma_path, backend="llama_server", parallel_slots=16, prefix_cache=False) as loaded:
        yield loaded


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_greedy_ids_and_text_equal_the_in_process_backend(server, model_fa):
    """Same build, same kernels, one request at a time: identical ids and text."""
    for prompt in PROMPTS:
        remote = list(server.generate(prompt, max_tokens=32))
        local = list(model_fa.generate(prompt, max_tokens=32))
        assert [t.id for t in remote] == [t.id for t in local], prompt
        assert "".join(t.text for t in remote) == "".join(t.text for t in local)


def test_chat_prompt_is_the_same_as_in_process(server, model_fa):
    messages = [ri.Message("system", "Be brief."), ri.Message("user", "Hi")]
    assert server._render_chat(messages) == model_fa._render_chat(messages)
    assert list(server.chat(messages, max_tokens=8))


def test_sixteen_concurrent_streams_complete_with_their_own_metrics(server):
    results = {}

    def run(i):
        stream = server.generate(f"Story {i}: once upon a time", max_tokens=16, ignore_eos=True)
        results[i] = (len(list(stream)), stream.metrics, stream.finish_reason)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for count, metrics, reason in results.values():
        assert (count, metrics.generated_tokens, reason) == (16, 16, "length")
        assert metrics.time_to_first_token_s > 0


def _readers() -> int:
    return sum(thread.name == "rocm-infer-sse" for thread in threading.enumerate())


def test_streams_past_the_slots_wait_for_a_reader_and_the_readers_stay_as_many(gemma_path):
    """One reader thread per slot, started with the model and reused (a thread per request
    made RSS climb): more requests than slots wait their turn, a cancelled one that is still
    waiting ends cancelled, and the readers end with the model."""
    before = _readers()
    with ri.load_model(gemma_path, backend="llama_server", parallel_slots=2, context_len=1024) as small:
        assert _readers() - before == 2
        seen: list[int] = []
        streams = [small.generate(f"Story {i}: once upon a time", max_tokens=24, ignore_eos=True) for i in range(5)]
        waiting = small.generate("This one is cancelled while it waits", max_tokens=24, ignore_eos=True)
        waiting.cancel()
        counts = []
        for stream in streams:
            counts.append(len(list(stream)))
            seen.append(_readers() - before)
        list(waiting)
        assert waiting.finish_reason == "cancelled"
        assert counts == [24] * 5 and set(seen) == {2}
        assert len(small.classify([f"Label {i}:" for i in range(5)])) == 5
        assert _readers() - before == 2
    assert _readers() == before


def test_a_model_dropped_unclosed_lets_its_readers_go(gemma_path):
    before = set(threading.enumerate())
    dropped = ri.load_model(gemma_path, backend="llama_server", parallel_slots=2, context_len=1024)
    assert len(list(dropped.generate("Hi", max_tokens=2, ignore_eos=True))) == 2
    readers = [t for t in threading.enumerate() if t.name == "rocm-infer-sse" and t not in before]
    assert len(readers) == 2
    del dropped
    gc.collect()
    for thread in readers:
        thread.join(60.0)  # a bound for a broken build only: a working one ends them at once
    assert not any(thread.is_alive() for thread in readers)


def test_cancel_ends_one_stream_and_the_server_keeps_serving(server):
    keep = server.generate(PROMPTS[0], max_tokens=24, ignore_eos=True)
    drop = server.generate(PROMPTS[1], max_tokens=2000)
    next(drop)
    drop.cancel()
    assert drop.finish_reason == "cancelled"
    assert len(list(keep)) == 24
    assert len(list(server.generate(PROMPTS[2], max_tokens=4, ignore_eos=True))) == 4


def test_classify_and_token_id_prompts(server, model_fa):
    for prompt, result in zip(PROMPTS[:4], server.classify(PROMPTS[:4])):
        assert_same_until_near_tie(model_fa, prompt, [model_fa.classify([prompt])[0].token], [result.token])
    ids = model_fa.tokenize(PROMPTS[0])
    by_ids = [t.id for t in server.generate(ids, max_tokens=4)]
    assert by_ids == [t.id for t in server.generate(PROMPTS[0], max_tokens=4)]
    with pytest.raises(ri.InvalidConfigError):
        server.classify(PROMPTS[:1], return_logits=True)


def test_prompt_past_the_context_is_a_typed_error(server):
    stream = server.generate("word " * 5000, max_tokens=4)
    with pytest.raises(ri.PromptTooLongError):
        list(stream)
    assert len(list(server.generate(PROMPTS[0], max_tokens=2, ignore_eos=True))) == 2


def test_requests_without_the_api_key_are_refused_and_it_listens_on_loopback_only(server):
    response = httpx.post(server.base_url + "/completion", json={"prompt": "x", "n_predict": 1})
    assert response.status_code == 401
    port = int(server.base_url.rsplit(":", 1)[1])
    listening = [line.split() for line in open("/proc/net/tcp").read().splitlines()[1:]]
    local = [entry[1] for entry in listening if entry[3] == "0A" and int(entry[1].split(":")[1], 16) == port]
    assert local == [f"0100007F:{port:04X}"]


def test_sigkill_mid_stream_is_a_typed_error_and_reload_works(gemma_path):
    """The crash itself ends the stream: the timeout is only there so that a regression
    fails (as a RequestTimeoutError) instead of hanging the run."""
    model = ri.load_model(gemma_path, backend="llama_server", parallel_slots=2, context_len=512)
    try:
        stream = model.generate(PROMPTS[0], max_tokens=5000, ignore_eos=True, timeout=120)
        next(stream)
        os.kill(model.server_pid, signal.SIGKILL)
        with pytest.raises(ri.ServerCrashedError):
            for _ in stream:
                pass
        assert isinstance(model.err(), ri.ServerCrashedError)
        with pytest.raises(ri.ServerCrashedError):
            model.generate(PROMPTS[0], max_tokens=2)
    finally:
        model.close()
    with ri.load_model(gemma_path, backend="llama_server", parallel_slots=2, context_len=512) as again:
        assert len(list(again.generate(PROMPTS[0], max_tokens=2, ignore_eos=True))) == 2


def test_a_hung_server_ends_the_request_with_a_timeout(gemma_path):
    with ri.load_model(gemma_path, backend="llama_server", parallel_slots=2, context_len=512) as model:
        os.kill(model.server_pid, signal.SIGSTOP)
        try:
            with pytest.raises(ri.RequestTimeoutError):
                list(model.generate(PROMPTS[0], max_tokens=8, timeout=1.0))
        finally:
            os.kill(model.server_pid, signal.SIGCONT)


def test_a_taken_port_is_retried(gemma_path):
    binary, _ = find_server_binary()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        with ServerProcess(binary, ["-m", str(gemma_path), "-c", "256", "-np", "1", "--no-webui"], port=taken) as proc:
            assert proc.port != taken
            assert httpx.get(proc.base_url + "/health", headers={"Authorization": f"Bearer {proc.api_key}"}).status_code == 200


def test_the_server_dies_with_its_parent_even_after_sigkill(gemma_path):
    script = textwrap.dedent(f"""
        import rocm_infer as ri, sys, time
        model = ri.load_model({str(gemma_path)!r}, backend="llama_server", parallel_slots=1, context_len=256)
        print(model.server_pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    server_pid = int(parent.stdout.readline())
    assert pid_alive(server_pid)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while pid_alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(server_pid)


def test_a_server_loaded_from_a_short_lived_thread_outlives_that_thread(gemma_path):
    loaded = []
    worker = threading.Thread(target=lambda: loaded.append(ri.load_model(gemma_path, backend="llama_server", parallel_slots=1, context_len=256)))
    worker.start()
    worker.join()
    with loaded[0] as model:
        time.sleep(0.5)
        assert pid_alive(model.server_pid)
        assert len(list(model.generate(PROMPTS[0], max_tokens=2, ignore_eos=True))) == 2


def test_a_missing_or_non_executable_binary_makes_the_backend_unavailable(tmp_path, monkeypatch):
    assert ri.get_backend("llama_server").available()
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("ROCM_LLAMA_SERVER_PATH", str(fake))
    backend = ri.get_backend("llama_server")
    assert "not executable" in backend.unavailable_reason()
    with pytest.raises(ri.BackendUnavailableError):
        ri.load_model(backend="llama_server")
    monkeypatch.setenv("ROCM_LLAMA_SERVER_PATH", str(tmp_path / "absent"))
    assert "does not exist" in backend.unavailable_reason()


def test_cli_lists_llama_server_honestly():
    proc = subprocess.run(["rocm-infer", "backends", "--json"], capture_output=True, text=True, check=True)
    assert '"llama_server"' in proc.stdout and '"available": true' in proc.stdout
