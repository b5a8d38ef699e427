"""An OpenAI-compatible HTTP server on the in-process engine (``rocm-infer serve``).

FastAPI + uvicorn (the optional ``serve`` extra).  Requests go straight into the
engine with the async API, so concurrent clients batch in the same decode steps; a
client that disconnects cancels its request.  Rooms: ``schemas`` (request bodies),
``params`` (fields to ``GenerateConfig``), ``responses`` (response bodies and stream
chunks), ``generation`` (the choices of one request), ``chat``/``completions`` (the
two generating endpoints), ``routes``, ``errors`` (OpenAI's error shape), ``metrics``
(Prometheus), ``transport`` (SSE and disconnects), ``body_limit`` (413 past a size),
``runtime`` (the served model), ``app`` and ``launch``.
"""

from .app import create_app
from .launch import serve
from .runtime import Runtime, ServeSettings

__all__ = ["Runtime", "ServeSettings", "create_app", "serve"]
