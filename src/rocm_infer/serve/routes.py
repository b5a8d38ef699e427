"""The endpoints: OpenAI's ``/v1`` (behind the API key when one is set), ``/health`` and
``/metrics`` (open, as vLLM's are, so probes and scrapers need no secret)."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response

from .chat import create_chat_completion
from .completions import create_completion
from .errors import ApiError
from .responses import model_card
from .runtime import Runtime
from .schemas import ChatCompletionRequest, CompletionRequest
from .transport import CLIENT_GONE, ClientGone


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


async def require_key(request: Request) -> None:
    """``Authorization: Bearer KEY`` when the server has a key (compared in constant time).
    A coroutine, though it never waits: FastAPI runs a plain ``def`` dependency on its
    thread pool, a hop to another thread and back before every /v1 request."""
    key = runtime_of(request).settings.api_key
    if not key:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError(401, "Invalid or missing API key: send it as 'Authorization: Bearer KEY'.", code="invalid_api_key")


open_routes = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])


@open_routes.get("/health")
async def health(request: Request) -> dict[str, str]:
    runtime_of(request).ready()  # 503 while loading or after a failed load
    return {"status": "ok"}


@open_routes.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    runtime = runtime_of(request)
    text = runtime.metrics.render(await runtime.engine_figures())
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


@v1.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    model = runtime.ready()
    return {"object": "list", "data": [model_card(runtime.served_name, runtime.created, model.info.context_len)]}


@v1.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    model = runtime.ready()
    runtime.check_model(model_id)
    return model_card(runtime.served_name, runtime.created, model.info.context_len)


@v1.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response | dict[str, Any]:
    try:
        return await create_chat_completion(runtime_of(request), body, request)
    except ClientGone:
        return Response(status_code=CLIENT_GONE)


@v1.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> Response | dict[str, Any]:
    try:
        return await create_completion(runtime_of(request), body, request)
    except ClientGone:
        return Response(status_code=CLIENT_GONE)

