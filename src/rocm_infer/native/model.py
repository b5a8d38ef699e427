"""The in-process ``TextModel``: llama.cpp in this process, driven by the engine thread.

Construction enters model, context and engine on one ``ExitStack``, so a
failure part-way frees what was built, and ``close()`` unwinds in reverse:
the engine stops (every live stream gets ``ModelClosedError``), then the
context, then the weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from ..build import build_config
from ..chat_templates import template_for
from ..cpu_threads import default_threads
from ..errors import InvalidConfigError, ModelClosedError, PromptTooLongError
from ..hardware import find_amd_gpus
from ..interface import TextModel
from ..models import kv_bytes_per_token, quantization, size_context
from ..stream import Sink
from ..structured import llguidance_grammar
from ..types import (
    CacheStats,
    DEFAULT_CONTEXT_CAP,
    DEFAULT_PARALLEL_SLOTS,
    GenerateConfig,
    LoadConfig,
    Message,
    ModelInfo,
    token_ids,
)
from .bindings import lib
from .chat import render_chat
from .constraints import Grammars
from .device_sampling import DevicePolicy
from .devices import tracker
from .engine import Engine
from .stats import EngineStats
from .handles import LlamaContext, LlamaModel
from .request import Request, RequestKind
from .vocab import Vocab

# Host sampling threads, the model's own count up to this (the cores are idle while a
# step is sampled, on a GPU build and on the CPU one, where ggml's decode has just left
# them); split further, a step's rows gain little (memory bandwidth).
MAX_SAMPLING_THREADS = 8


@dataclasses.dataclass(frozen=True)
class EngineSnapshot:
    """``cache_occupancy()``, ``engine_stats()`` and ``cache_stats()`` read at one moment."""

    occupancy: dict[int, int]
    stats: EngineStats
    cache: CacheStats


class NativeModel(TextModel):
    def __init__(self, path: Path, config: LoadConfig, backend_name: str) -> None:
        super().__init__()
        self._stack = contextlib.ExitStack()
        self._closed = False
        self._users = 0  # calls inside _open(): close() waits for them
        self._users_changed = threading.Condition()
        memory = tracker()  # the first one's baseline precedes every allocation
        try:
            free_vram = self._free_vram(config)  # before the weights take their share of it
            self._model = self._stack.enter_context(LlamaModel(path, config.gpu_layers))
            llama = lib()
            trained = int(llama.llama_model_n_ctx_train(self._model.ptr))
            n_ctx, reason = size_context(config.context_len, trained, self._kv_per_token(), int(llama.llama_model_size(self._model.ptr)),
                                         free_vram, DEFAULT_CONTEXT_CAP)
            slots = config.parallel_slots or DEFAULT_PARALLEL_SLOTS
            budget = min(max(config.batch_size, slots), n_ctx)  # llama.cpp's n_batch: at most the context
            self._ctx = self._stack.enter_context(
                LlamaContext(self._model, n_ctx, slots, budget, config.flash_attn, config.n_threads)
            )
            on_gpu = self._on_gpu(config, int(llama.llama_model_n_layer(self._model.ptr)))
            device_policy = self._device_policy(config, on_gpu)
            self._vocab = Vocab(self._model.vocab)
            self._grammars = Grammars(self._vocab)
            self._info = self._describe(path, config, backend_name, trained, reason, slots)
            self._template = template_for(self._model.chat_template(), self._info.architecture)
            self._engine = Engine(self._ctx, self._vocab, slots, budget, int(llama.llama_model_size(self._model.ptr)), device_policy,
                                  config.prefix_cache, overlap=config.overlap_decode == "on" or (config.overlap_decode == "auto" and on_gpu),
                                  sampling_threads=min(MAX_SAMPLING_THREADS, config.n_threads or default_threads()),
                                  decode_runs=config.decode_runs)
            self._stack.callback(self._engine.close)
            # a model dropped without close() still stops its engine thread and frees the
            # context and weights (the thread holds the context, never this object)
            self._release = weakref.finalize(self, self._stack.close)
            memory.sample()
        except BaseException:
            self._stack.close()
            raise

    @property
    def info(self) -> ModelInfo:
        return self._info

    def _kv_per_token(self) -> int:
        llama = lib()
        model = self._model.ptr
        arch = self._model.meta("general.architecture") or ""
        n_head, n_kv = int(llama.llama_model_n_head(model)), int(llama.llama_model_n_head_kv(model))
        default_dim = int(llama.llama_model_n_embd(model)) // max(1, n_head)
        key = int(self._model.meta(f"{arch}.attention.key_length") or default_dim)
        value = int(self._model.meta(f"{arch}.attention.value_length") or key)
        return kv_bytes_per_token(int(llama.llama_model_n_layer(model)), n_kv, key, value)

    @staticmethod
    def _on_gpu(config: LoadConfig, n_layers: int) -> bool:
        """Every layer, the output one included, is offloaded to a GPU."""
        gpu_build = build_config().get("gpu_backend") in ("hip", "cuda", "vulkan")
        return gpu_build and (config.gpu_layers == -1 or config.gpu_layers > n_layers)

    @staticmethod
    def _device_policy(config: LoadConfig, on_gpu: bool) -> DevicePolicy:
        """``auto``: where the output layer is on a GPU, requests whose host sampling would
        need a whole-vocabulary pass are sampled in the decode graph
        (``DevicePolicy.WHOLE_VOCAB`` says why); on the CPU the host path measures faster
        for every setting."""
        if config.device_sampling != "auto":
            return DevicePolicy.ALL if config.device_sampling == "on" else DevicePolicy.OFF
        return DevicePolicy.WHOLE_VOCAB if on_gpu else DevicePolicy.OFF

    @staticmethod
    def _free_vram(config: LoadConfig) -> int | None:
        """Free VRAM of the card the weights go to, on a HIP build offloading layers."""
        if config.gpu_layers == 0 or build_config().get("gpu_backend") != "hip":
            return None
        gpus = find_amd_gpus()
        return gpus[0].vram_free_bytes if gpus else None

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise InvalidConfigError(f"tokenize takes a string, not {type(text).__name__}")
        self._check_prompt(text)  # a lone surrogate has no UTF-8 form
        with self._open():
            return self._vocab.tokenize(text, add_special=add_special)

    def detokenize(self, tokens: Iterable[int]) -> str:
        """The ids are checked as a prompt's are (``types.token_ids``)."""
        self._check_open()
        if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Iterable):
            raise InvalidConfigError(f"detokenize takes a list of token ids, not {type(tokens).__name__}")
        ids = token_ids(tokens, "token ids", self._vocab.n_tokens)
        return self._vocab.detokenize(ids)  # Vocab's own copy of the pieces, taken at load: nothing close() frees

    def token_bytes(self, token_id: int) -> bytes:
        """One token's own bytes, as log-probabilities report them (``serve``'s ``bytes``):
        its piece, which may be part of a UTF-8 character, or a control token's text (read
        from llama.cpp: the weights are held meanwhile, as for tokenizing)."""
        token_ids([token_id], "a token id", self._vocab.n_tokens)
        with self._open():
            return self._vocab.shown_piece(token_id)

    def _check_open(self) -> None:
        if self._closed:
            raise ModelClosedError("the model is closed; load it again")

    @contextlib.contextmanager
    def _open(self) -> Iterator[None]:
        """Keeps the weights for a call that reads them off the engine thread (tokenizing, the
        chat template's special tokens, llguidance's view of the vocabulary): ``close()``
        waits for such calls to leave before it frees them.  Freed under a running
        ``llama_tokenize`` (another thread closing the model, or a server shutting down
        while a request's prompt is tokenized), the process crashed in llama.cpp (an abort or a
        segfault)."""
        entered = False
        try:
            with self._users_changed:
                self._check_open()
                self._users += 1
                entered = True  # straight after the count: no call between them, where an interrupt could land
            yield
        finally:
            if entered:
                with self._users_changed:
                    self._users -= 1
                    self._users_changed.notify_all()

    def engine_stats(self) -> EngineStats:
        """A copy of the engine's counters: steps, tokens, time per phase, rows sampled where."""
        return self._engine.call(lambda _ctx: dataclasses.replace(self._engine.stats))

    def cache_occupancy(self) -> dict[int, int]:
        """Positions held in the KV cache per sequence id by everything but the prefix
        cache's entries (those are in ``cache_stats()``), read on the engine thread:
        once no request is live this is empty, or cells leaked."""
        return self._engine.call(self._occupancy)

    def _occupancy(self, ctx: LlamaContext) -> dict[int, int]:
        cached = self._engine.kv.cached_ids()
        return {seq: pos + 1 for seq in range(self._info.parallel_slots)
                if seq not in cached and (pos := ctx.sequence_max_pos(seq)) >= 0}

    def cache_stats(self) -> CacheStats:
        """The prefix cache: entries, cells they hold, hits, prompt tokens reused, evictions."""
        return self._engine.call(lambda _ctx: self._engine.kv.stats())

    def engine_snapshot(self) -> EngineSnapshot:
        """The three calls above in one trip to the engine thread.  Each of them waits for the
        step under way to end, so a ``/metrics`` scrape making them one by one waited up to
        three steps (seconds during a long prefill); read together they also describe one
        moment, between the same two steps."""
        return self._engine.call(lambda ctx: EngineSnapshot(self._occupancy(ctx), dataclasses.replace(self._engine.stats),
                                                            self._engine.kv.stats()))

    def _start(self, prompt: str | list[int], config: GenerateConfig, sink: Sink, *, classify: bool) -> Callable[[], None]:
        with self._open():
            return self._submit(prompt, config, sink, classify)

    def _submit(self, prompt: str | list[int], config: GenerateConfig, sink: Sink, classify: bool) -> Callable[[], None]:
        if isinstance(prompt, str):
            ids = self._vocab.tokenize(prompt, add_special=True, parse_special=True)
        else:
            ids = token_ids(prompt, "a prompt's token ids", self._vocab.n_tokens)
        if config.logit_bias:  # checked on a copy of its own: the caller's config may be changed later
            config = dataclasses.replace(config)
            token_ids(config.logit_bias, "logit_bias's token ids", self._vocab.n_tokens)
        if not ids:
            raise InvalidConfigError("the prompt is empty (it has no tokens)")
        n_ctx = self._ctx.n_ctx
        if len(ids) >= n_ctx:
            raise PromptTooLongError(f"the prompt has {len(ids)} tokens; the context holds {n_ctx} and needs room for at least one generated token")
        constraint = self._grammars.constraint(llguidance_grammar(*config.constraint)) if config.constraint else None
        request = Request(ids, config, sink, RequestKind.CLASSIFY if classify else RequestKind.GENERATE, constraint)
        self._engine.submit(request)
        return self._engine.canceller(request)

    def _render_chat(self, messages: Sequence[Message]) -> str:
        with self._open():
            return render_chat(self._template, messages, self._vocab.special_text("bos"), self._vocab.special_text("eos"))

    def prepare_structured_output(self) -> None:
        """Builds llguidance's tokenizer for this vocabulary now (``TextModel``'s says why)."""
        with self._open():
            self._grammars.prepare()

    def close(self) -> None:
        with self._users_changed:
            if self._closed:
                return
            self._closed = True  # no call enters _open() from here on
            self._users_changed.wait_for(lambda: self._users == 0)
        self._release()

    def _describe(self, path: Path, config: LoadConfig, backend: str, trained: int, reason: str, slots: int) -> ModelInfo:
        llama = lib()
        model = self._model.ptr
        file_type = self._model.meta("general.file_type")
        quant, bits, group = quantization(int(file_type) if file_type and file_type.isdigit() else None)
        n_layers = int(llama.llama_model_n_layer(model))
        return ModelInfo(
            path=str(path),
            backend=backend,
            architecture=self._model.meta("general.architecture") or "unknown",
            name=self._model.meta("general.name") or path.stem,
            vocab_size=self._vocab.n_tokens,
            n_layers=n_layers,
            hidden_size=int(llama.llama_model_n_embd(model)),
            n_heads=int(llama.llama_model_n_head(model)),
            n_kv_heads=int(llama.llama_model_n_head_kv(model)),
            n_params=int(llama.llama_model_n_params(model)),
            size_bytes=os.path.getsize(path),
            quantization=quant,
            quant_bits=bits,
            quant_group=group,
            context_train=trained,
            context_len=self._ctx.n_ctx,
            context_reason=reason,
            parallel_slots=slots,
            gpu_layers=config.gpu_layers,
            flash_attn=config.flash_attn,
            has_chat_template=self._model.chat_template() is not None,
        )
