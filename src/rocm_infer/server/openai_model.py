"""The openai ``TextModel``: any OpenAI-compatible server (vLLM, llama-server's ``/v1``,
another machine's ``rocm-infer serve``) behind the same interface as the local backends.

It is what a user who outgrows one machine points at a cluster without changing code.
Each request is one streamed ``/completions`` (generate, classify) or
``/chat/completions`` (chat: the server renders its own template) call, read by the same
``StreamWorker`` as the llama_server backend, so streams, metrics, errors, cancel and
timeouts behave alike; ``openai_chunks`` says what the wire format cannot carry.  The
API key is sent as a bearer header only: this library never logs it or writes it into an error
message (a server's own 401 reply, passed on, may quote part of it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from ..errors import BackendUnavailableError, InvalidConfigError, ModelClosedError, ModelNotFoundError, ServerCrashedError
from ..interface import TextModel
from ..stream import Finished, Sink
from ..types import ClassifyResult, GenerateConfig, LoadConfig, Message, ModelInfo, Token
from .chunks import UNKNOWN_ID
from .client import LiveWorkers, StreamWorker, http_error
from .openai_chunks import OpenAIChunkReader, openai_body


# Requests kept in flight to the server when ``parallel_slots`` is 0 (a server's own slots
# are unknown to this client, so ``info.parallel_slots`` stays 0); more wait their turn here.
DEFAULT_IN_FLIGHT = 64


class OpenAIModel(TextModel):
    def __init__(self, name: str | None, config: LoadConfig, base_url: str, api_key: str | None, backend_name: str) -> None:
        super().__init__()
        self._closed = False
        self._base_url = base_url.rstrip("/")
        self._who = f"the server at {self._base_url}"
        self._client = httpx.Client(
            base_url=self._base_url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=httpx.Timeout(None, connect=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        try:
            card = self._model_card(name)
            self._name = str(card["id"])
            self._info = self._describe(card, config, backend_name)
        except BaseException:
            self._client.close()
            raise
        # last, once nothing can fail; a model dropped unclosed lets its readers go
        self._workers = LiveWorkers(config.parallel_slots or DEFAULT_IN_FLIGHT)
        self._workers.release_when_dropped(self)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def _model_card(self, name: str | None) -> dict[str, Any]:
        """The served model ``name`` (None: the first one listed) from ``GET /models``."""
        try:
            response = self._client.get("/models", timeout=10.0)
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(f"openai: cannot reach {self._base_url}: {exc}") from exc
        if response.status_code == 401:  # at load the key (or its absence) is the setting to fix; later it is the server's doing
            if "authorization" not in self._client.headers:
                raise InvalidConfigError(f"{self._who} asks for an API key: pass api_key= or set ROCM_INFER_OPENAI_API_KEY")
            refused = http_error(response, self._who)
            raise InvalidConfigError(str(refused)) from refused
        if response.status_code == 404 and not self._base_url.endswith("/v1"):
            raise ModelNotFoundError(f"{self._who} has no {self._base_url}/models; OpenAI-compatible servers answer under "
                                     f"/v1: try base_url={self._base_url}/v1")
        if response.status_code != 200:
            raise http_error(response, self._who)
        try:
            cards = [card for card in response.json()["data"] if isinstance(card, dict) and "id" in card]
        except (ValueError, KeyError, TypeError) as exc:
            raise ServerCrashedError(f"{self._who} answered /models with something that is not a model list") from exc
        if not cards:
            raise ModelNotFoundError(f"{self._who} serves no model")
        if name is None:
            return cards[0]
        for card in cards:
            if card["id"] == name:
                return card
        raise ModelNotFoundError(f"{self._who} does not serve {name!r}; it serves {', '.join(str(c['id']) for c in cards)}")

    def _describe(self, card: dict[str, Any], config: LoadConfig, backend: str) -> ModelInfo:
        """What the model card says (vLLM and rocm-infer serve: ``max_model_len``; llama-server:
        ``meta``); what no card says is 0 or "unknown"."""
        meta = card.get("meta") if isinstance(card.get("meta"), dict) else {}
        try:
            return self._card_info(card, meta, config, backend)
        except (TypeError, ValueError) as exc:  # a card whose numbers are not numbers
            raise ServerCrashedError(f"{self._base_url} sent a model card this client cannot read: {exc}") from exc

    def _card_info(self, card: dict[str, Any], meta: dict[str, Any], config: LoadConfig, backend: str) -> ModelInfo:
        context = int(card.get("max_model_len") or meta.get("n_ctx") or meta.get("n_ctx_train") or 0)
        return ModelInfo(
            path=f"{self._base_url}/models/{self._name}", backend=backend, architecture="unknown", name=self._name,
            vocab_size=int(meta.get("n_vocab") or 0), n_layers=0, hidden_size=int(meta.get("n_embd") or 0), n_heads=0,
            n_kv_heads=0, n_params=int(meta.get("n_params") or 0), size_bytes=int(meta.get("size") or 0),
            quantization="unknown", quant_bits=None, quant_group=None, context_train=int(meta.get("n_ctx_train") or 0),
            context_len=context, context_reason=f"reported by {self._base_url}" if context else "not reported by the server",
            parallel_slots=0, gpu_layers=config.gpu_layers, flash_attn=config.flash_attn, has_chat_template=True,
        )

    def _start(self, prompt: str | list[int], config: GenerateConfig, sink: Sink, *, classify: bool) -> Callable[[], None]:
        if self._closed:
            raise ModelClosedError("the model is closed; load it again")
        if config.grammar is not None or config.regex is not None:
            raise InvalidConfigError("the openai backend constrains output by json_schema only (response_format): an "
                                     "OpenAI-compatible server has no portable grammar or regex field")
        if config.top_logprobs:
            raise InvalidConfigError("the openai backend cannot give top_logprobs: OpenAI's API names the alternatives by "
                                     "their text, and Token.top_logprobs holds token ids; use llama_cpp or llama_server")
        if classify:
            if config.return_logits:
                raise InvalidConfigError("the openai backend cannot return full logits; use the llama_cpp backend")
            config, sink = dataclasses.replace(config, max_tokens=1, temperature=0.0), _ClassifySink(sink)
        chat = isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], Message)
        worker = StreamWorker(
            self._client, openai_body(self._name, prompt, config), config, sink, False, self._crash_error,
            path="/chat/completions" if chat else "/completions", reader=OpenAIChunkReader(config, chat), who=self._who,
        )
        self._workers.start(worker, lambda: self._closed)
        return worker.cancel

    def _crash_error(self, exc: BaseException) -> ServerCrashedError:
        return ServerCrashedError(f"the connection to {self._base_url} broke: {exc}")

    def _render_chat(self, messages: Sequence[Message]) -> list[Message]:  # type: ignore[override]
        """The messages themselves: the server renders its own chat template."""
        if self._closed:
            raise ModelClosedError("the model is closed; load it again")
        return list(messages)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._workers.cancel_all()
        self._workers.join_all()
        self._client.close()


class _ClassifySink:
    """classify over OpenAI: one greedy token, handed on as a ``ClassifyResult`` (id -1: the
    wire carries no ids; text "" when the server ended without text, e.g. at an end token)."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._first: Token | None = None

    def put(self, item: Any) -> None:
        if isinstance(item, Token):
            self._first = self._first or item
            return
        if isinstance(item, Finished) and item.error is None:
            self._sink.put(ClassifyResult(UNKNOWN_ID, self._first.text if self._first else "", None))
            item = dataclasses.replace(item, reason="stop")
        self._sink.put(item)
