"""The served model: loading, ready, failed or closed, and what the handlers ask of it.

The server listens before the model is loaded (``/health`` and the API answer 503
meanwhile, as llama-server does); the model loads on a worker thread, so the event
loop stays free.  A model passed in ready-made (tests, embedding the app in another
program) is served as it is and left open at shutdown: whoever loaded it closes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelClosedError, RocmInferError
from ..interface import TextModel
from ..types import GenerateConfig, LoadConfig, Token
from .body_limit import DEFAULT_MAX_REQUEST_BYTES
from .errors import ApiError
from .metrics import EngineFigures, ServerMetrics
from .responses import Alternative, LogprobEntry

_log = logging.getLogger("rocm_infer.serve")


@dataclass(frozen=True)
class ServeSettings:
    """``model``: a path, a name in ``ROCM_MODEL_DIR`` or None (the default model);
    ``served_name``: the id clients send as ``model`` (default: the GGUF's file stem);
    ``max_request_bytes``: a larger request body is answered 413 (``body_limit`` says why 32 MiB)."""

    model: str | None = None
    served_name: str | None = None
    api_key: str | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    load: LoadConfig = field(default_factory=LoadConfig)


class Runtime:
    def __init__(self, settings: ServeSettings, model: TextModel | None = None,
                 on_load_failed: Callable[[BaseException], None] | None = None,
                 on_loaded: Callable[[TextModel], None] | None = None) -> None:
        self.settings = settings
        self.metrics = ServerMetrics()
        self.model: TextModel | None = model
        self.load_error: BaseException | None = None
        self.on_load_failed = on_load_failed
        self.on_loaded = on_loaded
        self._owns_model = model is None
        self._closing = threading.Lock()
        self.created = 0
        self.names: tuple[str, ...] = ()
        if model is not None:
            self._ready(model)

    # ---- lifecycle -----------------------------------------------------------------------
    async def load(self) -> None:
        """Load the model on a worker thread; a failure is kept (and reported) rather than raised."""
        if self.model is not None:
            return
        from .. import load_model

        try:
            model = await asyncio.to_thread(load_model, self.settings.model, self.settings.load)
        except Exception as exc:  # noqa: BLE001 - reported to the operator and to every client
            self.load_error = exc
            if self.on_load_failed is not None:
                self.on_load_failed(exc)
            return
        try:  # the first response_format request would otherwise build it on the event loop
            await asyncio.to_thread(model.prepare_structured_output)
        except Exception:  # noqa: BLE001 - free text still serves; a constrained request reports its own error
            _log.warning("structured output could not be prepared", exc_info=True)
        self._ready(model)
        if self.on_loaded is not None:
            self.on_loaded(model)

    def _ready(self, model: TextModel) -> None:
        info = model.info
        served = self.settings.served_name or Path(info.path).stem
        aliases = [served, info.name, info.path]
        if self.settings.model:
            aliases.append(self.settings.model)
        self.names = tuple(dict.fromkeys(aliases))
        self.created = int(time.time())
        self.model = model

    def close(self) -> None:
        """Close the served model; safe from any thread and more than once (``ClosingServer``
        may close it on a worker thread while the lifespan's end closes it too)."""
        with self._closing:
            if self._owns_model and self.model is not None:
                self.model.close()

    # ---- what handlers ask -----------------------------------------------------------------
    @property
    def served_name(self) -> str:
        return self.names[0] if self.names else (self.settings.served_name or "")

    def ready(self) -> TextModel:
        if self.model is not None:
            return self.model
        if self.load_error is not None:
            raise ApiError(503, f"the model failed to load: {type(self.load_error).__name__}: {self.load_error}")
        raise ApiError(503, "the model is loading", code="model_loading")

    def check_model(self, name: str | None) -> None:
        """``model`` may be left out or name the served model (its id, GGUF name or path)."""
        if name is not None and name not in self.names:
            raise ApiError(404, f"The model `{name}` does not exist; this server serves `{self.served_name}`.",
                           param="model", code="model_not_found")

    def logprob_entry(self, token: Token) -> LogprobEntry:
        """A token's logprob as reported: its own text and bytes (not the text the stream
        released with it) and its step's most likely tokens', from the model's
        ``token_bytes`` (in-process: a table lookup, or for a control token one llama.cpp
        call).  A backend without it reports the released text (and is never asked for
        alternatives: ``check_top_logprobs``)."""
        token_bytes = getattr(self.model, "token_bytes", None)
        if token_bytes is not None:
            try:
                return LogprobEntry(_shown(token_bytes, token.id, token.logprob),
                                    tuple(_shown(token_bytes, id_, logprob) for id_, logprob in token.top_logprobs or ()))
            except ModelClosedError:  # shutting down, a stream's last tokens still going out
                pass
        return LogprobEntry(Alternative(token.text, token.text.encode("utf-8"), token.logprob))

    def check_top_logprobs(self, config: GenerateConfig, param: str) -> None:
        """Alternatives are named by their text, which only a model with ``token_bytes``
        (in-process) can give for an id: elsewhere they are a 400, not an empty list."""
        if config.top_logprobs and getattr(self.model, "token_bytes", None) is None:
            raise ApiError(400, f"{param} > 0 needs an in-process backend; this server runs {self.ready().info.backend}", param=param)

    def default_chat_max_tokens(self) -> int:
        from .params import default_chat_max_tokens

        info = self.ready().info
        return default_chat_max_tokens(info.context_len, info.parallel_slots)

    async def engine_figures(self) -> EngineFigures:
        """The engine's own figures for ``/metrics``, read in one trip to the engine thread
        (``engine_snapshot``: one wait for the step under way, not one per figure), off the
        loop.  Only the in-process model reports them; another backend leaves them out."""
        model = self.model
        if model is None:
            return EngineFigures()
        info = model.info
        figures = EngineFigures(kv_cells_total=info.context_len, parallel_slots=info.parallel_slots)
        snapshot = getattr(model, "engine_snapshot", None)
        if snapshot is None:
            return figures
        try:
            read = await asyncio.to_thread(snapshot)
        except RocmInferError:  # closing under the scrape
            return figures
        engine, prefix = read.stats, read.cache
        return dataclasses.replace(
            figures, kv_cells_used=sum(read.occupancy.values()), engine_steps=engine.steps, engine_tokens=engine.tokens,
            engine_decode_s=engine.decode_s, engine_preemptions=engine.preemptions, prefix_entries=prefix.entries, prefix_cells=prefix.cells_held, prefix_hits=prefix.hits,
            prefix_tokens_reused=prefix.tokens_reused)


def _shown(token_bytes: Callable[[int], bytes], token_id: int, logprob: float | None) -> Alternative:
    raw = token_bytes(token_id)
    return Alternative(raw.decode("utf-8", errors="replace"), raw, logprob)
