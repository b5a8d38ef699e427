"""The openai backend against real OpenAI-compatible servers on loopback: `rocm-infer serve`
(the in-process engine over HTTP) and the package's own llama-server (`/v1`), with the
interface checks the local backends pass: streams, metrics, chat, classify, stop, seeds,
logprobs, concurrency, cancel, timeout, typed errors, structured output, close."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest

import rocm_infer as ri
from rocm_infer.bench.servers import ready_url
from rocm_infer.server.chunks import UNKNOWN_ID
from rocm_infer.server.model import server_args
from rocm_infer.server.openai_chunks import OpenAIChunkReader, openai_body
from rocm_infer.server.process import ServerProcess, find_server_binary

SERVE_KEY = "openai-backend-key"
PROMPT = "The capital of France is"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "rank": {"enum": [1, 2, 3]},
          "seen": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 9}, "maxItems": 2}},
          "required": ["city", "rank", "seen"], "additionalProperties": False}


@pytest.fixture(scope="module")
def serve_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `rocm-infer serve` (the serve tests' launcher), with an API key."""
    from test_serve import _start

    process, log = _start(tmp_path_factory.mktemp("serve"), "--log-level", "warning", "--parallel", "4",
                          env={"ROCM_INFER_API_KEY": SERVE_KEY})
    try:
        yield f"{ready_url(process, log)}/v1"
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def llama_server_process(gemma_path: Path) -> Iterator[ServerProcess]:
    binary, _ = find_server_binary()
    assert binary is not None
    with ServerProcess(binary, server_args(gemma_path, ri.LoadConfig(parallel_slots=4, prefix_cache=False), None)) as process:
        yield process


@pytest.fixture(scope="module")
def via_serve(serve_url: str) -> Iterator[ri.TextModel]:
    with ri.load_model(None, backend="openai", base_url=serve_url, api_key=SERVE_KEY) as model:
        yield model


@pytest.fixture(scope="module")
def via_llama_server(llama_server_process: ServerProcess) -> Iterator[ri.TextModel]:
    with ri.load_model(None, backend="openai", base_url=f"{llama_server_process.base_url}/v1", api_key=llama_server_process.api_key) as model:
        yield model


@pytest.fixture(params=["serve", "llama_server"])
def remote(request: pytest.FixtureRequest) -> ri.TextModel:
    return request.getfixturevalue("via_serve" if request.param == "serve" else "via_llama_server")


def test_info_names_the_served_model(remote):
    assert remote.info.backend == "openai" and remote.info.name and remote.info.context_len > 0


def test_stream_has_text_and_its_own_metrics(remote):
    stream = remote.generate(PROMPT, max_tokens=12, ignore_eos=True)
    tokens = list(stream)
    assert tokens and "".join(t.text for t in tokens).strip()
    assert all(t.id == UNKNOWN_ID for t in tokens)  # the OpenAI wire carries text, not ids
    metrics = stream.metrics
    assert stream.finish_reason == "length" and metrics.generated_tokens == len(tokens) <= 12
    assert metrics.prompt_tokens > 0 and metrics.time_to_first_token_s > 0 and metrics.total_s >= metrics.time_to_first_token_s
    assert remote.metrics() == metrics and remote.err() is None


def test_chat_is_rendered_by_the_server(remote):
    stream = remote.chat([{"role": "user", "content": "Name three colours."}], max_tokens=8)
    assert "".join(t.text for t in stream) and stream.finish_reason in ("stop", "length")


def test_stop_string_and_seed(remote):
    text = "".join(t.text for t in remote.generate("Count: 1, 2, 3,", max_tokens=24, stop=[" 6"]))
    assert " 6" not in text
    runs = ["".join(t.text for t in remote.generate(PROMPT, max_tokens=8, temperature=0.9, seed=7)) for _ in range(2)]
    assert runs[0] == runs[1]


def test_logprobs(remote):
    tokens = list(remote.chat([{"role": "user", "content": "Hi"}], max_tokens=4, logprobs=True))
    assert tokens and all(t.logprob is not None and t.logprob <= 0 for t in tokens)


def test_logit_bias_reaches_the_server(remote, model):
    [word] = model.tokenize(" banana", add_special=False)
    text = remote.generate(PROMPT, max_tokens=3, temperature=0.0, logit_bias={word: 100.0}).text()
    assert text == model.detokenize([word] * 3)


def test_top_logprobs_are_refused_with_the_reason(remote):
    with pytest.raises(ri.InvalidConfigError, match="top_logprobs"):
        list(remote.generate(PROMPT, max_tokens=2, logprobs=True, top_logprobs=2))


def test_classify(remote):
    results = remote.classify([PROMPT, "One, two,"])
    assert len(results) == 2 and all(r.text for r in results)
    with pytest.raises(ri.InvalidConfigError):
        remote.classify([PROMPT], return_logits=True)


def test_concurrent_streams_complete_with_their_own_metrics(remote):
    results = {}

    def run(i: int) -> None:
        stream = remote.generate(f"Story {i}: once upon a time", max_tokens=8, ignore_eos=True)
        results[i] = (len(list(stream)), stream.metrics, stream.finish_reason)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6
    for count, metrics, reason in results.values():
        assert reason == "length" and metrics.generated_tokens == count > 0


def test_cancel_ends_one_stream_and_the_model_keeps_serving(remote):
    drop = remote.generate(PROMPT, max_tokens=2000, ignore_eos=True)
    next(drop)
    drop.cancel()
    assert drop.finish_reason == "cancelled"
    assert list(remote.generate(PROMPT, max_tokens=3, ignore_eos=True))


def test_async_stream_and_break(remote):
    async def main() -> tuple[str, int]:
        text = "".join([t.text async for t in remote.agenerate(PROMPT, max_tokens=6, ignore_eos=True)])
        count = 0
        async for _ in remote.agenerate(PROMPT, max_tokens=2000, ignore_eos=True):
            count += 1
            if count == 2:
                break
        return text, count

    text, count = asyncio.run(main())
    assert text and count == 2


def test_timeout_is_a_typed_error(remote):
    stream = remote.generate(PROMPT, max_tokens=4000, ignore_eos=True, timeout=0.2)
    with pytest.raises(ri.RequestTimeoutError):
        for _ in stream:
            pass
    assert stream.finish_reason == "error"


def test_errors_are_typed(remote):
    with pytest.raises(ri.PromptTooLongError):
        list(remote.generate("word " * 6000, max_tokens=4))
    with pytest.raises(ri.InvalidConfigError, match="json_schema only"):
        remote.generate(PROMPT, max_tokens=4, regex="a+")
    assert list(remote.generate(PROMPT, max_tokens=2, ignore_eos=True))  # still serving


def test_json_schema_output_validates(remote):
    answers = ["".join(t.text for t in remote.generate("A city as JSON:", max_tokens=64, json_schema=SCHEMA)),
               "".join(t.text for t in remote.chat([{"role": "user", "content": "A city?"}], max_tokens=64, json_schema=SCHEMA,
                                                   temperature=0.8, seed=3))]
    for answer in answers:
        jsonschema.validate(json.loads(answer), SCHEMA)


def test_load_errors_are_typed_and_the_key_is_never_shown(serve_url):
    with pytest.raises(ri.InvalidConfigError, match="API key") as refused:
        ri.load_model(None, backend="openai", base_url=serve_url, api_key="wrong-key-value")
    assert "wrong-key-value" not in str(refused.value)
    assert "wrong-key-value" not in repr(ri.LoadConfig(api_key="wrong-key-value"))
    with pytest.raises(ri.InvalidConfigError, match="asks for an API key: pass api_key="):
        ri.load_model(None, backend="openai", base_url=serve_url)
    with pytest.raises(ri.ModelNotFoundError):
        ri.load_model("no-such-model", backend="openai", base_url=serve_url, api_key=SERVE_KEY)
    without_v1 = serve_url.removesuffix("/v1")
    with pytest.raises(ri.ModelNotFoundError, match=f"try base_url={without_v1}/v1"):
        ri.load_model(None, backend="openai", base_url=without_v1, api_key=SERVE_KEY)
    with pytest.raises(ri.BackendUnavailableError):
        ri.load_model(None, backend="openai", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ri.InvalidConfigError):
        ri.LoadConfig(base_url="ftp://example")


def test_the_api_key_can_come_from_the_environment(serve_url, monkeypatch):
    monkeypatch.setenv("ROCM_INFER_OPENAI_API_KEY", SERVE_KEY)
    monkeypatch.setenv("ROCM_INFER_OPENAI_BASE_URL", serve_url)
    assert ri.get_backend("openai").available()
    with ri.load_model(None, backend="openai") as model:
        assert list(model.generate(PROMPT, max_tokens=2, ignore_eos=True))


def test_close_ends_live_streams_with_a_typed_error(serve_url):
    model = ri.load_model(None, backend="openai", base_url=serve_url, api_key=SERVE_KEY)
    stream = model.generate(PROMPT, max_tokens=2000, ignore_eos=True)
    next(stream)
    model.close()
    with pytest.raises(ri.ModelClosedError):
        for _ in stream:
            pass
    with pytest.raises(ri.ModelClosedError):
        model.generate(PROMPT, max_tokens=2)


def test_parallel_slots_caps_the_requests_in_flight(serve_url):
    """Requests past the cap wait in this client: the server starts one at a time.  Counted
    as generations the server started (waiting + running + ended), which an earlier test's
    request ending meanwhile leaves unchanged."""
    def started() -> int:
        text = httpx.get(serve_url.removesuffix("/v1") + "/metrics").text
        samples = [line for line in text.splitlines() if line.startswith(("rocm_infer_requests_running ", "rocm_infer_requests_waiting ",
                                                                           "rocm_infer_generations_total{"))]
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in samples)

    before = started()
    with ri.load_model(None, backend="openai", base_url=serve_url, api_key=SERVE_KEY, parallel_slots=1) as model:
        streams = [model.generate(PROMPT, max_tokens=2000, ignore_eos=True) for _ in range(3)]
        next(streams[0])
        next(streams[0])  # by now the others would have reached the server, were they sent
        assert started() - before == 1
        for stream in streams:
            stream.cancel()


def test_chunks_become_tokens_without_a_server():
    """The reader alone: usage after the finish reason (OpenAI, vLLM), several logprobs in one chunk."""
    config = ri.GenerateConfig(logprobs=True)
    reader = OpenAIChunkReader(config, chat=True)
    assert reader.feed({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}) == []
    tokens = reader.feed({"choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": {"content": [{"logprob": -0.5}, {"logprob": -0.25}]}}]})
    assert tokens == [ri.Token(UNKNOWN_ID, "Hi", -0.75)] and reader.started
    reader.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    assert reader.reason == "length" and not reader.complete
    reader.feed({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    assert reader.complete and reader.prompt_tokens == 5 and reader.generated == 1
    body = openai_body("m", "x", ri.GenerateConfig(top_k=0, repeat_penalty=1.0, json_schema={"type": "object"}))
    assert "top_k" not in body and "repeat_penalty" not in body and body["response_format"]["type"] == "json_schema"
    body = openai_body("m", "x", ri.GenerateConfig(presence_penalty=0.5, repeat_last_n=32))
    assert body["presence_penalty"] == 0.5 and body["repeat_last_n"] == 32 and "frequency_penalty" not in body
    body = openai_body("m", "x", ri.GenerateConfig(frequency_penalty=0.5, repeat_last_n=0))  # no window: off, as in-process
    assert "frequency_penalty" not in body and "repeat_last_n" not in body
