"""Talking to llama-server: request bodies, and one SSE stream turned into stream items.

The native ``/completion`` endpoint is used (not the OpenAI one) because it can
return the token ids of every chunk (``return_tokens``) and takes a prompt as
text or ids, which the head-to-head comparison needs.  SSE is parsed by
httpx-sse; nothing here parses the wire format by hand.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from ..errors import (
    InvalidConfigError,
    PromptTooLongError,
    RocmInferError,
    ServerCrashedError,
)
from ..stream import Finished, Sink
from ..types import ClassifyResult, GenerateConfig, GenerateMetrics, Token

_STOP_REASONS = {"eos": "stop", "word": "stop", "limit": "length"}


def completion_body(prompt: str | list[int], config: GenerateConfig, classify: bool) -> dict[str, Any]:
    """Every sampling option spelled out: the server's own defaults (top_k 40, top_p 0.95,
    ...) must not apply where rocm_infer means "off".  Stop token ids have no server
    option; the reader ends the stream at one (``StreamWorker``)."""
    body: dict[str, Any] = {
        "prompt": prompt,
        "stream": True,
        "return_tokens": True,
        "cache_prompt": False,
        "n_predict": 1 if classify else config.max_tokens,
        "temperature": 0.0 if classify else config.temperature,
        "top_k": config.top_k,
        "top_p": config.top_p if 0 < config.top_p < 1 else 1.0,
        "min_p": config.min_p,
        "repeat_penalty": config.repeat_penalty,
        "repeat_last_n": config.repeat_last_n,
        "stop": list(config.stop),
        "ignore_eos": config.ignore_eos,
        "n_probs": 1 if config.logprobs else 0,
    }
    if config.seed is not None:
        body["seed"] = config.seed
    return body


class StreamWorker(threading.Thread):
    """Reads one request's SSE stream and puts ``Token``s, then ``Finished``, on its sink.

    Cancelling sets an event and closes the HTTP response, which ends the server's slot
    for that request only.  A connection that breaks is a ``ServerCrashedError``; the
    model's ``alive`` check adds the server's exit code and stderr.
    """

    def __init__(self, client: httpx.Client, body: dict[str, Any], config: GenerateConfig, sink: Sink, classify: bool, describe_crash: Any) -> None:
        super().__init__(name="rocm-infer-sse", daemon=True)
        self._client = client
        self._body = body
        self._config = config
        self._sink = sink
        self._classify = classify
        self._describe_crash = describe_crash
        self._cancelled = threading.Event()
        self._cancel_error: BaseException | None = None
        self._response: httpx.Response | None = None
        self.submitted_at = time.perf_counter()

    def cancel(self, error: BaseException | None = None) -> None:
        """End the request; ``error`` (e.g. the model closing) is what its stream raises."""
        self._cancel_error = error
        self._cancelled.set()
        response = self._response
        if response is not None:
            response.close()

    def run(self) -> None:
        generated = 0
        first_at = last_at = 0.0
        reason = "stop"
        error: BaseException | None = None
        prompt_tokens = 0
        try:
            with connect_sse(self._client, "POST", "/completion", json=self._body) as source:
                self._response = source.response
                if source.response.status_code != 200:
                    source.response.read()
                    raise http_error(source.response)
                for event in source.iter_sse():
                    if self._cancelled.is_set():
                        reason = "cancelled"
                        break
                    data = json.loads(event.data)
                    if "error" in data:
                        raise RocmInferError(f"llama-server: {data['error']}")
                    prompt_tokens = data.get("tokens_evaluated", prompt_tokens)
                    ids = data.get("tokens") or []
                    now = time.perf_counter()
                    if ids and not first_at:
                        first_at = now
                    if self._classify and ids:
                        self._sink.put(ClassifyResult(ids[0], data.get("content", ""), None))
                        break
                    stop_hit = next((i for i, t in enumerate(ids) if t in self._config.stop_tokens), None)
                    emitted = ids if stop_hit is None else ids[:stop_hit]
                    for k, token in enumerate(emitted):
                        text = data.get("content", "") if k == len(emitted) - 1 and stop_hit is None else ""
                        self._sink.put(Token(token, text, _logprob(data) if self._config.logprobs else None))
                        generated += 1
                        last_at = now
                    if stop_hit is not None:
                        reason = "stop"
                        break
                    if data.get("stop"):
                        reason = _STOP_REASONS.get(data.get("stop_type", ""), "stop")
                        break
        except RocmInferError as exc:
            reason, error = "error", exc
        except (httpx.TransportError, SSEError) as exc:
            if self._cancelled.is_set():
                reason = "cancelled"
            else:
                reason, error = "error", self._describe_crash(exc)
        metrics = GenerateMetrics(
            prompt_tokens=prompt_tokens,
            generated_tokens=generated,
            time_to_first_token_s=first_at - self.submitted_at if first_at else 0.0,
            prefill_s=first_at - self.submitted_at if first_at else 0.0,
            decode_s=last_at - first_at if first_at else 0.0,
            total_s=time.perf_counter() - self.submitted_at,
        )
        if reason == "cancelled" and self._cancel_error is not None:
            error = self._cancel_error
        self._sink.put(Finished(reason, metrics, error))  # type: ignore[arg-type]


def _logprob(data: dict[str, Any]) -> float | None:
    probs = data.get("completion_probabilities") or []
    return probs[-1].get("logprob") if probs else None


def http_error(response: httpx.Response) -> RocmInferError:
    try:
        message = response.json().get("error", {}).get("message", response.text)
    except (json.JSONDecodeError, AttributeError):
        message = response.text
    if "exceed" in message.lower() and "context" in message.lower():
        return PromptTooLongError(f"llama-server: {message}")
    if response.status_code == 400:
        return InvalidConfigError(f"llama-server: {message}")
    if response.status_code == 401:
        return RocmInferError(f"llama-server refused the API key: {message}")
    return ServerCrashedError(f"llama-server answered {response.status_code}: {message}")
