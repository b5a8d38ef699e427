"""The server's parts without a server: request fields to GenerateConfig, the error map,
Prometheus text, the answers while the model is loading or failed to load, how stream
events are joined into writes, what the runtime reads from a closed model, and the engine's figures read in one trip."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

import rocm_infer as ri  # noqa: E402
from rocm_infer.native.model import EngineSnapshot  # noqa: E402
from rocm_infer.serve import Runtime, ServeSettings, create_app  # noqa: E402
from rocm_infer.serve.errors import ApiError, from_library, from_validation  # noqa: E402
from rocm_infer.serve.launch import is_loopback, without_nagle  # noqa: E402
from rocm_infer.serve.metrics import EngineFigures, ServerMetrics  # noqa: E402
from rocm_infer.serve.responses import Alternative, LogprobEntry, chat_logprobs, completion_logprobs  # noqa: E402
from rocm_infer.serve.params import (  # noqa: E402
    chat_messages,
    choice_seed,
    completion_prompts,
    default_chat_max_tokens,
    generate_config,
)
from rocm_infer.serve.schemas import ChatCompletionRequest, CompletionRequest  # noqa: E402
from rocm_infer.serve.transport import joined  # noqa: E402

HI = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return ChatCompletionRequest(messages=HI, **fields)


def test_openai_defaults_and_extras():
    config = generate_config(chat(), default_max_tokens=256)
    assert (config.max_tokens, config.temperature, config.top_p, config.seed) == (256, 1.0, 1.0, None)
    config = generate_config(chat(max_tokens=9, max_completion_tokens=7, temperature=0.5, top_k=-1, min_p=0.1,
                                  repetition_penalty=1.1, stop="END", stop_token_ids=[3], ignore_eos=True, logprobs=True), 256)
    assert config.max_tokens == 7  # max_completion_tokens wins, as in OpenAI's API
    assert (config.top_k, config.min_p, config.repeat_penalty, config.stop, config.stop_tokens) == (0, 0.1, 1.1, ("END",), (3,))
    assert config.ignore_eos and config.logprobs
    assert generate_config(CompletionRequest(prompt="x"), 16).max_tokens == 16
    assert generate_config(CompletionRequest(prompt="x", logprobs=0), 16).logprobs
    assert generate_config(CompletionRequest(prompt="x", logprobs=3), 16).top_logprobs == 3
    assert generate_config(chat(logprobs=True, top_logprobs=5), 16).top_logprobs == 5


def test_unknown_fields_are_served_with_a_warning_that_names_them(caplog):
    with caplog.at_level("WARNING", logger="rocm_infer.serve"):
        config = generate_config(chat(max_token=5, temperature=0.5), default_max_tokens=256)
    assert config.max_tokens == 256 and config.temperature == 0.5
    assert "ignored: 'max_token'" in caplog.text


def test_an_unknown_field_cannot_forge_a_log_line(caplog):
    with caplog.at_level("WARNING", logger="rocm_infer.serve"):
        generate_config(chat(**{"x\nCRITICAL rocm_infer: forged": 1}), default_max_tokens=8)
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()


def test_seeds_wrap_and_differ_per_choice():
    config = generate_config(chat(seed=-1), 8)
    assert config.seed == 2**32 - 1
    assert [choice_seed(config, i).seed for i in range(3)] == [2**32 - 1, 0, 1]
    unseeded = generate_config(chat(), 8)
    assert choice_seed(unseeded, 2).seed is None


@pytest.mark.parametrize("fields, param", [
    ({"presence_penalty": 2.1}, "presence_penalty"),
    ({"frequency_penalty": -2.5}, "frequency_penalty"),
    ({"logit_bias": {"1": 100.5}}, "logit_bias"),
    ({"logit_bias": {"-1": 2.0}}, "logit_bias"),
    ({"logit_bias": {"1.5": 2.0}}, "logit_bias"),
    ({"logit_bias": {str(i): 1.0 for i in range(1025)}}, "logit_bias"),
    ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true, as OpenAI
    ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"temperature": -0.1}, "temperature"),
    ({"stop": [""]}, "stop"),
    ({"seed": None, "max_tokens": 0}, "max_tokens"),
])
def test_refusals_name_the_field(fields, param):
    with pytest.raises(ApiError) as caught:
        generate_config(chat(**fields), 8)
    assert caught.value.status == 400 and caught.value.param == param


def test_penalties_reach_the_config():
    config = generate_config(chat(presence_penalty=1.5, frequency_penalty=-0.5), 8)
    assert (config.presence_penalty, config.frequency_penalty, config.penalised) == (1.5, -0.5, True)
    assert not generate_config(chat(), 8).penalised


def test_logit_bias_becomes_the_configs_token_ids_and_biases():
    assert generate_config(chat(logit_bias={"12": -100, "7": 2.5}), 8).logit_bias == {12: -100.0, 7: 2.5}
    assert generate_config(chat(logit_bias={}), 8).logit_bias is None


def test_response_format_becomes_the_configs_json_schema():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    named = generate_config(chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}), 8)
    assert json.loads(named.json_schema) == schema
    assert json.loads(generate_config(chat(response_format={"type": "json_object"}), 8).json_schema) == {"type": "object"}


def test_zero_penalties_and_text_format_are_accepted():
    generate_config(chat(presence_penalty=0, frequency_penalty=0.0, response_format={"type": "text"}, tools=[{"x": 1}],
                         tool_choice="none"), 8)


@pytest.mark.parametrize("fields, param", [
    ({"suffix": "x"}, "suffix"), ({"best_of": 3}, "best_of"), ({"echo": True, "logprobs": 0}, "echo"),
])
def test_completion_refusals(fields, param):
    with pytest.raises(ApiError) as caught:
        generate_config(CompletionRequest(prompt="x", **fields), 8)
    assert caught.value.param == param


def test_chat_messages_join_text_parts_and_read_developer_as_system():
    body = ChatCompletionRequest(messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None},
    ])
    assert chat_messages(body) == [ri.Message("system", "be brief"), ri.Message("user", "a\nb"), ri.Message("assistant", "")]
    with pytest.raises(ApiError, match="image_url"):
        chat_messages(ChatCompletionRequest(messages=[{"role": "user", "content": [{"type": "image_url"}]}]))
    with pytest.raises(ApiError) as caught:
        chat_messages(ChatCompletionRequest(messages=[{"role": "robot", "content": "x"}]))
    assert caught.value.param == "messages.0"


def test_completion_prompts():
    assert completion_prompts(CompletionRequest(prompt="a")) == ["a"]
    assert completion_prompts(CompletionRequest(prompt=["a", "b"])) == ["a", "b"]
    assert completion_prompts(CompletionRequest(prompt=[1, 2])) == [[1, 2]]
    assert completion_prompts(CompletionRequest(prompt=[[1], [2, 3]])) == [[1], [2, 3]]
    with pytest.raises(ApiError):
        completion_prompts(CompletionRequest(prompt=[]))


def test_a_prompt_list_is_bounded_in_choices_before_any_work():
    assert len(completion_prompts(CompletionRequest(prompt=["a"] * 16, n=128))) == 16
    with pytest.raises(ApiError, match="2560 choices") as caught:
        completion_prompts(CompletionRequest(prompt=["a"] * 20, n=128))
    assert caught.value.param == "prompt"
    with pytest.raises(ApiError, match="choices"):
        completion_prompts(CompletionRequest(prompt=[[2]] * 100_000))


def test_stops_are_bounded_in_number():
    """Each is matched at every token on the engine thread that all clients share."""
    assert len(generate_config(chat(stop=[f"s{i}" for i in range(64)], stop_token_ids=list(range(1024))), 8).stop) == 64
    for fields, param in [({"stop": [f"s{i}" for i in range(65)]}, "stop"), ({"stop_token_ids": list(range(1025))}, "stop_token_ids")]:
        with pytest.raises(ApiError, match="at most") as caught:
            generate_config(chat(**fields), 8)
        assert caught.value.param == param


@pytest.mark.parametrize("field", ["max_tokens", "n", "seed", "temperature", "top_p", "top_k", "logprobs"])
def test_a_bool_where_a_number_is_due_is_refused(field):
    """pydantic's lax mode read ``"max_tokens": true`` as 1; the library refuses a bool too."""
    with pytest.raises(ValueError, match="not true or false"):
        CompletionRequest(prompt="x", **{field: True})


@pytest.mark.parametrize("prompt", [[2, True], [2, 1.0], [[2, False]]])
def test_token_ids_are_integers_as_the_library_takes_them(prompt):
    with pytest.raises(ValueError):
        CompletionRequest(prompt=prompt)


def test_a_text_part_without_its_text_says_so():
    with pytest.raises(ApiError, match="text part needs its 'text'"):
        chat_messages(ChatCompletionRequest(messages=[{"role": "user", "content": [{"type": "text"}]}]))


def test_default_chat_max_tokens_is_one_slots_share():
    assert default_chat_max_tokens(4096, 16) == 256
    assert default_chat_max_tokens(64, 16) == 16


def test_library_errors_map_to_status_codes():
    assert from_library(ri.PromptTooLongError("long")).status == 400
    assert from_library(ri.PromptTooLongError("long")).code == "context_length_exceeded"
    assert from_library(ri.InvalidConfigError("bad")).status == 400
    assert from_library(ri.InvalidModelError("no chat template")).status == 400
    assert from_library(ri.ModelClosedError("closed")).status == 503
    assert from_library(ri.RequestTimeoutError("slow")).status == 504
    assert from_library(ri.EngineError("boom")).status == 500
    assert from_library(ri.OutOfMemoryError("oom")).code == "out_of_memory"
    body = from_library(ri.InvalidConfigError("bad")).body()
    assert body == {"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}}
    error = from_validation([{"loc": ("body", "n"), "msg": "too small"}, {"loc": ("body", "stop"), "msg": "bad"}])
    assert (error.status, error.param, error.message) == (400, "n", "n: too small; stop: bad")


def test_metrics_text():
    metrics = ServerMetrics()
    metrics.request_done("chat", 200)
    metrics.generation_started()
    metrics.first_token()
    metrics.generation_started()
    assert (metrics.waiting, metrics.running) == (1, 1)
    metrics.generation_ended(True, "length", 5, 7, 0.03)
    metrics.generation_ended(False, "cancelled", 4, 0, 0.0)
    assert (metrics.waiting, metrics.running) == (0, 0)
    text = metrics.render(EngineFigures(kv_cells_used=3, kv_cells_total=4096))
    assert 'rocm_infer_requests_total{endpoint="chat",code="200"} 1' in text
    assert 'rocm_infer_generations_total{finish_reason="cancelled"} 1' in text
    assert "rocm_infer_prompt_tokens_total 9" in text and "rocm_infer_generation_tokens_total 7" in text
    assert 'rocm_infer_time_to_first_token_seconds_bucket{le="0.025"} 0' in text
    assert 'rocm_infer_time_to_first_token_seconds_bucket{le="0.05"} 1' in text
    assert 'rocm_infer_time_to_first_token_seconds_bucket{le="+Inf"} 1' in text
    assert "rocm_infer_kv_cache_cells_used 3" in text and "parallel_slots" not in text


def test_loopback_hosts():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


def test_503_while_loading_then_after_a_failed_load(tmp_path):
    """The server listens before the model is ready: 503 in OpenAI's shape meanwhile."""
    app = create_app(Runtime(ServeSettings(model=str(tmp_path / "missing.gguf"))))
    loading = TestClient(app)  # no lifespan: the load never starts
    answer = loading.get("/health")
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "model_loading"
    assert loading.post("/v1/chat/completions", json={"messages": HI}).status_code == 503
    with TestClient(app) as started:  # the lifespan loads, which fails: still 503, saying why
        for _ in range(1000):  # the load runs on a worker thread
            answer = started.get("/v1/models")
            if answer.json()["error"]["code"] != "model_loading":
                break
            time.sleep(0.01)
        assert answer.status_code == 503 and "ModelNotFoundError" in answer.json()["error"]["message"]
        assert started.post("/v1/chat/completions", json={"messages": "nope"}).status_code == 400  # validation first
        assert started.get("/no/such/path").json()["error"]["message"] == "Not Found"


@pytest.mark.parametrize("content, content_type, says", [
    ('{"prompt": "a"}', "application/x-www-form-urlencoded", "Content-Type: application/json"),  # what curl -d sends
    ('{"prompt": "a"}', "text/plain", "Content-Type: application/json"),
    ("[1, 2]", "application/json", "must be a JSON object, not an array"),
    ("42", "application/json", "must be a JSON object, not a number"),
    ("", "application/json", "has no body"),
])
def test_a_body_that_is_not_a_json_object_says_what_to_send(content, content_type, says):
    """Validation answers before the model is asked for, so a model that failed to load will do."""
    with TestClient(create_app(Runtime(ServeSettings(model="/nonexistent.gguf")))) as client:
        answer = client.post("/v1/completions", content=content, headers={"Content-Type": content_type})
    error = answer.json()["error"]
    assert answer.status_code == 400 and says in error["message"] and error["type"] == "invalid_request_error"


def test_a_field_of_several_forms_is_named_as_the_field():
    """pydantic reports each form of a union under the form's name (``prompt.list[int].1``)."""
    with TestClient(create_app(Runtime(ServeSettings(model="/nonexistent.gguf")))) as client:
        prompt = client.post("/v1/completions", json={"prompt": ["a", [2, 3]]}).json()["error"]
        content = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": 5}]}).json()["error"]
        wrong_method = client.get("/v1/completions")
    assert (prompt["param"], content["param"]) == ("prompt", "messages.0.content")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["type"] == "invalid_request_error"


def test_connections_accepted_on_the_bound_socket_send_at_once():
    """What uvicorn's event loop does with serve's pre-bound socket: every connection it
    accepts has Nagle's algorithm off (with uvicorn's socket as it comes, a reply's body
    waited for the client's delayed ACK: 44 ms for a GET /health over loopback)."""
    import uvicorn

    listening = without_nagle(uvicorn.Config(app=None, host="127.0.0.1", port=0).bind_socket())

    async def accept_one() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listening)
        async with server:
            _, writer = await asyncio.open_connection(*listening.getsockname()[:2])
            nodelay = await asyncio.wait_for(accepted, 60)
            writer.close()
        return nodelay

    assert asyncio.run(accept_one()) != 0


def test_events_ready_back_to_back_go_out_as_one_body_chunk():
    """A streamed answer writes once per burst of ready events, never holding one back:
    each chunk ends where the next event was not ready, and the last is flushed at the end."""
    ready_after = iter([True, False, False, True, True])

    async def events():
        for event in "abcde":
            yield event

    async def chunks() -> list[str]:
        return [chunk async for chunk in joined(events(), lambda: next(ready_after))]

    assert asyncio.run(chunks()) == ["ab", "c", "de"]


def test_a_token_before_one_whose_text_is_held_back_goes_out_without_waiting_for_the_next():
    """A streamed answer writes what is ready: a token followed by one whose text is held
    back (an unfinished character) is sent before the engine makes the next token, and
    an event with nothing to send is never a write of its own.  The real stream and
    generation, fed as the engine feeds them."""
    from rocm_infer.serve.chat import _events
    from rocm_infer.serve.generation import Generation
    from rocm_infer.serve.responses import Envelope
    from rocm_infer.stream import AsyncSink, AsyncTokenStream, Finished

    async def scenario() -> tuple[bool, str, list[str]]:
        sink = AsyncSink(asyncio.get_running_loop())
        stream = AsyncTokenStream(sink, lambda: None, None, lambda finished: None)

        async def opener() -> AsyncTokenStream:
            return stream

        generation = await Generation.start(ServerMetrics(), [(0, opener)])
        chunks = joined(_events(None, Envelope.new("chatcmpl", "m"), generation, False, False), generation.ready)  # type: ignore[arg-type]
        await anext(chunks)  # the role
        sink.put(ri.Token(1, "a"))
        sink.put(ri.Token(2, ""))
        sent = asyncio.ensure_future(anext(chunks))
        for _ in range(20):  # the hand-over and the reads take a few loop turns, no step
            await asyncio.sleep(0)
        done = sent.done()
        sink.put(ri.Token(3, "b"))
        sink.put(Finished("stop", ri.GenerateMetrics()))
        first = await sent
        rest = [chunk async for chunk in chunks]
        return done, first, rest

    done, first, rest = asyncio.run(scenario())
    assert done and '"content": "a"' in first and '"content": "b"' not in first
    assert rest and all(rest) and '"content": "b"' in rest[0] and rest[-1].endswith("data: [DONE]\n\n")
    assert len(rest) == 1  # once the choice has ended, its last token, finish and [DONE] are one write


def test_a_logprob_token_text_after_the_model_closed_is_the_streamed_text(gemma_path):
    """Shutting down closes the model while a stream's last tokens may still go out: their
    logprob entries take the text the stream released instead of failing the stream."""
    with ri.load_model(gemma_path, parallel_slots=1, context_len=256) as model:
        runtime = Runtime(ServeSettings(), model=model)
        [hello, comma] = model.tokenize("Hello,", add_special=False)
        [end_of_turn] = model.tokenize("<end_of_turn>", add_special=False)
        token = ri.Token(hello, "Hel", -0.5, ((hello, -0.5), (comma, -2.0), (end_of_turn, -3.0)))
        shown = [Alternative("Hello", b"Hello", -0.5), Alternative(",", b",", -2.0), Alternative("<end_of_turn>", b"<end_of_turn>", -3.0)]
        assert runtime.logprob_entry(token) == LogprobEntry(shown[0], tuple(shown))  # a control token by its own text
        model.close()
        assert runtime.logprob_entry(token) == LogprobEntry(Alternative("Hel", b"Hel", -0.5))


def test_logprob_shapes_keep_each_tokens_own_bytes_and_the_likelier_of_two_same_texts():
    byte = Alternative("\ufffd", b"\xe2", -1.0)  # part of a character: the text cannot hold it, the bytes do
    entry = LogprobEntry(Alternative("a", b"a", -0.5), (Alternative("a", b"a", -0.5), byte, Alternative("\ufffd", b"\x80", -2.0)))
    [chat] = chat_logprobs([entry])["content"]
    assert chat["bytes"] == [97] and [t["bytes"] for t in chat["top_logprobs"]] == [[97], [0xE2], [0x80]]
    legacy = completion_logprobs([entry, LogprobEntry(Alternative("b", b"b", -4.0), (entry.token,))], offset=3)
    assert legacy["top_logprobs"] == [{"a": -0.5, "\ufffd": -1.0}, {"a": -0.5, "b": -4.0}]  # the sampled token too
    assert legacy["tokens"] == ["a", "b"] and legacy["text_offset"] == [3, 4]


class _Offering:
    """The real model, offering the runtime only ``info`` and the methods named: what a
    backend with only those looks like to it."""

    def __init__(self, model: ri.TextModel, *methods: str) -> None:
        self._model, self._names = model, {"info", *methods}

    def __getattr__(self, name: str):
        if name not in self._names:
            raise AttributeError(name)
        return getattr(self._model, name)


def test_metrics_read_the_engine_in_one_snapshot_that_agrees_with_the_separate_reads(gemma_path):
    """``engine_snapshot`` is ``cache_occupancy``, ``engine_stats`` and ``cache_stats`` read
    in one trip (on an idle model, equal to the three calls), and ``/metrics``' engine figures
    come from it alone; a backend without it has them left out."""
    with ri.load_model(gemma_path, parallel_slots=2, context_len=256) as model:
        for _ in range(2):  # the second run reuses the first one's cached prefix
            model.generate("The capital of France is", max_tokens=3, ignore_eos=True).text()
        snapshot = model.engine_snapshot()
        # each trip to the engine thread wakes its loop, whose delivery phase adds its microseconds to emit_s
        separate = dataclasses.replace(model.engine_stats(), emit_s=snapshot.stats.emit_s)
        assert snapshot == EngineSnapshot(model.cache_occupancy(), separate, model.cache_stats())
        assert snapshot.occupancy == {} and snapshot.stats.steps > 0 and snapshot.cache.entries > 0
        figures = asyncio.run(Runtime(ServeSettings(), model=_Offering(model, "engine_snapshot")).engine_figures())
        stats, cache = snapshot.stats, snapshot.cache
        assert figures == EngineFigures(
            kv_cells_used=0, kv_cells_total=model.info.context_len, parallel_slots=2, engine_steps=stats.steps,
            engine_tokens=stats.tokens, engine_decode_s=stats.decode_s, engine_preemptions=0, prefix_entries=cache.entries,
            prefix_cells=cache.cells_held,
            prefix_hits=cache.hits, prefix_tokens_reused=cache.tokens_reused)
        without = asyncio.run(Runtime(ServeSettings(), model=_Offering(model)).engine_figures())
        assert without == EngineFigures(kv_cells_total=model.info.context_len, parallel_slots=2)
