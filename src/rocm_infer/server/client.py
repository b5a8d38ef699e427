"""Talking to an HTTP server: request bodies, and one SSE stream turned into stream items.

The llama_server backend uses llama-server's native ``/completion`` endpoint (not the
OpenAI one) because it can return the token ids of every chunk (``return_tokens``) and
takes a prompt as text or ids, which the head-to-head comparison needs; the openai
backend uses ``/v1/completions`` and ``/v1/chat/completions``.  Both run through one
``StreamWorker``: only the endpoint, the body and the chunk reader differ
(``chunks.ChunkReader`` for llama-server, ``openai_chunks.OpenAIChunkReader``).  SSE is
parsed by httpx-sse; nothing here parses the wire format by hand.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import httpx
from httpx_sse import SSEError, connect_sse

from ..errors import (
    InvalidConfigError,
    ModelClosedError,
    ModelNotFoundError,
    PromptTooLongError,
    RequestTimeoutError,
    RocmInferError,
    ServerCrashedError,
)
from ..stream import Finished, Sink
from ..types import ClassifyResult, FinishReason, GenerateConfig, GenerateMetrics, Token
from .chunks import ByteIds, ChunkReader, Detokenize

_log = logging.getLogger("rocm_infer.server")


def completion_body(prompt: str | list[int], config: GenerateConfig, classify: bool, cache_prompt: bool) -> dict[str, Any]:
    """Every sampling option spelled out: the server's own defaults (top_k 40, top_p 0.95,
    ...) must not apply where rocm_infer means "off".  Stop token ids have no server
    option; the reader ends the stream at one (``chunks.ChunkReader``)."""
    body: dict[str, Any] = {
        "prompt": prompt,
        "stream": True,
        "return_tokens": True,
        "cache_prompt": cache_prompt,  # the load's prefix_cache: reuse a slot's prefix
        "n_predict": 1 if classify else config.max_tokens,
        "temperature": 0.0 if classify else config.temperature,
        "top_k": config.top_k,
        "top_p": config.top_p if 0 < config.top_p < 1 else 1.0,
        "min_p": config.min_p,
        "repeat_penalty": config.repeat_penalty,
        "repeat_last_n": config.repeat_last_n,
        "frequency_penalty": config.frequency_penalty,
        "presence_penalty": config.presence_penalty,
        "stop": list(config.stop),
        "ignore_eos": config.ignore_eos,
        "n_probs": (config.top_logprobs or 1) if config.logprobs else 0,
    }
    if config.seed is not None:
        body["seed"] = config.seed
    if config.json_schema is not None:  # llama-server turns it into its own grammar
        body["json_schema"] = json.loads(config.json_schema)
    if config.grammar is not None:
        body["grammar"] = config.grammar
    if config.logit_bias:  # llama-server's ban is ``false`` (JSON has no -inf)
        body["logit_bias"] = [[token, False if bias == -math.inf else bias] for token, bias in config.logit_bias.items()]
    return body


class Reader(Protocol):
    """What ``StreamWorker`` needs of a chunk reader: chunks (decoded JSON objects) in,
    ``Token``s out.  ``reason`` is the finish reason once the server has sent it; ``complete``
    says nothing more is expected (an OpenAI server may still send usage after it)."""

    reason: FinishReason | None
    generated: int
    prompt_tokens: int
    started: bool  # a generated token has arrived (sent on, or held back)

    def feed(self, data: dict[str, Any]) -> list[Token]: ...

    @property
    def complete(self) -> bool: ...


class ReaderThreads:
    """Daemon threads, started with the model, that run stream readers one after another.

    One thread per request (as before) made the soak's RSS climb: glibc hands each new
    thread an arena and a stack it then keeps, and over 1,500 requests at 16 at a time RSS
    rose 5.4% after the warm-up against 2.9% with one reused thread per slot (the C heap
    in use was flat in both).  All are started at once so that their number never changes
    while the model is loaded (a leak check counts threads).  Not ``ThreadPoolExecutor``:
    its threads are joined at interpreter exit, so a reader blocked on a hung server would
    hang the exit; these are daemon threads, as the per-request ones were.  With every
    thread busy, readers wait their turn in the queue."""

    def __init__(self, count: int) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name="rocm-infer-sse", daemon=True) for _ in range(max(1, count))]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue ``job``; False (and nothing queued) once ``close`` has begun."""
        with self._lock:
            if self._closed:
                return False
            self._jobs.put(job)
        return True

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()  # ``StreamWorker.run`` ends its stream whatever happens
            except BaseException:  # a fault past that (a sink that cannot take its end): keep the thread
                _log.exception("a stream reader failed after its stream ended")
            del job  # an idle thread must not keep its last request's model alive

    def close(self, wait_s: float) -> None:
        """Let the threads end once the queue is empty; wait for them up to ``wait_s``."""
        with self._lock:
            if not self._closed:
                for _ in self._threads:
                    self._jobs.put(None)
            self._closed = True
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            if thread is not threading.current_thread():  # a finalizer the GC ran on a reader
                thread.join(max(0.0, deadline - time.monotonic()))


class LiveWorkers:
    """The stream readers of one model's live requests, on ``ReaderThreads``.  Requests
    start from many threads at once, so the set is only touched under a lock; closing
    waits for all of them against one deadline, not one per request."""

    def __init__(self, threads: int) -> None:
        self._lock = threading.Lock()
        self._workers: set[StreamWorker] = set()
        self._threads = ReaderThreads(threads)

    def start(self, worker: StreamWorker, closed: Callable[[], bool]) -> None:
        with self._lock:
            self._workers = {w for w in self._workers if not w.done.is_set()}
            self._workers.add(worker)
        if not self._threads.submit(worker.run):  # closing: the cancel ends the queued stream at once
            worker.cancel(ModelClosedError("the model was closed while this request was live"))
        elif closed():  # the model was closed while this request was being set up
            worker.cancel(ModelClosedError("the model was closed while this request was live"))

    def cancel_all(self) -> None:
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.cancel(ModelClosedError("the model was closed while this request was live"))

    def release_when_dropped(self, model: object) -> None:
        """End the threads, without waiting, once ``model`` is garbage: a model dropped
        unclosed must not leave them behind.  The callback holds the threads only (not
        this object, whose live workers refer back to the model)."""
        weakref.finalize(model, self._threads.close, 0.0)

    def join_all(self, wait_s: float = 5.0) -> None:
        """Wait for every reader to end, then for the threads, against one deadline."""
        with self._lock:
            workers = list(self._workers)
        deadline = time.monotonic() + wait_s
        for worker in workers:
            worker.done.wait(max(0.0, deadline - time.monotonic()))
        self._threads.close(max(0.0, deadline - time.monotonic()))


class StreamWorker:
    """Reads one request's SSE stream and puts ``Token``s, then ``Finished``, on its sink
    (``run``, on one of ``ReaderThreads``).

    Whatever happens in ``run``, one ``finally`` puts the ``Finished`` that ends the
    caller's stream, with a ``RocmInferError`` when it did not end well; nothing can
    leave the caller waiting.  Cancelling sets an event and closes the HTTP response,
    which ends the server's slot for that request only.  A connection that breaks is a
    ``ServerCrashedError``; the model's ``describe_crash`` adds the exit code and stderr.
    """

    def __init__(
        self, client: httpx.Client, body: dict[str, Any], config: GenerateConfig, sink: Sink, classify: bool,
        describe_crash: Callable[[BaseException], RocmInferError], eog_ids: frozenset[int] = frozenset(),
        byte_ids: ByteIds | None = None, detokenize: Detokenize | None = None, *,
        path: str = "/completion", reader: Reader | None = None, who: str = "llama-server",
    ) -> None:
        self._client = client
        self._body = body
        self._sink = sink
        self._classify = classify
        self._describe_crash = describe_crash
        self._path = path
        self._who = who
        self._reader: Reader = reader or ChunkReader(config, eog_ids, byte_ids or (lambda _char, _count: None), detokenize or (lambda _ids: ""))
        self._timeout = config.timeout
        # a request with a timeout reads with one too: a server that stops answering (or was
        # never reached) cannot hold this thread past it, even before a response can be closed
        self._read_limit: httpx.Timeout | Any = httpx.Timeout(config.timeout + 2.0) if config.timeout else httpx.USE_CLIENT_DEFAULT
        self._cancelled = threading.Event()
        self._cancel_error: BaseException | None = None
        self._response: httpx.Response | None = None
        self._prompt_tokens = 0
        self._first_at = self._last_at = 0.0
        self.submitted_at = time.perf_counter()
        self.done = threading.Event()  # set once its ``Finished`` is on the sink
        self._state_lock = threading.Lock()
        self._state = "queued"  # then "running" (on a reader thread) or "ended" (cancelled while queued)

    def cancel(self, error: BaseException | None = None) -> None:
        """End the request; ``error`` (e.g. the model closing) is what its stream raises.
        A request still waiting for a reader thread ends here and now, so the caller's
        ``cancel()`` does not wait for a slot to free."""
        self._cancel_error = error
        self._cancelled.set()
        with self._state_lock:
            queued = self._state == "queued"
            if queued:
                self._state = "ended"
        if queued:
            self._end("cancelled", error)
            return
        response = self._response
        if response is not None:
            response.close()

    def _end(self, reason: FinishReason, error: BaseException | None) -> None:
        try:
            self._sink.put(Finished(reason, self._metrics(), error))
        finally:  # ``join_all`` must not wait out its deadline for a sink that failed
            self.done.set()

    def run(self) -> None:
        with self._state_lock:
            if self._state == "ended":  # cancelled while it waited: its stream has its end
                return
            self._state = "running"
        reason: FinishReason = "error"
        error: BaseException | None = RocmInferError(f"the {self._who} stream reader stopped without a result")
        try:
            reason = self._read()
            error = self._cancel_error if reason == "cancelled" else None
        except Exception as exc:  # noqa: BLE001 - every failure becomes the stream's typed error
            reason, error = self._failure(exc)
        finally:
            self._end(reason, error)

    def _read(self) -> FinishReason:
        # a reader may have waited for a thread: a timeout that passed meanwhile comes first
        if self._cancelled.is_set():
            return "cancelled"
        if self._timeout and time.perf_counter() - self.submitted_at > self._timeout:
            raise RequestTimeoutError(f"the request ran past its timeout of {self._timeout} s")
        return self._classify_once() if self._classify else self._stream()

    def _classify_once(self) -> FinishReason:
        """One token, so no stream: the whole reply carries its id even when the token ends
        inside a UTF-8 character (a stream would send no chunk for it)."""
        # no response to close on cancel: a read timeout past the request's own ends the
        # thread even when the server hangs (the caller has its RequestTimeoutError by then)
        response = self._client.post("/completion", json={**self._body, "stream": False}, headers={"Connection": "close"}, timeout=self._read_limit)
        if self._cancelled.is_set():
            return "cancelled"
        if response.status_code != 200:
            raise http_error(response, self._who)
        data = response.json()
        self._first_at = self._last_at = time.perf_counter()
        self._prompt_tokens = data.get("tokens_evaluated", 0)
        tokens = data.get("tokens") or []
        if not tokens:
            raise ServerCrashedError("llama-server returned no token for a classify request")
        self._sink.put(ClassifyResult(int(tokens[0]), data.get("content", ""), None))
        return "stop"

    def _stream(self) -> FinishReason:
        # ``Connection: close``: llama-server drops a connection after a stream, so a pooled
        # one would fail the next request with "Server disconnected" on a healthy server.
        with connect_sse(self._client, "POST", self._path, json=self._body, headers={"Connection": "close"}, timeout=self._read_limit) as source:
            self._response = source.response
            if self._cancelled.is_set():
                return "cancelled"
            if source.response.status_code != 200:
                source.response.read()
                raise http_error(source.response, self._who)
            for event in source.iter_sse():
                if self._cancelled.is_set():
                    return "cancelled"
                if event.data == "[DONE]":  # OpenAI's end of a stream (llama-server's /completion sends none)
                    break
                data = json.loads(event.data)
                if not isinstance(data, dict):
                    raise ValueError(f"a chunk that is not a JSON object: {event.data[:200]!r}")
                if "error" in data:
                    raise RocmInferError(f"{self._who}: {data['error']}")
                now = time.perf_counter()
                tokens = self._reader.feed(data)
                if self._reader.started and not self._first_at:
                    self._first_at = now
                for token in tokens:
                    self._sink.put(token)
                if tokens:
                    self._last_at = now
                if self._reader.complete:
                    return self._reader.reason  # type: ignore[return-value]
                if self._timeout and now - self.submitted_at > self._timeout:  # leaving closes the stream: the server stops
                    raise RequestTimeoutError(f"the request ran past its timeout of {self._timeout} s")
        if self._cancelled.is_set():
            return "cancelled"
        if self._reader.reason is not None:
            return self._reader.reason
        raise ServerCrashedError(f"{self._who} ended the stream without its final chunk")

    def _failure(self, exc: Exception) -> tuple[FinishReason, BaseException | None]:
        """The reason and typed error for an exception on this thread; the cause stays chained."""
        if self._cancelled.is_set():  # closing the response under the reader raises here
            return "cancelled", self._cancel_error
        if isinstance(exc, RocmInferError):
            return "error", exc
        if isinstance(exc, (httpx.TransportError, SSEError)):
            error = self._describe_crash(exc)
        elif isinstance(exc, UnicodeEncodeError):  # the request body: text with no UTF-8 form
            error = InvalidConfigError(f"the request holds text that is not valid Unicode (a lone surrogate?): {exc}")
        elif isinstance(exc, (ValueError, KeyError, TypeError, IndexError)):  # JSON and shape errors
            error = ServerCrashedError(f"{self._who} sent a reply this client cannot read: {type(exc).__name__}: {exc}")
        else:  # e.g. the HTTP client closed under the request
            error = RocmInferError(f"the request to {self._who} failed: {type(exc).__name__}: {exc}")
        if error.__cause__ is None:
            error.__cause__ = exc
        return "error", error

    def _metrics(self) -> GenerateMetrics:
        first = self._first_at
        return GenerateMetrics(
            prompt_tokens=self._prompt_tokens or self._reader.prompt_tokens,
            generated_tokens=self._reader.generated,
            time_to_first_token_s=first - self.submitted_at if first else 0.0,
            prefill_s=first - self.submitted_at if first else 0.0,
            decode_s=max(0.0, self._last_at - first) if first else 0.0,
            total_s=time.perf_counter() - self.submitted_at,
        )


def http_error(response: httpx.Response, who: str = "llama-server") -> RocmInferError:
    """An error reply (OpenAI's error shape, which llama-server uses too) as a typed error."""
    try:
        error = response.json().get("error", {})
        message = error.get("message", response.text) if isinstance(error, dict) else str(error)
        code = error.get("code") if isinstance(error, dict) else None
    except (json.JSONDecodeError, AttributeError):
        message, code = response.text, None
    lowered = message.lower()
    if code == "context_length_exceeded" or (("exceed" in lowered or "maximum context" in lowered) and "context" in lowered):
        return PromptTooLongError(f"{who}: {message}")
    if response.status_code == 400:
        return InvalidConfigError(f"{who}: {message}")
    if response.status_code == 401:
        return RocmInferError(f"{who} refused the API key: {message}")
    if response.status_code == 404:
        return ModelNotFoundError(f"{who}: {message}")
    return ServerCrashedError(f"{who} answered {response.status_code}: {message}")
