"""Talking to llama-server: request bodies, and one SSE stream turned into stream items.

The native ``/completion`` endpoint is used (not the OpenAI one) because it can
return the token ids of every chunk (``return_tokens``) and takes a prompt as
text or ids, which the head-to-head comparison needs.  SSE is parsed by
httpx-sse; nothing here parses the wire format by hand.  ``ChunkReader`` turns
the server's chunks into the ``Token``s the in-process engine would emit.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
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
from ..types import ClassifyResult, FinishReason, GenerateConfig, GenerateMetrics, Token

_STOP_REASONS: dict[str, FinishReason] = {"eos": "stop", "word": "stop", "limit": "length"}
UNKNOWN_ID = -1  # a token llama-server generated but never sent (see ``ChunkReader``)

# ``ids_for(char, count)``: the ids of the ``count`` single-byte tokens that spell ``char``, or None
ByteIds = Callable[[str, int], "list[int] | None"]


def completion_body(prompt: str | list[int], config: GenerateConfig, classify: bool) -> dict[str, Any]:
    """Every sampling option spelled out: the server's own defaults (top_k 40, top_p 0.95,
    ...) must not apply where rocm_infer means "off".  Stop token ids have no server
    option; the reader ends the stream at one (``ChunkReader``)."""
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


class ChunkReader:
    """llama-server's ``/completion`` chunks in, the in-process engine's ``Token``s out.

    What the server does differently, and how it is undone here (tools/server/
    server-context.cpp, ``process_token``):

    - The end-of-generation token comes as its own chunk (empty text, or the text a
      possible stop string was holding back).  The in-process engine never emits it,
      so it is dropped here and its text goes to the token before it.  A token with
      empty text is therefore held back until the next chunk shows whether held-back
      text follows; tokens with text go out at once, so no visible text waits.
    - A token after which the text ends inside a UTF-8 character gets no chunk at all:
      the next complete chunk carries only its own id, but ``tokens_predicted`` counts
      every token.  The missing tokens are emitted before it, with empty text, so
      counts and positions match in-process.  Their ids are recovered exactly when the
      character is spelled by single-byte tokens (``byte_ids``: byte-fallback
      vocabularies such as Gemma's and Llama 2's); otherwise the server has sent no
      trace of them and the id is ``UNKNOWN_ID``.
    - Stop token ids have no server option: the stream ends at one, which is not emitted.
    """

    def __init__(self, config: GenerateConfig, eog_ids: frozenset[int], byte_ids: ByteIds) -> None:
        self._eog = frozenset() if config.ignore_eos else eog_ids
        self._stop_ids = frozenset(config.stop_tokens)
        self._logprobs = config.logprobs
        self._byte_ids = byte_ids
        self._pending: Token | None = None
        self._predicted = 0  # tokens the server has accounted for, sent or not
        self.generated = 0  # tokens handed out
        self.reason: FinishReason | None = None  # set once the stream has ended

    def feed(self, data: dict[str, Any]) -> list[Token]:
        """The tokens one chunk releases; sets ``reason`` when the chunk ends the stream."""
        if data.get("stop"):  # the final chunk: its text and ids were in the partials
            out = self._release()
            missing = int(data.get("tokens_predicted", self._predicted)) - self._predicted
            stop_type = data.get("stop_type", "")
            if stop_type == "limit" and missing > 0:  # cut inside a character: never sent
                out += self._count([Token(UNKNOWN_ID, "") for _ in range(missing - 1)] + [Token(UNKNOWN_ID, "\ufffd")])
            self.reason = _STOP_REASONS.get(stop_type, "stop")
            return out
        ids = data.get("tokens") or []
        if not ids:  # a progress or start chunk
            return []
        token, text = int(ids[-1]), data.get("content", "")
        predicted = int(data.get("tokens_predicted", self._predicted + 1))
        missing = [Token(i, "") for i in self._recover(text, predicted - self._predicted - 1, token)]
        self._predicted = predicted
        if token in self._stop_ids:
            self.reason = "stop"
            return self._release() + self._count(missing)
        if token in self._eog:
            if self._pending is not None:
                self._pending = Token(self._pending.id, self._pending.text + text, self._pending.logprob)
            return self._release() + self._count(missing)
        out = self._release() + self._count(missing)
        current = Token(token, text, _logprob(data) if self._logprobs else None)
        if text:
            out += self._count([current])
        else:
            self._pending = current
        return out

    def _release(self) -> list[Token]:
        pending, self._pending = self._pending, None
        return self._count([pending]) if pending is not None else []

    def _count(self, tokens: list[Token]) -> list[Token]:
        self.generated += len(tokens)
        return tokens

    def _recover(self, text: str, count: int, last: int) -> list[int]:
        if count <= 0:
            return []
        ids = self._byte_ids(text[-1], count + 1) if text else None
        if ids is not None and len(ids) == count + 1 and ids[-1] == last:
            return ids[:-1]
        return [UNKNOWN_ID] * count


class StreamWorker(threading.Thread):
    """Reads one request's SSE stream and puts ``Token``s, then ``Finished``, on its sink.

    Whatever happens on this thread, one ``finally`` puts the ``Finished`` that ends the
    caller's stream, with a ``RocmInferError`` when it did not end well; nothing can
    leave the caller waiting.  Cancelling sets an event and closes the HTTP response,
    which ends the server's slot for that request only.  A connection that breaks is a
    ``ServerCrashedError``; the model's ``describe_crash`` adds the exit code and stderr.
    """

    def __init__(
        self, client: httpx.Client, body: dict[str, Any], config: GenerateConfig, sink: Sink, classify: bool,
        describe_crash: Callable[[BaseException], RocmInferError], eog_ids: frozenset[int] = frozenset(),
        byte_ids: ByteIds | None = None,
    ) -> None:
        super().__init__(name="rocm-infer-sse", daemon=True)
        self._client = client
        self._body = body
        self._sink = sink
        self._classify = classify
        self._describe_crash = describe_crash
        self._reader = ChunkReader(config, eog_ids, byte_ids or (lambda _char, _count: None))
        self._cancelled = threading.Event()
        self._cancel_error: BaseException | None = None
        self._response: httpx.Response | None = None
        self._prompt_tokens = 0
        self._first_at = self._last_at = 0.0
        self.submitted_at = time.perf_counter()

    def cancel(self, error: BaseException | None = None) -> None:
        """End the request; ``error`` (e.g. the model closing) is what its stream raises."""
        self._cancel_error = error
        self._cancelled.set()
        response = self._response
        if response is not None:
            response.close()

    def run(self) -> None:
        reason: FinishReason = "error"
        error: BaseException | None = RocmInferError("the llama-server stream reader stopped without a result")
        try:
            reason, error = self._read(), None
        except Exception as exc:  # noqa: BLE001 - every failure becomes the stream's typed error
            reason, error = self._failure(exc)
        finally:
            self._sink.put(Finished(reason, self._metrics(), error))

    def _read(self) -> FinishReason:
        # ``Connection: close``: llama-server drops a connection after a stream, so a pooled
        # one would fail the next request with "Server disconnected" on a healthy server.
        with connect_sse(self._client, "POST", "/completion", json=self._body, headers={"Connection": "close"}) as source:
            self._response = source.response
            if self._cancelled.is_set():
                return "cancelled"
            if source.response.status_code != 200:
                source.response.read()
                raise http_error(source.response)
            for event in source.iter_sse():
                if self._cancelled.is_set():
                    return "cancelled"
                data = json.loads(event.data)
                if not isinstance(data, dict):
                    raise ValueError(f"a chunk that is not a JSON object: {event.data[:200]!r}")
                if "error" in data:
                    raise RocmInferError(f"llama-server: {data['error']}")
                self._prompt_tokens = data.get("tokens_evaluated", self._prompt_tokens)
                now = time.perf_counter()
                if data.get("tokens") and not self._first_at:
                    self._first_at = now
                if self._classify and data.get("tokens"):
                    self._sink.put(ClassifyResult(int(data["tokens"][0]), data.get("content", ""), None))
                    return "stop"
                tokens = self._reader.feed(data)
                for token in tokens:
                    self._sink.put(token)
                if tokens:
                    self._last_at = now
                if self._reader.reason is not None:
                    return self._reader.reason
        if self._cancelled.is_set():
            return "cancelled"
        raise ServerCrashedError("llama-server ended the stream without its final chunk")

    def _failure(self, exc: Exception) -> tuple[FinishReason, BaseException | None]:
        """The reason and typed error for an exception on this thread; the cause stays chained."""
        if self._cancelled.is_set():  # closing the response under the reader raises here
            return "cancelled", self._cancel_error
        if isinstance(exc, RocmInferError):
            return "error", exc
        if isinstance(exc, (httpx.TransportError, SSEError)):
            error = self._describe_crash(exc)
        elif isinstance(exc, (ValueError, KeyError, TypeError, IndexError)):  # JSON and shape errors
            error = ServerCrashedError(f"llama-server sent a reply this client cannot read: {type(exc).__name__}: {exc}")
        else:  # e.g. the HTTP client closed under the request
            error = RocmInferError(f"the request to llama-server failed: {type(exc).__name__}: {exc}")
        if error.__cause__ is None:
            error.__cause__ = exc
        return "error", error

    def _metrics(self) -> GenerateMetrics:
        first = self._first_at
        return GenerateMetrics(
            prompt_tokens=self._prompt_tokens,
            generated_tokens=self._reader.generated,
            time_to_first_token_s=first - self.submitted_at if first else 0.0,
            prefill_s=first - self.submitted_at if first else 0.0,
            decode_s=max(0.0, self._last_at - first) if first else 0.0,
            total_s=time.perf_counter() - self.submitted_at,
        )


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
