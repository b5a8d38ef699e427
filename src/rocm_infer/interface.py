"""The ``Backend`` / ``TextModel`` interface every backend implements.

``TextModel`` carries what is the same for all backends: option handling
(keywords or ``config=``, validated before any work), the chat message rules,
``batch_generate`` on top of ``generate``, the bookkeeping behind ``metrics()``
and ``err()``, and the context manager.  A backend supplies how a request is
started (``_start``) and how the chat prompt is built.
"""

from __future__ import annotations

import abc
import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import InvalidConfigError, RequestTimeoutError, RocmInferError
from .stream import AsyncSink, AsyncTokenStream, Finished, Sink, TokenStream
from .types import (
    BatchResult,
    ClassifyResult,
    GenerateConfig,
    GenerateMetrics,
    LoadConfig,
    Message,
    ModelInfo,
    merge_options,
    token_ids,
)


class TextModel(abc.ABC):
    def __init__(self) -> None:
        self._last_lock = threading.Lock()
        self._last: Finished | None = None

    # ---- what a backend provides -------------------------------------------------
    @property
    @abc.abstractmethod
    def info(self) -> ModelInfo: ...

    @abc.abstractmethod
    def _start(self, prompt: str | list[int], config: GenerateConfig, sink: Sink, *, classify: bool) -> Any:
        """Validate and start one request whose items go to ``sink``; return a
        callable that cancels it.  Raise typed errors before starting anything.
        A prompt is text or token ids (taken as they are, no BOS added)."""

    @abc.abstractmethod
    def _render_chat(self, messages: Sequence[Message]) -> str: ...

    @abc.abstractmethod
    def close(self) -> None:
        """End every live stream with ``ModelClosedError`` and free the model."""

    # ---- the interface ---------------------------------------------------------------
    @property
    def model_type(self) -> str:
        return self.info.architecture

    def generate(self, prompt: str | Sequence[int], config: GenerateConfig | None = None, **options: Any) -> TokenStream:
        return self._stream(self._check_prompt(prompt), merge_options(GenerateConfig, config, options))

    def chat(self, messages: Sequence[Message | dict[str, Any]], config: GenerateConfig | None = None, **options: Any) -> TokenStream:
        config = merge_options(GenerateConfig, config, options)
        return self._stream(self._render_chat(_messages(messages)), config)

    def agenerate(self, prompt: str | Sequence[int], config: GenerateConfig | None = None, **options: Any) -> AsyncTokenStream:
        """Call from a coroutine: ``async for tok in model.agenerate(...)``."""
        return self._astream(self._check_prompt(prompt), merge_options(GenerateConfig, config, options))

    def achat(self, messages: Sequence[Message | dict[str, Any]], config: GenerateConfig | None = None, **options: Any) -> AsyncTokenStream:
        config = merge_options(GenerateConfig, config, options)
        return self._astream(self._render_chat(_messages(messages)), config)

    async def astart_generate(self, prompt: str | Sequence[int], config: GenerateConfig | None = None, **options: Any) -> AsyncTokenStream:
        """``agenerate`` whose prompt work runs on a worker thread: ``stream = await
        model.astart_generate(...)``.  For servers and other event loops with many clients:
        tokenizing a 20k-token prompt takes ~30 ms on the 2-core VM, compiling a schema ~1 ms,
        the llama_server backend's chat template an HTTP call, and meanwhile every other
        stream on the loop would wait.  Errors raise at the ``await``; a caller cancelled
        meanwhile leaves nothing running."""
        config = merge_options(GenerateConfig, config, options)
        return await self._astart(lambda: self._check_prompt(prompt), config)

    async def astart_chat(self, messages: Sequence[Message | dict[str, Any]], config: GenerateConfig | None = None,
                          **options: Any) -> AsyncTokenStream:
        """``achat`` whose template and tokenizing run on a worker thread (``astart_generate`` says why)."""
        config = merge_options(GenerateConfig, config, options)
        checked = _messages(messages)
        return await self._astart(lambda: self._render_chat(checked), config)

    def classify(self, prompts: Sequence[str | Sequence[int]], config: GenerateConfig | None = None, **options: Any) -> list[ClassifyResult]:
        """The most likely next token of each prompt (prefill only, all prompts batched
        together).  A prompt that fails validation raises, and the ones already started
        are cancelled, so no work is left running for a call that failed."""
        config = merge_options(GenerateConfig, config, options)
        prompts = [self._check_prompt(p) for p in _prompt_list(prompts)]
        sinks: list[queue.SimpleQueue[Any]] = []
        cancels = []
        try:
            for prompt in prompts:
                sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
                cancels.append(self._start(prompt, config, sink, classify=True))
                sinks.append(sink)
        except RocmInferError:
            for cancel in cancels:
                cancel()
            raise
        # a little past the timeout, as streams wait: a producer that hangs still ends the call
        deadline = time.monotonic() + config.timeout + 1.0 if config.timeout else None
        results = []
        try:
            for sink in sinks:
                item = _next_item(sink, deadline, config.timeout)
                if isinstance(item, Finished):  # it ended before producing a result
                    self._record(item)
                    raise item.error or RocmInferError(f"classify ended early ({item.reason})")
                self._record(_next_item(sink, deadline, config.timeout))
                results.append(item)
        except BaseException as exc:  # nothing is left running for a call that failed
            for cancel in cancels:
                cancel()
            if isinstance(exc, RequestTimeoutError):  # err() and metrics() tell of this call
                self._record(Finished("error", GenerateMetrics(), exc))
            raise
        return results

    def batch_generate(self, prompts: Sequence[str | Sequence[int]], config: GenerateConfig | None = None, **options: Any) -> list[BatchResult]:
        """Generate for every prompt at once; results in prompt order.  A failure is
        that item's ``err``, never an exception for the whole batch."""
        config = merge_options(GenerateConfig, config, options)
        streams: list[TokenStream | RocmInferError] = []
        for prompt in _prompt_list(prompts):
            try:
                streams.append(self._stream(self._check_prompt(prompt), config))
            except RocmInferError as exc:
                streams.append(exc)
        results = []
        for stream in streams:
            if isinstance(stream, RocmInferError):
                results.append(BatchResult(finish_reason="error", err=stream))
                continue
            tokens, text = [], []
            try:
                for token in stream:
                    tokens.append(token.id)
                    text.append(token.text)
            except RocmInferError:
                pass  # recorded on the stream
            results.append(BatchResult("".join(text), tuple(tokens), stream.finish_reason, stream.metrics, stream.error))
        return results

    def metrics(self) -> GenerateMetrics | None:
        """Metrics of the last finished operation (per-request numbers are on each stream)."""
        with self._last_lock:
            return self._last.metrics if self._last else None

    def err(self) -> BaseException | None:
        """The error that ended the last finished operation, None if it ended well."""
        with self._last_lock:
            return self._last.error if self._last else None

    def __enter__(self) -> TextModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare_structured_output(self) -> None:
        """Do now the one-time work of the first structured-output request, so that
        request does not pay it (and an async caller's event loop is not held for it):
        in-process, llguidance's view of the vocabulary (about 1.5 s for Gemma 3's 262k
        tokens on the 2-core VM).  ``rocm-infer serve`` calls it at start-up.  A backend
        with nothing to prepare (llama-server, openai) does nothing, closed or not; the
        in-process one raises ``ModelClosedError`` once closed."""

    # ---- shared plumbing ---------------------------------------------------------------
    def _record(self, finished: Finished) -> None:
        with self._last_lock:
            self._last = finished

    def _stream(self, prompt: str | list[int], config: GenerateConfig) -> TokenStream:
        sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
        cancel = self._start(prompt, config, sink, classify=False)
        return TokenStream(sink, cancel, config.timeout, self._record)

    def _astream(self, prompt: str | list[int], config: GenerateConfig) -> AsyncTokenStream:
        sink = AsyncSink(self._running_loop())
        cancel = self._start(prompt, config, sink, classify=False)
        return AsyncTokenStream(sink, cancel, config.timeout, self._record)

    async def _astart(self, prompt: Callable[[], str | list[int]], config: GenerateConfig) -> AsyncTokenStream:
        sink = AsyncSink(self._running_loop())

        def start() -> Callable[[], None]:
            cancel = self._start(prompt(), config, sink, classify=False)
            # at once, not when the stream is made (which sets it again, for ``_astream``'s
            # sake): a loop closed meanwhile never makes the stream
            sink.on_loop_closed = cancel
            return cancel

        cancel = await _Opening(start).started()
        return AsyncTokenStream(sink, cancel, config.timeout, self._record)

    @staticmethod
    def _running_loop() -> asyncio.AbstractEventLoop:
        try:
            return asyncio.get_running_loop()
        except RuntimeError as exc:
            raise InvalidConfigError("agenerate() and achat() (and their astart_ forms) are called from a coroutine "
                                     "(async def), inside a running event loop; use generate() and chat() elsewhere") from exc

    @staticmethod
    def _check_prompt(prompt: Any) -> str | list[int]:
        if isinstance(prompt, str):
            _require_utf8(prompt, "the prompt")
            return prompt
        if not isinstance(prompt, (Sequence, np.ndarray)) or isinstance(prompt, (bytes, bytearray)):
            raise InvalidConfigError(f"a prompt must be a string or a list of token ids, not {type(prompt).__name__}")
        return token_ids(prompt, "a prompt's token ids")  # (the backend knows the vocabulary's bound)


class Backend(abc.ABC):
    """A way to run models; registered by ``name`` in the registry."""

    name: str

    @abc.abstractmethod
    def unavailable_reason(self) -> str | None:
        """None when the backend can run here, otherwise why not and how to fix it."""

    def available(self) -> bool:
        return self.unavailable_reason() is None

    @abc.abstractmethod
    def load_model(self, path: str | None, config: LoadConfig) -> TextModel: ...


class _Opening:
    """A request started on a worker thread for a coroutine that may be cancelled while it
    waits.  Whichever comes second, the start or the cancellation, cancels the request:
    decided under a lock in either thread, so nothing depends on the event loop still
    running when the start completes (``asyncio.run`` may be tearing it down)."""

    def __init__(self, start: Callable[[], Callable[[], None]]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self._cancel: Callable[[], None] | None = None
        self._abandoned = False

    async def started(self) -> Callable[[], None]:
        """The started request's cancel callable; the start's typed error raises here."""
        work = asyncio.get_running_loop().run_in_executor(None, self._run)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            with self._lock:
                self._abandoned = True
                cancel = self._cancel
            if cancel is not None:
                cancel()
            raise

    def _run(self) -> Callable[[], None]:
        cancel = self._start()
        with self._lock:
            self._cancel = cancel
            abandoned = self._abandoned
        if abandoned:
            cancel()
        return cancel


def _messages(messages: Sequence[Message | dict[str, Any]]) -> list[Message]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidConfigError("chat takes a list of messages")
    if not messages:
        raise InvalidConfigError("chat needs at least one message")
    return [Message.coerce(m) for m in messages]


def _require_utf8(text: str, what: str) -> None:
    """A lone surrogate (``"\\ud800"``, as a lenient JSON decoder or a broken client can
    hand over) has no UTF-8 form: llama.cpp and llama-server could never see it, so it
    is refused here, for both backends, before any work starts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end]
        raise InvalidConfigError(
            f"{what} contains a lone surrogate {bad!r} at index {exc.start}: it is not valid "
            "Unicode text and has no UTF-8 form"
        ) from exc


def _prompt_list(prompts: Sequence[str | Sequence[int]]) -> list[str | Sequence[int]]:
    if isinstance(prompts, str):
        raise InvalidConfigError("pass a list of prompts, not one string")
    return list(prompts)


def _next_item(sink: queue.SimpleQueue[Any], deadline: float | None, timeout: float | None) -> Any:
    """The next item of a classify request, or ``RequestTimeoutError`` once its deadline
    has passed (a producer that hangs, e.g. a stopped llama-server, never answers)."""
    try:
        return sink.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        raise RequestTimeoutError(f"classify produced nothing before its timeout of {timeout} s") from None
