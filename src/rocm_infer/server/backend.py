"""The ``llama_server`` backend: available wherever a runnable llama-server binary is found."""

from __future__ import annotations

from ..errors import BackendUnavailableError
from ..interface import Backend, TextModel
from ..models import resolve_model_path
from ..types import LoadConfig
from .process import binary_problem, find_server_binary


class LlamaServerBackend(Backend):
    name = "llama_server"

    def unavailable_reason(self) -> str | None:
        binary, source = find_server_binary()
        problem = binary_problem(binary)
        return f"{problem} (from {source})" if problem else None

    def load_model(self, path: str | None, config: LoadConfig) -> TextModel:
        binary, _ = find_server_binary()
        reason = self.unavailable_reason()
        if reason or binary is None:
            raise BackendUnavailableError(f"{self.name}: {reason}")
        from .model import ServerModel

        return ServerModel(resolve_model_path(path), config, binary, self.name)
