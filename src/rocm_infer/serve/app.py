"""The ASGI app: routes, OpenAI-shaped errors, request counting and the model's lifetime.

``create_app`` is all a caller needs (``rocm-infer serve`` runs it under uvicorn):
the lifespan starts loading the model without waiting for it, so the server answers
``/health`` with 503 until the model is ready, and closes the model at shutdown if it
is still open.  ``rocm-infer serve`` closes it earlier, a second before uvicorn's graceful
wait runs out (``launch.ClosingServer``), so live streams end with an error event; under a plain
uvicorn the lifespan's close comes after its graceful wait, which cuts the streams
still running then.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import errors
from .body_limit import LimitRequestBody
from .errors import ApiError, error_body, from_validation, to_api_error
from .routes import open_routes, v1
from .runtime import Runtime

_ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/models": "models",
              "/health": "health", "/metrics": "metrics"}


def create_app(runtime: Runtime) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(runtime.load())
        try:
            yield
        finally:
            await loading  # a load still running finishes before the model can be closed
            runtime.close()

    app = FastAPI(title="rocm-infer", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    app.include_router(open_routes)
    app.include_router(v1)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(errors.RocmInferError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _api_error)
    app.add_middleware(LimitRequestBody, max_bytes=runtime.settings.max_request_bytes)
    app.add_middleware(CountRequests, runtime=runtime)  # added last, so outermost: it counts the 413s too
    return app


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    error = to_api_error(exc)
    return JSONResponse(error.body(), status_code=error.status)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    error = from_validation(list(exc.errors()), request.headers.get("content-type"))
    return JSONResponse(error.body(), status_code=error.status)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown path, wrong method) in OpenAI's shape too."""
    assert isinstance(exc, HTTPException)
    return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


class CountRequests:
    """Counts each answered request by endpoint and status code (a pure ASGI middleware:
    no per-request task, nothing buffered)."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = _ENDPOINTS.get(path, "models" if path.startswith("/v1/models/") else "other")

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.runtime.metrics.request_done(endpoint, int(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)

