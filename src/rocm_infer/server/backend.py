"""The HTTP backends: ``llama_server`` (available wherever a runnable llama-server binary is
found) and ``openai`` (any OpenAI-compatible server, given its URL)."""

from __future__ import annotations

import os

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


BASE_URL_ENV = "ROCM_INFER_OPENAI_BASE_URL"
API_KEY_ENV = "ROCM_INFER_OPENAI_API_KEY"


class OpenAIBackend(Backend):
    """Available when a server URL is configured in the environment; ``load_model`` with
    ``base_url=`` works either way.  Never picked by default over a local backend (it is
    last in the registry's order)."""

    name = "openai"

    def unavailable_reason(self) -> str | None:
        return None if os.environ.get(BASE_URL_ENV) else f"needs base_url= (or {BASE_URL_ENV}): the URL of an OpenAI-compatible server"

    def load_model(self, path: str | None, config: LoadConfig) -> TextModel:
        base_url = config.base_url or os.environ.get(BASE_URL_ENV)
        if not base_url:
            raise BackendUnavailableError(f"{self.name}: {self.unavailable_reason()}")
        from .openai_model import OpenAIModel

        return OpenAIModel(path, config, base_url, config.api_key or os.environ.get(API_KEY_ENV), self.name)
