"""``rocm-infer serve``: bind, start uvicorn, load the model, serve until stopped.

The socket is bound before anything else, so ``--port 0`` can say which port it
got, and clients see 503 rather than a refused connection while the model loads.
One process, one worker: the model lives in this process, and one engine thread
batches every client's requests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable

import uvicorn

from ..errors import InvalidConfigError
from ..interface import TextModel
from .app import create_app
from .runtime import Runtime, ServeSettings

_log = logging.getLogger("rocm_infer.serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def in_url(host: str) -> str:
    """A host as it is written before ``:port`` (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def without_nagle(sock: socket.socket) -> socket.socket:
    """The listening socket, marked so that every connection it accepts sends at once.

    asyncio turns Nagle's algorithm off on an accepted connection only when the listening
    socket says it is TCP (``proto == IPPROTO_TCP``), and uvicorn's ``bind_socket`` makes
    it with ``proto`` 0: each small write after the first (an SSE event, a reply's body
    after its headers) then waited for the client's delayed ACK, and a ``GET /health``
    over loopback took 44 ms.  The socket is wrapped again as TCP, which is what asyncio
    asks before it sets ``TCP_NODELAY`` on each connection."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return sock
    return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())


class ClosingServer(uvicorn.Server):
    """uvicorn's server, closing the model shortly before its graceful wait runs out.

    On SIGINT/SIGTERM uvicorn stops accepting, waits up to ``timeout_graceful_shutdown``
    for the requests in flight, cancels the rest and only then runs the app's lifespan
    end, which closed the model: a stream longer than the wait was cut mid-chunk (the
    client read "incomplete chunked read"), never told why.  Requests that end within
    the wait still end as they would (a rolling restart loses nothing short); a second
    before it runs out the model is closed, which ends every stream still running with
    its error event and ``[DONE]`` (``ModelClosedError``) in time to be sent."""

    CLOSE_BEFORE_THE_END_S = 1.0

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self._runtime = runtime

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        wait = self.config.timeout_graceful_shutdown
        closer = None if wait is None else asyncio.create_task(self._close_model_after(max(0.0, wait - self.CLOSE_BEFORE_THE_END_S)))
        try:
            await super().shutdown(sockets)  # its lifespan end closes the model too, waiting for a close under way
        finally:
            if closer is not None:
                closer.cancel()
                [outcome] = await asyncio.gather(closer, return_exceptions=True)
                if isinstance(outcome, Exception):  # (the lifespan's own close has run; say why this one failed)
                    _log.error("closing the model at shutdown failed: %r", outcome)

    async def _close_model_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(self._runtime.close)  # joins the engine: off the loop that delivers its last events


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          say: Callable[[str], None] = print) -> None:
    """Serve until SIGINT/SIGTERM; status lines go to ``say``.  A model that fails to
    load stops the server, and its error is raised here once uvicorn has shut down."""
    if not is_loopback(host) and not settings.api_key:
        say(f"WARNING: listening on {host} without an API key: anyone who can reach this address can use the model. "
            "Set ROCM_INFER_API_KEY (or --api-key) or bind to 127.0.0.1.")
    runtime = Runtime(settings)
    config = uvicorn.Config(create_app(runtime), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    server = ClosingServer(config, runtime)

    def loaded(model: TextModel) -> None:
        info = model.info
        say(f"rocm-infer serve: ready: {info.path} as {runtime.served_name!r} ({info.backend} backend, "
            f"context {info.context_len}, {info.parallel_slots} parallel slots)")

    def failed(exc: BaseException) -> None:
        say(f"rocm-infer serve: loading the model failed: {type(exc).__name__}: {exc}")
        server.should_exit = True

    runtime.on_loaded, runtime.on_load_failed = loaded, failed
    try:
        sock = config.bind_socket()
    except SystemExit as exc:  # uvicorn logs the OSError and exits 3 inside its handler: the OSError is the context
        reason = exc.__context__ or "uvicorn's log says why"
        raise InvalidConfigError(f"cannot listen on {in_url(host)}:{port} ({reason}); choose another --port, or --port 0 for any "
                                 "free one") from exc
    sock = without_nagle(sock)
    bound_host, bound_port = sock.getsockname()[:2]
    say(f"rocm-infer serve: http://{in_url(bound_host)}:{bound_port}/v1 (model: {settings.model or 'the default Gemma 3 270M'}; "
        "/health answers 503 until it is loaded)")
    server.run(sockets=[sock])
    if runtime.load_error is not None:
        raise runtime.load_error
