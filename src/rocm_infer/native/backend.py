"""The in-process backends: ``llama_cpp`` (whatever the libraries were built for)
and ``rocm`` (the same engine, only where the build is HIP and an AMD GPU is usable)."""

from __future__ import annotations

from pathlib import Path

from ..build import HOST_LIBRARY, LIB_DIR, build_config, library_present
from ..errors import BackendUnavailableError
from ..hardware import rocm_problem
from ..interface import Backend, TextModel
from ..models import resolve_model_path
from ..types import LoadConfig


class LlamaCppBackend(Backend):
    name = "llama_cpp"

    def unavailable_reason(self) -> str | None:
        # the engine's native host code too: a checkout pulled without a rebuild can lack it, found
        # otherwise only once a model's weights were loaded
        if not library_present() or not (LIB_DIR / HOST_LIBRARY).is_file():
            return f"the native libraries are missing from {LIB_DIR}; reinstall with `pip install -r requirements.txt`"
        return None

    def load_model(self, path: str | None, config: LoadConfig) -> TextModel:
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailableError(f"{self.name}: {reason}")
        from .model import NativeModel  # loads libllama only when a model is wanted

        return NativeModel(resolve_model_path(path), config, self.name)


class RocmBackend(LlamaCppBackend):
    name = "rocm"

    def __init__(self, sysfs: Path = Path("/sys"), dev: Path = Path("/dev")) -> None:
        self._sysfs = sysfs
        self._dev = dev

    def unavailable_reason(self) -> str | None:
        reason = super().unavailable_reason()
        if reason:
            return reason
        backend = build_config().get("gpu_backend")
        if backend != "hip":
            return f"the native libraries were built for '{backend}', not HIP; rebuild with scripts/build_hip.sh"
        return rocm_problem(self._sysfs, self._dev)
