"""The subprocess ``TextModel``: one llama-server child, one SSE stream per request.

Chat on a GGUF with its own template is rendered here by the renderer the in-process
backend uses (``chat_templates.render_jinja``); a GGUF without one by the server's
``/apply-template`` (llama.cpp's C renderer, as in-process).  Either way the prompt
then takes the same ``/completion`` path as ``generate``, so token ids and timings
come back the same way for both.  A GGUF without a template would get the server's
ChatML default, which makes a Gemma model end its turn at once; such a model's
server is restarted with ``--chat-template`` set to its family's built-in
template (the architecture is read from the server's own load log).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from ..chat_templates import render_jinja, template_for
from ..gguf_header import HeaderReader
from ..cpu_threads import default_threads
from ..errors import InvalidConfigError, ModelClosedError, ServerCrashedError
from ..interface import TextModel
from ..models import quantization_from_name
from ..stream import Sink
from ..types import (
    DEFAULT_CONTEXT_CAP,
    DEFAULT_PARALLEL_SLOTS,
    GenerateConfig,
    LoadConfig,
    Message,
    ModelInfo,
    token_ids,
)
from .client import LiveWorkers, StreamWorker, completion_body, http_error
from .process import ServerProcess

_INFO_LINE = re.compile(r"print_info: (\w+)\s*=\s*(.+)$")


def server_args(path: Path, config: LoadConfig, chat_template: str | None) -> list[str]:
    """``-ctxcp 0``: llama-server's context checkpoints (for SWA models such as Gemma 3)
    split a prompt's processing in two batches, which puts its last rows through other
    CPU kernels and changes greedy output at near-ties; without them both backends give
    identical token ids.  With ``prefix_cache`` (requests send ``cache_prompt: true``) the
    server reuses a slot's prefix, which for an SWA model needs ``--swa-full`` when there
    are no checkpoints: the same full-size SWA cache the in-process engine keeps."""
    threads = config.n_threads or default_threads()
    args = [
        "-m", str(path),
        "-ngl", str(999 if config.gpu_layers < 0 else config.gpu_layers),
        "-c", str(config.context_len or DEFAULT_CONTEXT_CAP),
        "-np", str(config.parallel_slots or DEFAULT_PARALLEL_SLOTS),
        "-kvu", "-fa", config.flash_attn, "-t", str(threads), "-b", str(config.batch_size),
        "--no-webui", "-lv", "4", "-ctxcp", "0",
    ]
    if config.prefix_cache:
        args.append("--swa-full")
    if config.device_sampling == "on":
        args.append("--backend-sampling")  # llama.cpp's sampling in the decode graph
    if chat_template:
        # a built-in template name is rendered by llama.cpp's legacy engine, as in-process
        args += ["--chat-template", chat_template, "--no-jinja"]
    return args


class ServerModel(TextModel):
    def __init__(self, path: Path, config: LoadConfig, binary: Path, backend_name: str) -> None:
        super().__init__()
        self._closed = False
        self._cache_prompt = config.prefix_cache
        # one client for the short requests (model facts, chat rendering, detokenizing):
        # ``httpx.request`` builds a client, and with it an SSL context, per call; on every
        # chat request that cost a few ms and fragmented the heap (the soak's RSS grew 21%
        # over 600 requests, 7% with this client)
        self._control = httpx.Client(timeout=10.0, limits=httpx.Limits(max_keepalive_connections=0))
        try:
            self._process = ServerProcess(binary, server_args(path, config, None))
        except BaseException:
            self._control.close()
            raise
        try:
            facts = self._load_facts()
            builtin = template_for(None, facts.get("arch", ""))
            self._has_template = not self._renders_chatml_fallback()
            if not self._has_template and builtin not in (None, "chatml"):
                self._process.close()
                self._process = ServerProcess(binary, server_args(path, config, builtin))
            self._client = httpx.Client(
                base_url=self._process.base_url,
                headers={"Authorization": f"Bearer {self._process.api_key}"},
                timeout=httpx.Timeout(None, connect=5.0),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
            self._info = self._describe(path, config, backend_name, facts)
            self._eog_ids = self._end_of_generation_ids()
            self._jinja = _own_template(path)
            self._byte_spellings: dict[str, list[int] | None] = {}
        except BaseException:
            self._process.close()
            self._control.close()
            if hasattr(self, "_client"):
                self._client.close()
            raise
        # last, once nothing can fail: one reader per slot, as the server runs no more at
        # once (measured: classify and 16 streams as fast as with twice as many readers or
        # a thread per request); a model dropped unclosed lets its readers go
        self._workers = LiveWorkers(config.parallel_slots or DEFAULT_PARALLEL_SLOTS)
        self._workers.release_when_dropped(self)

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def server_pid(self) -> int:
        return self._process.pid

    @property
    def base_url(self) -> str:
        return self._process.base_url

    def _load_facts(self) -> dict[str, str]:
        """What llama.cpp printed about the model while loading (``print_info:`` lines)."""
        facts: dict[str, str] = {}
        for line in self._process.stderr_text().splitlines():
            match = _INFO_LINE.search(line)
            if match:
                facts.setdefault(match.group(1), match.group(2).strip())
        return facts

    def _renders_chatml_fallback(self) -> bool:
        """True when the server renders plain ChatML: its fallback for a GGUF without a
        template (a family whose own template is ChatML renders the same and is left alone)."""
        prompt = self._request("POST", "/apply-template", {"messages": [{"role": "user", "content": "x"}]})["prompt"]
        return prompt == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"

    def _request(self, method: str, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._process.api_key}"}
        try:
            response = self._control.request(method, self._process.base_url + route, headers=headers, json=body)
        except httpx.HTTPError as exc:  # a broken connection: typed, with the child's state
            raise self._crash_error(exc) from exc
        except RuntimeError as exc:  # httpx: the client was closed, by ``close`` on another thread
            raise ModelClosedError("the model was closed while this request was live") from exc
        if response.status_code != 200:
            raise http_error(response)
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise ServerCrashedError(f"llama-server answered {route} with something that is not JSON") from exc

    def _describe(self, path: Path, config: LoadConfig, backend: str, facts: dict[str, str]) -> ModelInfo:
        meta = self._request("GET", "/v1/models")["data"][0]["meta"]
        slots = self._request("GET", "/props").get("total_slots", config.parallel_slots or DEFAULT_PARALLEL_SLOTS)
        quant, bits, group = quantization_from_name(facts.get("file type", meta.get("ftype", "")))
        trained = int(meta.get("n_ctx_train", 0))
        return ModelInfo(
            path=str(path), backend=backend, architecture=facts.get("arch", "unknown"), name=path.stem,
            vocab_size=int(meta.get("n_vocab", 0)), n_layers=int(facts.get("n_layer", 0)),
            hidden_size=int(meta.get("n_embd", 0)), n_heads=int(facts.get("n_head", "0").split(",")[0]),
            n_kv_heads=int(facts.get("n_head_kv", "0").split(",")[0]), n_params=int(meta.get("n_params", 0)),
            size_bytes=path.stat().st_size, quantization=quant, quant_bits=bits, quant_group=group,
            context_train=trained, context_len=int(meta.get("n_ctx", 0)),
            context_reason=f"context_len={config.context_len}" if config.context_len else f"default {DEFAULT_CONTEXT_CAP}",
            parallel_slots=int(slots), gpu_layers=config.gpu_layers, flash_attn=config.flash_attn,
            has_chat_template=self._has_template,
        )

    def _end_of_generation_ids(self) -> frozenset[int]:
        """llama.cpp's own end-of-generation set (``llama_vocab_is_eog``): with ``ignore_eos``
        the server bans each of those tokens with a logit bias and reports the biases back."""
        body = {"prompt": "x", "n_predict": 1, "ignore_eos": True, "cache_prompt": False, "temperature": 0.0}
        biases = self._request("POST", "/completion", body).get("generation_settings", {}).get("logit_bias", [])
        return frozenset(int(b["token"]) if isinstance(b, dict) else int(b[0]) for b in biases)

    def _byte_ids(self, char: str, count: int) -> list[int] | None:
        """The ids of the ``count`` single-byte tokens that spell ``char``, or None when the
        vocabulary spells it otherwise (``ChunkReader`` recovers ids the server never sent)."""
        if char not in self._byte_spellings:
            body = {"content": char, "with_pieces": True, "add_special": False}
            pieces = self._request("POST", "/tokenize", body).get("tokens", [])
            single = all(isinstance(p.get("piece"), list) and len(p["piece"]) == 1 for p in pieces)
            if len(self._byte_spellings) >= 4096:  # a bound, not an LRU: such characters are rare
                self._byte_spellings.clear()
            self._byte_spellings[char] = [int(p["id"]) for p in pieces] if pieces and single else None
        ids = self._byte_spellings.get(char)
        return ids if ids is not None and len(ids) == count else None

    def _detokenize(self, ids: list[int]) -> str:
        return str(self._request("POST", "/detokenize", {"tokens": ids}).get("content", ""))

    def _start(self, prompt: str | list[int], config: GenerateConfig, sink: Sink, *, classify: bool) -> Callable[[], None]:
        if self._closed:
            raise ModelClosedError("the model is closed; load it again")
        vocab_size = self._info.vocab_size or None  # (0: the server did not say)
        if isinstance(prompt, list):
            token_ids(prompt, "a prompt's token ids", vocab_size)
        if config.logit_bias:  # (llama-server would drop an id past the vocabulary without a word)
            token_ids(config.logit_bias, "logit_bias's token ids", vocab_size)
        if classify and config.return_logits:
            raise InvalidConfigError("the llama_server backend cannot return full logits; use the llama_cpp backend")
        if config.regex is not None:
            raise InvalidConfigError("the llama_server backend cannot constrain output by a regex (llama-server takes json_schema "
                                     "and GBNF grammars); write it as a grammar, or use the llama_cpp backend")
        self._process.check_alive()
        worker = StreamWorker(
            self._client, completion_body(prompt, config, classify, self._cache_prompt), config, sink, classify, self._crash_error,
            self._eog_ids, self._byte_ids, self._detokenize,
        )
        self._workers.start(worker, lambda: self._closed)
        return worker.cancel

    def _crash_error(self, exc: BaseException) -> ServerCrashedError:
        try:
            self._process.check_alive(grace_s=0.5)
        except ServerCrashedError as crashed:
            return crashed
        return ServerCrashedError(f"the connection to llama-server broke: {exc}")

    def _render_chat(self, messages: Sequence[Message]) -> str:
        if self._closed:
            raise ModelClosedError("the model is closed; load it again")
        if self._jinja is not None:
            template, bos, eos = self._jinja
            return render_jinja(template, messages, bos, eos)
        return self._request("POST", "/apply-template", {"messages": [{"role": m.role, "content": m.content} for m in messages]})["prompt"]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._workers.cancel_all()
        self._process.close()
        self._workers.join_all()
        self._client.close()
        self._control.close()


def _own_template(path: Path) -> tuple[str, str, str] | None:
    """The GGUF's own chat template with the text of its BOS and EOS tokens, or None."""
    header = HeaderReader(path)
    template = header.value("tokenizer.chat_template")
    if not isinstance(template, str) or not template:
        return None
    tokens = header.string_array("tokenizer.ggml.tokens") or []

    def text(key: str) -> str:
        token = header.value(key)
        return tokens[token].decode("utf-8", "replace") if isinstance(token, int) and 0 <= token < len(tokens) else ""

    return template, text("tokenizer.ggml.bos_token_id"), text("tokenizer.ggml.eos_token_id")
