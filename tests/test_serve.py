"""`rocm-infer serve`: a real server process on loopback, the real Gemma model, the official
`openai` client.  Gemma 3 270M is a base model, so chat answers are junk, but valid."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rocm_infer.bench.servers import ready_url

openai = pytest.importorskip("openai")

KEY = "test-serve-key"
REQUEST_LIMIT = 64 * 1024  # the module's server refuses bodies past this (the largest test body is ~36 KB)
PROMPT = "The capital of France is"
MESSAGES = [{"role": "user", "content": "Name three colours."}]


class Served:
    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def metrics(self) -> dict[str, float]:
        """The unlabelled samples of /metrics, plus requests_total and generations_total by label."""
        text = httpx.get(f"{self.url}/metrics").text
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name.removeprefix("rocm_infer_")] = float(value)
        return samples

    def wait_idle(self) -> dict[str, float]:
        """Poll /metrics until nothing runs or waits (bounded by a count, not asserted on time)."""
        for _ in range(600):
            sample = self.metrics()
            if sample["requests_running"] == 0 and sample["requests_waiting"] == 0 and sample["kv_cache_cells_used"] == 0:
                return sample
            time.sleep(0.1)
        return sample


def _start(tmp: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp / "serve.log"
    process = subprocess.Popen([sys.executable, "-m", "rocm_infer.cli", "serve", "--port", "0", *args],
                               stdout=subprocess.DEVNULL, stderr=log.open("wb"), env={**os.environ, **(env or {})})
    return process, log


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    process, log = _start(tmp_path_factory.mktemp("serve"), "--log-level", "warning", "--max-request-bytes", str(REQUEST_LIMIT),
                          env={"ROCM_INFER_API_KEY": KEY})
    try:
        yield Served(ready_url(process, log), process, log)
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def model_id(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def test_models_list(client, model_id):
    models = client.models.list()
    assert [m.id for m in models.data] == [model_id]
    assert models.data[0].owned_by == "rocm-infer"
    assert client.models.retrieve(model_id).id == model_id


def warm(client, model_id: str, prompt: str | None = None, messages: list | None = None) -> None:
    """Put the prompt in the prefix cache first, so the runs a test compares all reuse the
    same cached prefix: a prompt computed fresh in one prefill and one resumed from the
    cache take different kernels for its last token, and their logits differ slightly."""
    if messages is not None:
        client.chat.completions.create(model=model_id, messages=messages, max_tokens=1)
    else:
        client.completions.create(model=model_id, prompt=prompt, max_tokens=1)


def test_seed_reproducibility(client, model_id):
    """temperature > 0 with a seed gives the same text twice."""
    warm(client, model_id, messages=MESSAGES)
    warm(client, model_id, prompt=PROMPT)
    def sample() -> str:
        return client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=16, temperature=1.0, top_p=0.95,
                                              seed=1234, extra_body={"ignore_eos": True}).choices[0].message.content

    assert sample() == sample()
    texts = {client.completions.create(model=model_id, prompt=PROMPT, max_tokens=16, temperature=1.0, seed=s).choices[0].text
             for s in (7, 7)}
    assert len(texts) == 1


def test_stop_string(client, model_id):
    warm(client, model_id, prompt="1, 2, 3, 4,")
    full = client.completions.create(model=model_id, prompt="1, 2, 3, 4,", max_tokens=16, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stop = full[6:9]
    assert len(stop) == 3, full
    cut = client.completions.create(model=model_id, prompt="1, 2, 3, 4,", max_tokens=16, temperature=0, stop=[stop, "never"])
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model=model_id, prompt="1, 2, 3, 4,", max_tokens=16, temperature=0, stop=stop,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks) == cut.choices[0].text


def test_completion_not_streamed_and_streamed_agree(client, model_id):
    warm(client, model_id, prompt=PROMPT)
    whole = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=12, temperature=0,
                                      extra_body={"ignore_eos": True})
    choice = whole.choices[0]
    assert whole.object == "text_completion" and choice.index == 0
    assert choice.finish_reason == "length" and choice.text
    assert whole.usage.completion_tokens == 12 and whole.usage.prompt_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 12
    chunks = list(client.completions.create(model=model_id, prompt=PROMPT, max_tokens=12, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_completion_of_several_prompts_and_token_ids(client, model_id):
    ids_prompt = [2, 818, 5279, 529]  # token ids are taken as they are
    answer = client.completions.create(model=model_id, prompt=[PROMPT, "Once upon a time"], n=2, max_tokens=4,
                                       temperature=0.8, seed=3)
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    assert answer.usage.completion_tokens <= 16
    by_ids = client.completions.create(model=model_id, prompt=ids_prompt, max_tokens=4, temperature=0)
    assert by_ids.usage.prompt_tokens == len(ids_prompt)


def test_logit_bias_forces_and_bans_tokens(client, model_id, model):
    [word] = model.tokenize(" banana", add_special=False)
    forced = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=3, temperature=0, logit_bias={str(word): 100})
    assert forced.choices[0].text == model.detokenize([word] * 3)
    [first] = list(model.generate(PROMPT, max_tokens=1))  # what greedy decoding picks first
    banned = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=1, temperature=0, logit_bias={str(first.id): -100})
    assert banned.choices[0].text != model.detokenize([first.id])


def test_chat_not_streamed(client, model_id):
    answer = client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=8)
    choice = answer.choices[0]
    assert answer.object == "chat.completion"
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 0 <= answer.usage.completion_tokens <= 8


def test_chat_streamed_with_usage(client, model_id):
    chunks = list(client.chat.completions.create(model=model_id, messages=MESSAGES, max_completion_tokens=10, stream=True,
                                                 stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert 0 < len(content) <= 10
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [f.choices[0].finish_reason for f in finals] == ["length"]
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens == 10 and usage.usage.prompt_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_n_choices(client, model_id):
    one = client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=6)
    three = client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=6, n=3, temperature=1.0, seed=11)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert three.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counts once
    assert three.usage.completion_tokens <= 18
    chunks = list(client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=6, n=3, temperature=1.0,
                                                 seed=11, stream=True))
    assert {c.choices[0].index for c in chunks if c.choices and c.choices[0].delta.content} <= {0, 1, 2}
    ends = sorted(c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason)
    assert ends == [0, 1, 2]


def test_logprobs(client, model_id):
    chat = client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=5, logprobs=True,
                                          extra_body={"ignore_eos": True})
    entries = chat.choices[0].logprobs.content
    assert len(entries) == 5 and chat.usage.completion_tokens == 5
    assert all(e.logprob <= 0 and e.top_logprobs == [] and isinstance(e.token, str) for e in entries)
    legacy = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=0,
                                       extra_body={"ignore_eos": True})
    lp = legacy.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == 5
    assert all(v <= 0 for v in lp.token_logprobs)
    assert "".join(lp.tokens) == legacy.choices[0].text  # greedy Latin text: pieces are the text
    streamed = [c for c in client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=5, logprobs=True,
                                                          stream=True, extra_body={"ignore_eos": True})
                if c.choices and c.choices[0].logprobs]
    assert sum(len(c.choices[0].logprobs.content) for c in streamed) == 5


def test_top_logprobs(client, model_id):
    """The step's most likely tokens, most likely first; greedy picks the first of them."""
    chat = client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=4, temperature=0, logprobs=True,
                                          top_logprobs=3, extra_body={"ignore_eos": True})
    for entry in chat.choices[0].logprobs.content:
        alternatives = [a.logprob for a in entry.top_logprobs]
        assert len(alternatives) == 3 and alternatives == sorted(alternatives, reverse=True)
        assert entry.top_logprobs[0].token == entry.token and abs(alternatives[0] - entry.logprob) < 1e-4
    legacy = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=3, temperature=0, logprobs=2,
                                       stream=True, extra_body={"ignore_eos": True})
    tops = [c.choices[0].logprobs.top_logprobs[0] for c in legacy if c.choices and c.choices[0].logprobs]
    # greedy: the sampled token is the first of the two, so each map holds exactly two
    assert len(tops) == 3 and all(len(top) == 2 and all(v <= 0 for v in top.values()) for top in tops)


def test_a_body_that_is_not_json_is_a_400_that_says_so(served):
    answer = httpx.post(f"{served.url}/v1/completions", content=b'{not json', headers={"Authorization": f"Bearer {KEY}",
                                                                                      "Content-Type": "application/json"})
    error = answer.json()["error"]
    assert answer.status_code == 400 and "not valid JSON" in error["message"] and error["param"] is None


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    """A body httpx sends chunked, with no Content-Length."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_a_body_past_the_limit_is_413_and_the_model_keeps_serving(served, client, model_id):
    """Refused by its Content-Length, and counted as it arrives when it has none (chunked);
    a chunked body within the limit is served as before."""
    url, headers = f"{served.url}/v1/completions", {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    before = served.metrics()
    huge = json.dumps({"model": model_id, "prompt": "hello " * REQUEST_LIMIT, "max_tokens": 1}).encode()
    for answer in (httpx.post(url, content=huge, headers=headers), httpx.post(url, content=_pieces(huge, 4096), headers=headers)):
        error = answer.json()["error"]
        assert answer.status_code == 413, answer.text
        assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"
        assert str(REQUEST_LIMIT) in error["message"]
    small = json.dumps({"model": model_id, "prompt": PROMPT, "max_tokens": 2, "ignore_eos": True}).encode()
    chunked = httpx.post(url, content=_pieces(small, 8), headers=headers)
    assert chunked.status_code == 200 and chunked.json()["usage"]["completion_tokens"] == 2
    again = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=2, extra_body={"ignore_eos": True})
    assert again.usage.completion_tokens == 2
    refused = 'requests_total{endpoint="completions",code="413"}'
    assert served.metrics().get(refused, 0) == before.get(refused, 0) + 2


@pytest.mark.parametrize("kwargs, param", [
    ({"temperature": -1}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"n": 0}, "n"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3.0}, "frequency_penalty"),
    ({"top_logprobs": 3}, "top_logprobs"),  # without logprobs: true
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}, "response_format"),
    ({"logit_bias": {"12": 101}}, "logit_bias"),
    ({"logit_bias": {"hello": 5}}, "logit_bias"),
    ({"logit_bias": {"12": False}}, "logit_bias.12"),  # llama-server's ban is not OpenAI's: refused, not read as 0
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0"),
    ({"max_tokens": True}, "max_tokens"),
    ({"stop": [f"s{i}" for i in range(65)]}, "stop"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content"),
])
def test_bad_parameters_give_openai_errors(client, model_id, kwargs, param):
    options = {"model": model_id, "messages": MESSAGES, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**options)
    error = caught.value.body
    assert caught.value.status_code == 400
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_json_schema_output_parses_and_validates(client, model_id):
    """Streamed and not, chat and completions, greedy and sampled: every answer is JSON that
    the schema accepts (the mask holds even for a base model)."""
    import jsonschema
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}, "count": {"type": "integer", "minimum": 0,
              "maximum": 9}, "names": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2}},
              "required": ["colour", "count", "names"], "additionalProperties": False}
    response_format = {"type": "json_schema", "json_schema": {"name": "colours", "schema": schema, "strict": True}}
    answers = [choice.message.content for choice in client.chat.completions.create(
        model=model_id, messages=MESSAGES, max_tokens=64, n=2, temperature=0.8, seed=1, response_format=response_format).choices]
    chunks = client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=64, temperature=0, stream=True,
                                            response_format=response_format)
    answers.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
    answers.append(client.completions.create(model=model_id, prompt="Colours as JSON:", max_tokens=64, temperature=0,
                                             extra_body={"response_format": response_format}).choices[0].text)
    for answer in answers:
        jsonschema.validate(json.loads(answer), schema)


def test_json_object_output_is_an_object(client, model_id):
    answer = client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=48, temperature=0,
                                            response_format={"type": "json_object"})
    assert answer.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(answer.choices[0].message.content), dict)


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert caught.value.body["code"] == "model_not_found"


def test_prompt_past_the_context_is_400(client, model_id):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=model_id, prompt="hello " * 6000, max_tokens=4)
    assert caught.value.body["code"] == "context_length_exceeded"


def test_api_key_required(served, model_id):
    for key in ("wrong-key", None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        answer = httpx.post(f"{served.url}/v1/chat/completions", json={"messages": MESSAGES}, headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{served.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(f"{served.url}/health").status_code == 200  # probes need no key


def test_streaming_disconnect_frees_the_request(served, model_id):
    before = served.metrics()
    body = {"model": model_id, "messages": MESSAGES, "max_tokens": 3000, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        events = response.iter_lines()
        seen = [line for line, _ in zip(events, range(8)) if line.startswith("data:")]
        assert len(seen) >= 3
        assert served.metrics()["requests_running"] == 1
    after = served.wait_idle()
    assert after["requests_running"] == 0 and after["kv_cache_cells_used"] == 0
    cancelled = 'generations_total{finish_reason="cancelled"}'
    assert after.get(cancelled, 0) == before.get(cancelled, 0) + 1
    assert after["generation_tokens_total"] - before["generation_tokens_total"] < 3000


def test_non_streamed_disconnect_frees_the_request(served, model_id):
    before = served.metrics()
    body = {"model": model_id, "prompt": PROMPT, "max_tokens": 3000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up long before 3000 tokens
        httpx.post(f"{served.url}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                   timeout=httpx.Timeout(10.0, read=2.0))
    after = served.wait_idle()
    assert after["kv_cache_cells_used"] == 0
    cancelled = 'generations_total{finish_reason="cancelled"}'
    assert after.get(cancelled, 0) == before.get(cancelled, 0) + 1
    assert after.get('requests_total{endpoint="completions",code="499"}', 0) >= 1


def test_concurrent_requests_share_decode_steps(served, model_id):
    """No lock around the model: 6 concurrent requests of 16 tokens take far fewer engine
    steps than 6 x 16 (each step carries a token of every running request)."""
    before = served.metrics()

    async def run() -> list[int]:
        async with openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key=KEY, max_retries=0) as aclient:
            answers = await asyncio.gather(*(aclient.completions.create(model=model_id, prompt=f"{PROMPT} {i}", max_tokens=16,
                                                                        extra_body={"ignore_eos": True}) for i in range(6)))
        return [a.usage.completion_tokens for a in answers]

    assert asyncio.run(run()) == [16] * 6
    after = served.metrics()
    assert after["engine_steps_total"] - before["engine_steps_total"] < 6 * 16


def test_metrics_are_prometheus_text(served):
    text = httpx.get(f"{served.url}/metrics").text
    for name in ("requests_total", "prompt_tokens_total", "generation_tokens_total", "time_to_first_token_seconds",
                 "requests_waiting", "kv_cache_cells_used"):
        assert f"# TYPE rocm_infer_{name} " in text
    assert 'rocm_infer_time_to_first_token_seconds_bucket{le="+Inf"}' in text


def test_a_model_that_cannot_load_stops_the_server(tmp_path):
    process, log = _start(tmp_path, str(tmp_path / "missing.gguf"))
    assert process.wait(timeout=300) == 1
    assert "ModelNotFoundError" in log.read_text()


def test_a_stream_live_at_shutdown_ends_with_an_error_event(tmp_path):
    """SIGTERM closes the model before uvicorn's graceful wait, so a stream still running
    ends with its error event and [DONE] (it was cut mid-chunk once the wait ran out), and
    the server exits."""
    # the whole trained context for one stream: no build ends it by length before the close
    process, log = _start(tmp_path, "--log-level", "warning", "--ctx", "32768", "--parallel", "1")
    try:
        url = ready_url(process, log)
        body = {"prompt": "Once upon a time", "max_tokens": 100_000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as response:
            events = []
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                if len(events) == 3:  # streaming: now stop the server under it
                    process.send_signal(signal.SIGTERM)
        assert events[-1] == "[DONE]"
        assert "error" in json.loads(events[-2]) and "closed" in events[-2]
        assert process.wait(timeout=120) in (0, -signal.SIGTERM)  # uvicorn raises the signal again once it has shut down
    finally:
        process.kill()
        process.wait(timeout=60)
