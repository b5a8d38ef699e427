"""rocm_infer: GGUF models in-process on AMD Radeon GPUs through llama.cpp (HIP),
with llama-server behind the same interface for head-to-head comparison.

This module is the public API and nothing else.
"""

from __future__ import annotations

import os
from typing import Any

from .build import build_info
from .native.bindings import preload_on_gpu_builds

preload_on_gpu_builds()  # before numpy is imported below: see its docstring

from .doctor import doctor
from .errors import (
    BackendUnavailableError,
    EngineError,
    InvalidConfigError,
    InvalidModelError,
    ModelClosedError,
    ModelNotFoundError,
    OutOfMemoryError,
    PromptTooLongError,
    RequestCancelledError,
    RequestTimeoutError,
    RocmInferError,
    ServerCrashedError,
    UnsupportedArchitectureError,
)
from .discovery import discover
from .hardware import vram_info
from .interface import Backend, TextModel
from .models import default_model_path
from .native.backend import LlamaCppBackend, RocmBackend
from .native.devices import active_memory, peak_memory, reset_peak_memory
from .registry import default_backend, get_backend, list_backends, register
from .server.backend import LlamaServerBackend, OpenAIBackend
from .stream import AsyncTokenStream, TokenStream
from .types import (
    BatchResult,
    BuildInfo,
    CacheStats,
    ClassifyResult,
    GenerateConfig,
    GenerateMetrics,
    LoadConfig,
    ModelEntry,
    Message,
    ModelInfo,
    Token,
    merge_options,
)

__version__ = "0.1.0"

register(RocmBackend())
register(LlamaCppBackend())
register(LlamaServerBackend())
register(OpenAIBackend())


def load_model(model: str | os.PathLike[str] | None = None, config: LoadConfig | None = None, **options: Any) -> TextModel:
    """Load a GGUF model (a path, a name in ``ROCM_MODEL_DIR``, or None for the default
    Gemma 3 270M) on ``backend=`` (None: the first available backend)."""
    load = merge_options(LoadConfig, config, options)
    backend = get_backend(load.backend) if load.backend else default_backend()
    return backend.load_model(None if model is None else os.fspath(model), load)


__all__ = [
    "AsyncTokenStream", "Backend", "BackendUnavailableError", "BatchResult", "BuildInfo", "CacheStats", "ClassifyResult",
    "EngineError", "GenerateConfig", "GenerateMetrics", "InvalidConfigError", "InvalidModelError", "LoadConfig",
    "Message", "ModelClosedError", "ModelEntry", "ModelInfo", "ModelNotFoundError", "OutOfMemoryError", "PromptTooLongError",
    "RequestCancelledError", "RequestTimeoutError", "RocmInferError", "ServerCrashedError", "TextModel", "Token",
    "TokenStream", "UnsupportedArchitectureError", "active_memory", "build_info", "default_backend", "default_model_path",
    "discover", "doctor", "get_backend", "list_backends", "load_model", "peak_memory", "register", "reset_peak_memory",
    "vram_info",
]
