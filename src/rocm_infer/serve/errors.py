"""OpenAI's error shape, and the map from rocm_infer's errors to HTTP status codes.

Every error the server answers has OpenAI's body,
``{"error": {"message", "type", "param", "code"}}``, so the official clients raise
their usual exception classes (``BadRequestError`` for 400, ``AuthenticationError``
for 401...).  The library raises its own hierarchy; only here does it become a
status code, and only ``ApiError`` crosses from the handlers to the app.
"""

from __future__ import annotations

import os
from typing import Any

from .. import errors

# OpenAI's error "type" per status code; llama-server's "unavailable_error" for 503.
_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          413: "invalid_request_error", 500: "server_error", 503: "unavailable_error", 504: "timeout_error"}


class ApiError(Exception):
    """An answer in OpenAI's error shape: raised by handlers, rendered by the app."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, param=self.param, code=self.code)


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")  # 405, 413...: the caller's
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def from_library(exc: errors.RocmInferError) -> ApiError:
    """The status code for one of the library's errors.

    A bad option, a prompt past the context (OpenAI's ``context_length_exceeded`` code)
    and chat with a model that has no chat template are the caller's fault (400); a
    closed model means the server is shutting down (503); a timeout is 504; everything
    else (decode failure, out of memory, a crashed server backend) is the server's (500).
    """
    if isinstance(exc, errors.PromptTooLongError):
        return ApiError(400, str(exc), code="context_length_exceeded")
    if isinstance(exc, errors.InvalidConfigError):
        return ApiError(400, str(exc))
    if isinstance(exc, errors.InvalidModelError):  # at request time: a chat request to a model without a template
        return ApiError(400, str(exc), param="messages")
    if isinstance(exc, errors.ModelClosedError):
        return ApiError(503, f"the model is not serving: {exc}")
    if isinstance(exc, errors.RequestTimeoutError):
        return ApiError(504, str(exc), code="timeout")
    if isinstance(exc, errors.OutOfMemoryError):
        return ApiError(500, f"out of memory: {exc}", code="out_of_memory")
    return ApiError(500, f"{type(exc).__name__}: {exc}")


def from_validation(problems: list[dict[str, Any]], content_type: str | None = None) -> ApiError:
    """FastAPI's request validation errors as one 400 (OpenAI and vLLM answer 400, not 422),
    naming the first offending field as ``param``: where that field takes one of several
    forms (``prompt``, a message's ``content``), pydantic reports each form's failure under
    the form's name (``prompt.list[int].0``), so ``param`` is what those locations share."""
    first = problems[0] if problems else {}
    if first.get("type") == "json_invalid":  # its "location" is a character offset, not a field
        reason = first.get("ctx", {}).get("error", "")
        offset = first.get("loc", ("body", "?"))[-1]
        return ApiError(400, f"the request body is not valid JSON: {reason or 'decode error'} (at character {offset})")
    if tuple(first.get("loc", ())) == ("body",):
        return ApiError(400, _body_not_an_object(first, content_type))
    field = tuple(first.get("loc", ()))[:2]
    shared = os.path.commonprefix([loc for loc in (tuple(p.get("loc", ())) for p in problems) if loc[:2] == field])
    param = ".".join(str(part) for part in shared if part != "body") or None
    messages = []
    for problem in problems:
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
        messages.append(f"{where}: {problem.get('msg', 'invalid')}" if where else str(problem.get("msg", "invalid")))
    return ApiError(400, "; ".join(messages) or "invalid request", param=param)


_JSON_NAMES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false", type(None): "null"}


def _body_not_an_object(problem: dict[str, Any], content_type: str | None) -> str:
    """The body as a whole is wrong.  FastAPI reads it as JSON only when ``Content-Type`` says
    JSON (or is absent): ``curl -d`` sends a form's type, and pydantic then says only "Input
    should be a valid dictionary", which names neither the header nor the fix."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media and media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        return f"the request body must be JSON sent with 'Content-Type: application/json', not {content_type!r}"
    if problem.get("type") == "missing":
        return "the request has no body: send a JSON object"
    return f"the request body must be a JSON object, not {_JSON_NAMES.get(type(problem.get('input')), 'that')}"


def to_api_error(exc: BaseException) -> ApiError:
    """Any error a handler meets, as the answer to send: library errors mapped, others a 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, errors.RocmInferError):
        return from_library(exc)
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}")
