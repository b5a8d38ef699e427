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

A stream may be cancelled by one thread (or task) while another reads it: a reader
waiting for its next item then ends with ``RequestCancelledError``, and the canceller
waits for that end instead of taking the reader's items from under it (which would leave
the reader waiting forever for an end that was already taken).  A reader that is between
two items at that moment finds the stream ended, without the error.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import RequestCancelledError, RequestTimeoutError
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


class _LoopMailbox:
    """Items bound for one event loop, handed over in one loop callback per burst.

    ``call_soon_threadsafe`` per item writes the loop's wake-up pipe every time: a step
    that makes 64 tokens would wake the loop 64 times and make 64 system calls on the
    engine thread.  Items posted while a hand-over is pending join it instead, so a step
    costs the producer one list append per token and the loop one wake-up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the registry is keyed by the loop: never keep it alive
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Queue[Any], Any]] = []

    def post(self, target: asyncio.Queue[Any], item: Any) -> bool:
        """Queue ``item`` for ``target``; False when the loop is closed (nobody listens)."""
        loop = self._loop()
        if loop is None or loop.is_closed():
            return False
        with self._lock:
            self._items.append((target, item))
            if len(self._items) > 1:  # a hand-over is already scheduled: it takes this too
                return True
        try:
            loop.call_soon_threadsafe(self._hand_over)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def _hand_over(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for target, item in items:
            target.put_nowait(item)


_mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopMailbox] = weakref.WeakKeyDictionary()
_mailboxes_lock = threading.Lock()


def _mailbox(loop: asyncio.AbstractEventLoop) -> _LoopMailbox:
    with _mailboxes_lock:
        box = _mailboxes.get(loop)
        if box is None:
            box = _mailboxes[loop] = _LoopMailbox(loop)
        return box


class AsyncSink:
    """A sink for an asyncio consumer: items cross into the event loop through the loop's
    mailbox (one wake-up per burst of items, see ``_LoopMailbox``), so no executor thread
    waits per stream.  Once the loop is closed nobody can listen any more, and
    ``on_loop_closed`` (the request's cancel) is called, so the producer stops at once
    instead of running to ``max_tokens``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._mailbox = _mailbox(loop)
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.on_loop_closed: Callable[[], None] | None = None

    def put(self, item: Any) -> None:
        if not self._mailbox.post(self.queue, item) and self.on_loop_closed is not None and not isinstance(item, Finished):
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
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout if timeout else None
        self.finished: Finished | None = None
        self._cancelled_by: object = None  # the thread or task that called cancel()/close()
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

    def _finish(self, item: Finished, reader: object = None) -> Finished:
        """Record the end; a reader that is not the one who cancelled sees why it ended."""
        if item.reason == "cancelled" and item.error is None and self._cancelled_by not in (None, reader):
            item = Finished(item.reason, item.metrics, RequestCancelledError(
                "the request was cancelled (cancel() or close() was called on its stream from another thread or task)"))
        self.finished = item
        self._finalizer.detach()
        self._on_finish(item)
        return item

    def _timed_out(self) -> Finished:
        self._cancel()
        return Finished("error", GenerateMetrics(), RequestTimeoutError(f"the request ran past its timeout of {self._timeout} s"))


class TokenStream(_Base):
    """Iterate for ``Token``s; ``metrics``, ``error`` and ``finish_reason`` once done."""

    def __init__(self, sink: queue.SimpleQueue[Any], cancel: Callable[[], None], timeout: float | None, on_finish: Callable[[Finished], None]) -> None:
        super().__init__(cancel, timeout, on_finish)
        self._queue = sink
        self._reading = threading.Lock()  # held by the thread taking items off the queue
        self._ended = threading.Event()

    def __iter__(self) -> Iterator[Token]:
        return self

    def __next__(self) -> Token:
        with self._reading:
            if self.finished is not None:
                raise StopIteration
            try:
                item = self._queue.get(timeout=self._wait_s())
            except queue.Empty:
                item = self._timed_out()
            if isinstance(item, Finished):
                item = self._finish(item, threading.get_ident())
                if item.error is not None:
                    raise item.error
                raise StopIteration
            return item

    def _finish(self, item: Finished, reader: object = None) -> Finished:
        item = super()._finish(item, reader)
        self._ended.set()
        return item

    def text(self) -> str:
        """Consume the rest of the stream and return its text."""
        return "".join(tok.text for tok in self)

    def cancel(self) -> None:
        """End this request and wait (bounded) until its KV cells are freed.  From another
        thread than the one reading the stream, a reader waiting for its next item ends with
        ``RequestCancelledError``."""
        if self.finished is not None:
            return
        self._cancelled_by = threading.get_ident()
        self._cancel()
        if not self._reading.acquire(blocking=False):  # another thread is reading: it takes the end
            self._ended.wait(CANCEL_CONFIRM_S)
            return
        try:
            deadline = time.monotonic() + CANCEL_CONFIRM_S
            while self.finished is None and time.monotonic() < deadline:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if isinstance(item, Finished):
                    self._finish(item, self._cancelled_by)
        finally:
            self._reading.release()

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
        self._reader: asyncio.Task[Any] | None = None  # the task waiting in __anext__, if any
        self._ended = asyncio.Event()

    def __aiter__(self) -> AsyncIterator[Token]:
        return self

    async def __anext__(self) -> Token:
        if self.finished is not None:
            raise StopAsyncIteration
        self._reader = asyncio.current_task()
        try:
            item = await asyncio.wait_for(self._queue.get(), self._wait_s())
        except asyncio.TimeoutError:
            item = self._timed_out()
        except asyncio.CancelledError:  # the task waiting for the next token is gone
            self._cancel()
            raise
        finally:
            self._reader = None
        if isinstance(item, Finished):
            item = self._finish(item, asyncio.current_task())
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    def _finish(self, item: Finished, reader: object = None) -> Finished:
        item = super()._finish(item, reader)
        self._ended.set()
        return item

    async def text(self) -> str:
        return "".join([tok.text async for tok in self])

    def buffered(self) -> int:
        """Items delivered and not read yet (tokens, and the end): how many reads will not wait."""
        return self._queue.qsize()

    async def aclose(self) -> None:
        """End this request and wait (bounded) until its KV cells are freed.  From another
        task than the one reading the stream, a reader waiting for its next item ends with
        ``RequestCancelledError``."""
        if self.finished is not None:
            return
        self.cancel()
        try:
            if self._reader is not None:  # another task is reading: it takes the end
                await asyncio.wait_for(self._ended.wait(), CANCEL_CONFIRM_S)
                return
            while self.finished is None:
                item = await asyncio.wait_for(self._queue.get(), CANCEL_CONFIRM_S)
                if isinstance(item, Finished):
                    self._finish(item, self._cancelled_by)
        except asyncio.TimeoutError:
            pass

    def cancel(self) -> None:
        """Ask for the request to end without waiting (use ``aclose`` to wait)."""
        try:
            self._cancelled_by = asyncio.current_task()
        except RuntimeError:  # called from a thread without an event loop
            self._cancelled_by = threading.get_ident()
        self._cancel()

    async def __aenter__(self) -> AsyncTokenStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

