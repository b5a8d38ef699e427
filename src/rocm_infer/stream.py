"""The caller's side of one request: a token stream fed through a reply queue.

The producer (the engine thread, or the server client) owns the request; the
caller only sees this object.  It reads items from the request's own queue, so
concurrent callers never see each other's tokens or numbers.  A ``Finished``
item ends the stream and carries the request's metrics and error; an error is
raised here, in the caller's thread.

A consumer that goes away cancels the request at once, whatever way it goes:
breaking out of ``for``/``async for`` drops the stream and its finalizer cancels
the request (an ``async for`` never calls ``aclose`` on a plain async iterator);
a task cancelled while it waits for a token cancels it; so does a producer that
finds the consumer's event loop closed.  Cancelling only sets the producer's
flag (thread-safe, never blocks), so it is safe from a finalizer.  A stream kept
in a variable should still be closed (``close()``/``aclose()`` or ``with``),
which also waits until the request's KV cells are free.
"""

from __future__ import annotations

import asyncio
import queue
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import RequestTimeoutError
from .types import FinishReason, GenerateMetrics, Token

# How long close()/cancel() wait for the producer to confirm the request is gone.
CANCEL_CONFIRM_S = 10.0


@dataclass(frozen=True)
class Finished:
    """The last item of every stream."""

    reason: FinishReason
    metrics: GenerateMetrics
    error: BaseException | None = None


class Sink(Protocol):
    """Where a producer puts a request's items; thread-safe."""

    def put(self, item: Any) -> None: ...


class AsyncSink:
    """A sink for an asyncio consumer: items cross into the event loop with
    ``call_soon_threadsafe``, so no executor thread waits per stream.  Once the loop
    is closed nobody can listen any more, and ``on_loop_closed`` (the request's cancel)
    is called, so the producer stops at once instead of running to ``max_tokens``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.on_loop_closed: Callable[[], None] | None = None

    def put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            if self.on_loop_closed is not None and not isinstance(item, Finished):
                self.on_loop_closed()


def _cancel_quietly(cancel: Callable[[], None]) -> None:
    try:
        cancel()
    except Exception:  # interpreter shutdown: nothing left to cancel
        pass


class _Base:
    def __init__(self, cancel: Callable[[], None], timeout: float | None, on_finish: Callable[[Finished], None]) -> None:
        self._cancel = cancel
        self._on_finish = on_finish
        self._deadline = time.monotonic() + timeout if timeout else None
        self.finished: Finished | None = None
        # Cancels the request when the stream is dropped unfinished (``break``, garbage
        # collection, interpreter exit); holds ``cancel`` only, never the stream.
        self._finalizer = weakref.finalize(self, _cancel_quietly, cancel)

    @property
    def metrics(self) -> GenerateMetrics | None:
        """This request's numbers, once it has finished."""
        return self.finished.metrics if self.finished else None

    @property
    def error(self) -> BaseException | None:
        return self.finished.error if self.finished else None

    @property
    def finish_reason(self) -> FinishReason | None:
        return self.finished.reason if self.finished else None

    def _wait_s(self) -> float | None:
        """How long to wait for the next item: a little past the request's deadline,
        so a producer that hangs still ends the request."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic()) + 1.0

    def _finish(self, item: Finished) -> None:
        self.finished = item
        self._finalizer.detach()
        self._on_finish(item)

    def _timed_out(self) -> Finished:
        self._cancel()
        return Finished("error", GenerateMetrics(), RequestTimeoutError("the request produced nothing before its timeout"))


class TokenStream(_Base):
    """Iterate for ``Token``s; ``metrics``, ``error`` and ``finish_reason`` once done."""

    def __init__(self, sink: queue.SimpleQueue[Any], cancel: Callable[[], None], timeout: float | None, on_finish: Callable[[Finished], None]) -> None:
        super().__init__(cancel, timeout, on_finish)
        self._queue = sink

    def __iter__(self) -> Iterator[Token]:
        return self

    def __next__(self) -> Token:
        if self.finished is not None:
            raise StopIteration
        try:
            item = self._queue.get(timeout=self._wait_s())
        except queue.Empty:
            item = self._timed_out()
        if isinstance(item, Finished):
            self._finish(item)
            if item.error is not None:
                raise item.error
            raise StopIteration
        return item

    def text(self) -> str:
        """Consume the rest of the stream and return its text."""
        return "".join(tok.text for tok in self)

    def cancel(self) -> None:
        """End this request and wait (bounded) until its KV cells are freed."""
        if self.finished is not None:
            return
        self._cancel()
        deadline = time.monotonic() + CANCEL_CONFIRM_S
        while self.finished is None and time.monotonic() < deadline:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if isinstance(item, Finished):
                self._finish(item)

    close = cancel

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTokenStream(_Base):
    """``async for tok in model.agenerate(...)``; the event loop is never blocked."""

    def __init__(self, sink: AsyncSink, cancel: Callable[[], None], timeout: float | None, on_finish: Callable[[Finished], None]) -> None:
        super().__init__(cancel, timeout, on_finish)
        self._queue = sink.queue
        sink.on_loop_closed = cancel

    def __aiter__(self) -> AsyncIterator[Token]:
        return self

    async def __anext__(self) -> Token:
        if self.finished is not None:
            raise StopAsyncIteration
        try:
            item = await asyncio.wait_for(self._queue.get(), self._wait_s())
        except asyncio.TimeoutError:
            item = self._timed_out()
        except asyncio.CancelledError:  # the task waiting for the next token is gone
            self._cancel()
            raise
        if isinstance(item, Finished):
            self._finish(item)
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    async def text(self) -> str:
        return "".join([tok.text async for tok in self])

    async def aclose(self) -> None:
        """End this request and wait (bounded) until its KV cells are freed."""
        if self.finished is not None:
            return
        self._cancel()
        try:
            while self.finished is None:
                item = await asyncio.wait_for(self._queue.get(), CANCEL_CONFIRM_S)
                if isinstance(item, Finished):
                    self._finish(item)
        except asyncio.TimeoutError:
            pass

    def cancel(self) -> None:
        """Ask for the request to end without waiting (use ``aclose`` to wait)."""
        self._cancel()

    async def __aenter__(self) -> AsyncTokenStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

