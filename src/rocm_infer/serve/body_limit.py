"""A cap on the request body: larger ones are answered 413 before they are held in memory.

FastAPI reads a body whole before the handler runs (a 2 GB POST was held in memory),
and neither it (at the ``fastapi>=0.110`` floor) nor uvicorn offers a size limit, so a
small pure ASGI middleware sets one.  It runs outside FastAPI's body parsing on purpose:
an error raised from ``receive`` inside it is turned into FastAPI's own 400 ("There was
an error parsing the body"), never a 413.

``DEFAULT_MAX_REQUEST_BYTES`` (32 MiB) is past any legitimate request.  The largest
context served from one card is taken as 2**20 = 1,048,576 cells (the longest trained
contexts of common GGUFs; the KV cache of even a 7B model at that length, 56 KiB a cell
at f16, is 60 GB, more than a 48 GB Radeon holds).  Filling it:

- as token ids, each is at most ``"262143, "``: 8 bytes (Gemma 3's 262,144-entry
  vocabulary is the largest common one), so 8 MiB;
- as JSON-escaped text, a token is ~4 bytes of English, and at worst ~16: CJK at one or
  two characters a token, each escaped to ``\\uXXXX`` (6 bytes, the ``openai`` client's
  ``ensure_ascii``), an emoji 12 bytes (a surrogate pair), so 16 MiB;
- chat messages add ``{"role": "user", "content": ""}, `` (~35 bytes) to each, and a
  chat template spends at least ~4 tokens of the context on each message's framing, so at
  most ~9 bytes a token of context: 9 MiB more;
- ``n``, the sampling fields, stops (64 at most) and a ``response_format`` schema are a
  few KiB.

So at most ~25 MiB; 32 MiB leaves room.  A completions request listing many prompts can
need more (each may fill the context): split it, or raise ``--max-request-bytes``.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024


class LimitRequestBody:
    """Answers 413 in OpenAI's error shape to a body past ``max_bytes``, never reading more
    of it than the limit (and one ``http.request`` message) into memory.

    A ``Content-Length`` past the limit is refused before the body is read (a client that
    sent ``Expect: 100-continue`` is never told to send it).  A body without one (chunked)
    is read here up to the limit, counting bytes as its messages arrive, and handed to the
    app whole once it ends within it.  The 413 closes the connection (``Connection: close``):
    the rest of the body is never read, so the connection cannot carry another request."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:  # the server holds the body to it: nothing to count
            if declared > self.max_bytes:
                await self._refuse(scope, receive, send, f"{declared} bytes")
            else:
                await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # gone before the body ended: the app sees it as it would
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, f"more than {self.max_bytes} bytes")
                return
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        message = f"the request body is {size}; this server takes at most {self.max_bytes} (rocm-infer serve --max-request-bytes)"
        response = JSONResponse(error_body(413, message, code="request_too_large"), status_code=413,
                                headers={"Connection": "close"})
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length; None where there is none (a malformed one never reaches the
    app: uvicorn answers 400 itself)."""
    value = Headers(scope=scope).get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that gives ``messages`` first, then the connection's own (a disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
