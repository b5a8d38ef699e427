"""Edges of the llama_server backend (and the shared layer both backends go through):
bad text, a stream reader that meets the unexpected, what the server streams at the
end of generation and inside a UTF-8 character, and the child process's key,
readiness, start and stderr.  Each case ends in a typed ``RocmInferError`` or the
same result as the in-process backend; none waits for a timeout to notice."""

from __future__ import annotations

import asyncio
import http.server
import queue
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from near_tie import assert_same_until_near_tie

import rocm_infer as ri
from rocm_infer.server.chunks import UNKNOWN_ID
from rocm_infer.server.client import LiveWorkers, StreamWorker
from rocm_infer.server.process import ServerProcess, find_server_binary
from rocm_infer.stream import Finished
from rocm_infer.types import GenerateConfig

PROMPT = "Fact 1: the most famous city in country number 1 is"
SURROGATE = "Hi \ud800 there"
# A long wait that only a broken build reaches: a request that never ends would
# otherwise hang the test run; a working one fails or finishes at once.
NEVER_S = 60.0


@pytest.fixture(scope="module")
def server(gemma_path) -> Iterator[ri.TextModel]:
    with ri.load_model(gemma_path, backend="llama_server", parallel_slots=4, context_len=2048, prefix_cache=False) as loaded:
        yield loaded


@pytest.fixture(params=["llama_cpp", "llama_server"])
def any_backend(request) -> ri.TextModel:
    return request.getfixturevalue("model" if request.param == "llama_cpp" else "server")


# ---- lone surrogates: refused before any work, on both backends --------------------------


def test_a_prompt_with_a_lone_surrogate_is_a_typed_error(any_backend):
    for call in (
        lambda: list(any_backend.generate(SURROGATE, max_tokens=2, timeout=NEVER_S)),
        lambda: any_backend.classify([PROMPT, SURROGATE]),
    ):
        with pytest.raises(ri.InvalidConfigError, match="surrogate") as info:
            call()
        assert isinstance(info.value.__cause__, UnicodeEncodeError)
    [bad] = any_backend.batch_generate([SURROGATE], max_tokens=2)
    assert bad.finish_reason == "error" and isinstance(bad.err, ri.InvalidConfigError)
    assert len(list(any_backend.generate(PROMPT, max_tokens=2, ignore_eos=True))) == 2


def test_a_chat_message_with_a_lone_surrogate_is_a_typed_error(any_backend):
    with pytest.raises(ri.InvalidConfigError, match="surrogate"):
        ri.Message("user", "bad \udc80")
    for messages in ([{"role": "user", "content": SURROGATE}], [ri.Message("system", "ok"), {"role": "user", "content": "\udfff"}]):
        with pytest.raises(ri.InvalidConfigError, match="surrogate"):
            list(any_backend.chat(messages, max_tokens=2, timeout=NEVER_S))
    assert len(list(any_backend.chat([{"role": "user", "content": "Hi"}], max_tokens=2, ignore_eos=True))) == 2


def test_an_async_prompt_with_a_lone_surrogate_is_a_typed_error(any_backend):
    async def main():
        with pytest.raises(ri.InvalidConfigError, match="surrogate"):
            [tok async for tok in any_backend.agenerate(SURROGATE, max_tokens=2, timeout=NEVER_S)]

    asyncio.run(main())


def test_a_stop_string_with_a_lone_surrogate_is_a_typed_error(server):
    """Whether the options refuse it or the request body cannot be encoded, it is typed."""
    with pytest.raises(ri.InvalidConfigError):
        list(server.generate(PROMPT, max_tokens=2, stop=("\ud800",), timeout=NEVER_S))
    assert len(list(server.generate(PROMPT, max_tokens=2, ignore_eos=True))) == 2


# ---- the stream reader: any failure ends the stream with a typed error -------------------


def test_a_client_closed_under_a_request_ends_its_stream_with_a_typed_error(server):
    closed = httpx.Client(base_url=server.base_url)
    closed.close()
    original, server._client = server._client, closed
    try:
        stream = server.generate(PROMPT, max_tokens=4, timeout=NEVER_S)
        with pytest.raises(ri.RocmInferError) as info:
            list(stream)
    finally:
        server._client = original
    assert not isinstance(info.value, ri.RequestTimeoutError)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert stream.finish_reason == "error"
    assert len(list(server.generate(PROMPT, max_tokens=2, ignore_eos=True))) == 2


def test_a_control_client_closed_under_a_call_ends_it_with_a_closed_model_error(server):
    """``close`` on another thread closes the control client under a call in flight (a
    chat prompt rendered by the server's ``/apply-template``): the call ends with
    ``ModelClosedError``, not httpx's ``RuntimeError``."""
    messages = [{"role": "user", "content": "hi"}]
    closed = httpx.Client()
    closed.close()
    original, server._control = server._control, closed
    try:
        with pytest.raises(ri.ModelClosedError, match="closed"):
            server.chat(messages, max_tokens=2)
    finally:
        server._control = original
    assert len(list(server.chat(messages, max_tokens=2, ignore_eos=True))) == 2


class _Replies(http.server.BaseHTTPRequestHandler):
    """A stand-in for a broken server: answers every POST with ``reply`` (raw bytes after
    the status line), then closes the connection."""

    reply = b""

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.wfile.write(b"HTTP/1.1 200 OK\r\n" + self.reply)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def _sse(body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return b"Content-Type: text/event-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size + body


BROKEN_STREAMS = {
    "not JSON": _sse(b"data: {not json\n\n"),
    "JSON that is not an object": _sse(b"data: [1, 2]\n\n"),
    "ids that are not numbers": _sse(b'data: {"tokens": ["a"], "content": "x", "tokens_predicted": 1}\n\n'),
    "cut short mid-body": _sse(b'data: {"tokens": [5], "content": "x"}\n\n', length=4096),
    "no final chunk": _sse(b'data: {"tokens": [5], "content": "x", "tokens_predicted": 1}\n\n'),
}


@pytest.mark.parametrize("name", BROKEN_STREAMS)
def test_a_broken_stream_ends_with_a_typed_error(name):
    handler = type("Handler", (_Replies,), {"reply": BROKEN_STREAMS[name]})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as stub:
        threading.Thread(target=stub.serve_forever, daemon=True).start()
        sink: queue.SimpleQueue = queue.SimpleQueue()
        with httpx.Client(base_url=f"http://127.0.0.1:{stub.server_address[1]}") as client:
            worker = StreamWorker(client, {"prompt": "x"}, GenerateConfig(), sink, False, lambda exc: ri.ServerCrashedError(str(exc)))
            threading.Thread(target=worker.run, daemon=True).start()
            items = [sink.get(timeout=NEVER_S)]
            while not isinstance(items[-1], Finished):
                items.append(sink.get(timeout=NEVER_S))
        stub.shutdown()
    finished = items[-1]
    assert finished.reason == "error"
    assert isinstance(finished.error, ri.ServerCrashedError), finished.error
    assert name == "no final chunk" or finished.error.__cause__ is not None


class _Holds(http.server.BaseHTTPRequestHandler):
    """A stand-in for a busy server: holds every POST until ``release`` is set, then
    ends the stream with a final chunk."""

    release = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.release.wait(NEVER_S)
        self.wfile.write(b"HTTP/1.1 200 OK\r\n" + _sse(b'data: {"tokens": [], "content": "", "stop": true, "stop_type": "limit"}\n\n'))
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_a_request_cancelled_while_it_waits_for_a_reader_ends_at_once():
    """With every reader busy, a cancelled request that waits its turn gets its end from
    ``cancel`` itself, not once a reader frees (a caller's ``cancel()`` would wait that long)."""
    handler = type("Handler", (_Holds,), {"release": threading.Event()})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as stub:
        threading.Thread(target=stub.serve_forever, daemon=True).start()
        with httpx.Client(base_url=f"http://127.0.0.1:{stub.server_address[1]}") as client:
            readers = LiveWorkers(1)
            sinks: list[queue.SimpleQueue] = [queue.SimpleQueue(), queue.SimpleQueue()]
            busy, waiting = (StreamWorker(client, {"prompt": "x"}, GenerateConfig(), sink, False,
                                          lambda exc: ri.ServerCrashedError(str(exc))) for sink in sinks)
            readers.start(busy, lambda: False)
            readers.start(waiting, lambda: False)
            waiting.cancel()
            ended = sinks[1].get_nowait()  # already there: nothing waited for the busy reader
            handler.release.set()
            assert isinstance(sinks[0].get(timeout=NEVER_S), Finished)
            readers.join_all()
        stub.shutdown()
    assert isinstance(ended, Finished) and ended.reason == "cancelled"
    assert sinks[1].empty()  # one end only: the reader that reached it later did not run it


# ---- what llama-server streams, made to match the in-process backend ---------------------


def _stops_on_its_own(model_fa) -> list[int]:
    """A prompt whose greedy continuation ends with an end-of-generation token: a pattern
    that ends every line with ``</s>`` (id 212, an end-of-generation token of Gemma 3),
    cut after the first word of the line."""
    words = model_fa.tokenize("The quick brown fox", add_special=False)
    return [2] + (words + [212]) * 3 + words[:1]


def test_a_natural_end_yields_no_end_of_generation_token(server, model_fa):
    prompt = _stops_on_its_own(model_fa)
    remote = server.generate(prompt, max_tokens=32)
    local = model_fa.generate(prompt, max_tokens=32)
    remote_tokens, local_tokens = list(remote), list(local)
    assert local.finish_reason == remote.finish_reason == "stop"
    assert [t.id for t in remote_tokens] == [t.id for t in local_tokens]
    assert not {t.id for t in remote_tokens} & server._eog_ids
    assert remote.metrics.generated_tokens == len(remote_tokens) == local.metrics.generated_tokens
    assert "".join(t.text for t in remote_tokens) == "".join(t.text for t in local_tokens)


@pytest.mark.parametrize("ends_with", ["end of generation", "stop token"])
def test_text_a_stop_string_held_back_comes_out_when_generation_ends(server, model_fa, ends_with):
    """llama-server holds back text that could begin a stop string; when an end token
    (end of generation, or a stop token id) ends generation, that text is the
    generation's and comes with the end token, as in-process."""
    prompt = _stops_on_its_own(model_fa)
    plain = server.generate(prompt, max_tokens=32).text()  # " quick brown fox"
    *head, last = plain.split(" ")
    if ends_with == "end of generation":
        options = {"stop": (last + " and more",)}
    else:  # the last word is a stop token; the one before it is held back
        options = {"stop": (" " + head[-1] + " and more",), "stop_tokens": tuple(model_fa.tokenize(" " + last, add_special=False))}
    remote = server.generate(prompt, max_tokens=32, **options)
    local = model_fa.generate(prompt, max_tokens=32, **options)
    remote_tokens, local_tokens = list(remote), list(local)
    assert remote.finish_reason == local.finish_reason == "stop"
    # llama-server holds a whole token's text where in-process holds only the part that
    # could begin the stop string, so the text splits differently; ids and text agree
    assert [t.id for t in remote_tokens] == [t.id for t in local_tokens]
    assert "".join(t.text for t in remote_tokens) == "".join(t.text for t in local_tokens) != ""
    assert remote.metrics.generated_tokens == len(remote_tokens) == local.metrics.generated_tokens


def test_text_a_stop_string_held_back_comes_out_at_max_tokens(server, model_fa):
    """At ``max_tokens`` llama-server drops the text it held for a possible stop string;
    in-process releases it, and so must the server backend."""
    prompt = _stops_on_its_own(model_fa)
    plain = server.generate(prompt, max_tokens=3, ignore_eos=True).text()
    stop = (plain.rsplit(" ", 1)[-1] + " and more",)
    remote = server.generate(prompt, max_tokens=3, ignore_eos=True, stop=stop)
    local = model_fa.generate(prompt, max_tokens=3, ignore_eos=True, stop=stop)
    remote_text, local_text = remote.text(), local.text()
    assert remote.finish_reason == local.finish_reason == "length"
    assert remote_text == local_text == plain


HIEROGLYPHS = "𓀀𓀁𓀂 𓀀𓀁𓀂 𓀀𓀁𓀂 𓀀𓀁𓀂 𓀀"  # not in Gemma's vocabulary: spelled byte by byte


def test_tokens_that_end_inside_a_character_keep_their_ids(server, model_fa):
    """Four byte tokens per character; llama-server sends a chunk only for the fourth."""
    remote = server.generate(HIEROGLYPHS, max_tokens=13, ignore_eos=True)
    local = model_fa.generate(HIEROGLYPHS, max_tokens=13, ignore_eos=True)
    remote_tokens, local_tokens = list(remote), list(local)
    assert [t.id for t in remote_tokens] == [t.id for t in local_tokens]
    assert len(remote_tokens) == remote.metrics.generated_tokens == 13
    assert "".join(t.text for t in remote_tokens) == "".join(t.text for t in local_tokens)
    assert any(t.text == "" for t in remote_tokens)  # the case under test did occur


def test_a_limit_inside_a_character_still_counts_every_token(server, model_fa):
    """Cut after two bytes of a character: the server never sends those two tokens; they
    are counted, their text is U+FFFD as in-process, their ids are unknown."""
    remote = server.generate(HIEROGLYPHS, max_tokens=15, ignore_eos=True)
    local = model_fa.generate(HIEROGLYPHS, max_tokens=15, ignore_eos=True)
    remote_tokens, local_tokens = list(remote), list(local)
    assert len(remote_tokens) == remote.metrics.generated_tokens == 15
    assert [t.id for t in remote_tokens[:13]] == [t.id for t in local_tokens[:13]]
    assert [t.id for t in remote_tokens[13:]] == [UNKNOWN_ID, UNKNOWN_ID]
    assert "".join(t.text for t in remote_tokens) == "".join(t.text for t in local_tokens)


def test_classify_gives_the_id_of_a_token_that_ends_inside_a_character(server, model_fa):
    """The next token is the first byte of a four-byte character: a stream would carry no
    chunk for it, so classify asks for the whole reply."""
    [remote] = server.classify([HIEROGLYPHS])
    [local] = model_fa.classify([HIEROGLYPHS])
    assert_same_until_near_tie(model_fa, HIEROGLYPHS, [local.token], [remote.token])


# ---- the child process: key, readiness, start, stderr -------------------------------------


def test_the_api_key_is_not_on_the_command_line(server):
    key = server._process.api_key
    cmdline = Path(f"/proc/{server.server_pid}/cmdline").read_bytes().decode()
    assert key not in cmdline and "--api-key" not in cmdline
    response = httpx.get(server.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200


class _AnswersEverything(http.server.BaseHTTPRequestHandler):
    """Another program on the port that says yes to everything, /health included."""

    def do_GET(self) -> None:  # noqa: N802
        body = b'{"status": "ok", "data": [{"meta": {}}]}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_another_server_on_the_port_is_not_taken_for_ours(tmp_path, gemma_path):
    """The child is slow to start (as a big model is), so the other program answers first;
    it must still not pass for ours, and ours, failing to bind, is retried elsewhere."""
    binary, _ = find_server_binary()
    slow = tmp_path / "slow-llama-server"
    slow.write_text(f'#!/bin/sh\nsleep 2\nexec "{binary}" "$@"\n')
    slow.chmod(0o755)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnswersEverything) as impostor:
        threading.Thread(target=impostor.serve_forever, daemon=True).start()
        taken = impostor.server_address[1]
        args = ["-m", str(gemma_path), "-c", "256", "-np", "1", "--no-webui"]
        with ServerProcess(slow, args, port=taken) as proc:
            assert proc.port != taken
            headers = {"Authorization": f"Bearer {proc.api_key}"}
            assert httpx.get(proc.base_url + "/v1/models", headers=headers).status_code == 200
        impostor.shutdown()


def test_a_binary_that_cannot_be_started_is_a_typed_error(tmp_path, monkeypatch, gemma_path):
    fake = tmp_path / "llama-server"
    fake.write_bytes(b"\x7fELF this is not a program")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("ROCM_LLAMA_SERVER_PATH", str(fake))
    with pytest.raises(ri.BackendUnavailableError, match="could not be started") as info:
        ri.load_model(gemma_path, backend="llama_server")
    assert isinstance(info.value.__cause__, OSError)


def test_the_childs_stderr_is_kept_bounded(tmp_path, gemma_path):
    """A child that writes megabytes to stderr (here before it starts the real server,
    a 3 MB line among them) leaves a bounded log: the start of it and its last lines."""
    binary, _ = find_server_binary()
    noisy = tmp_path / "noisy-llama-server"
    noisy.write_text(
        "#!/bin/sh\n"
        "head -c 2000000 /dev/zero | tr '\\0' 'x' | fold -w 99 >&2\n"
        "head -c 3000000 /dev/zero | tr '\\0' 'y' >&2\n"
        "echo >&2; echo 'noise over' >&2\n"
        f'exec "{binary}" "$@"\n'
    )
    noisy.chmod(0o755)
    args = ["-m", str(gemma_path), "-c", "256", "-np", "1", "--no-webui"]
    with ServerProcess(noisy, args) as proc:
        text = proc.stderr_text()
        assert len(text) < 3_000_000, len(text)
        assert text.startswith("x" * 99)
        assert "noise over" in text and "listening on" in text


def test_a_server_that_exits_at_start_up_reports_the_end_of_its_stderr(tmp_path):
    failing = tmp_path / "failing-llama-server"
    failing.write_text("#!/bin/sh\necho 'first line' >&2\necho 'the reason it failed' >&2\nexit 3\n")
    failing.chmod(0o755)
    with pytest.raises(ri.BackendUnavailableError, match="code 3.*the reason it failed"):
        ServerProcess(failing, [])
