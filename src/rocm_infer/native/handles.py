"""Thin owning wrappers over llama.cpp's C pointers: model, context, sampler.

Each wrapper owns exactly one pointer and frees it in ``close()``; closing sets
the pointer to ``None`` so a second close does nothing.  ``__del__`` is only a
fallback.  A context keeps its model alive and must be closed first: the
TextModel enters model then context on one ``ExitStack``, which unwinds in
reverse.  Failures become named errors, with llama.cpp's own log lines (its
only error channel for loading) in the message.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

from ..cpu_threads import default_threads
from ..errors import (
    EngineError,
    OutOfMemoryError,
)
from ..load_failures import load_failure
from .bindings import lib, llama_log

FLASH_ATTN_TYPES = {"auto": -1, "off": 0, "on": 1}


class NoKvSlotError(OutOfMemoryError):
    """``llama_decode`` returned 1: no KV cells for the batch, and nothing was decoded (the
    cache is as it was), so the engine can drop one request and retry the others."""


def check_decode(rc: int) -> None:
    """Raise for a ``llama_decode`` return code other than 0 (``LlamaContext.launch``
    lists them)."""
    if rc == 1:
        raise NoKvSlotError("llama_decode found no free KV slot for the batch")
    if rc != 0:
        raise EngineError(f"llama_decode failed with code {rc}")


class _OwnedPointer:
    """One C pointer, freed once by ``_free``; ``close()`` twice is harmless."""

    ptr: Any = None

    def _free(self, ptr: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr is not None:
            self._free(ptr)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class LlamaModel(_OwnedPointer):
    """Owns a ``llama_model *`` (weights and vocabulary)."""

    def __init__(self, path: Path, gpu_layers: int = -1, vocab_only: bool = False) -> None:
        self._llama = lib()
        params = self._llama.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        params.vocab_only = vocab_only
        mark = llama_log().mark()
        ptr = self._llama.llama_model_load_from_file(str(path).encode(), params)
        if not ptr:
            raise load_failure(path, llama_log().since(mark))
        self.ptr: Any = ptr
        self.vocab = self._llama.llama_model_get_vocab(ptr)

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as llama.cpp stores it (as text)."""
        buf = ctypes.create_string_buffer(512)
        n = self._llama.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            self._llama.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def chat_template(self) -> str | None:
        raw = self._llama.llama_model_chat_template(self.ptr, None)
        return raw.decode("utf-8", "replace") if raw else None

    def _free(self, ptr: Any) -> None:
        self._llama.llama_model_free(ptr)


class LlamaContext(_OwnedPointer):
    """Owns a ``llama_context *``: the KV cache shared by all sequences (unified, so
    any sequence may use any cell) and the compute buffers."""

    def __init__(
        self,
        model: LlamaModel,
        n_ctx: int,
        n_seq_max: int,
        n_batch: int,
        flash_attn: str,
        n_threads: int,
    ) -> None:
        self._llama = lib()
        self.model = model
        params = self._llama.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq_max
        params.kv_unified = True
        # a full-size sliding-window cache (llama.cpp's default, set here because the prefix
        # cache depends on it): cells outside the window are kept, so a copied prefix is whole
        params.swa_full = True
        params.flash_attn_type = FLASH_ATTN_TYPES[flash_attn]
        threads = n_threads or default_threads()
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        mark = llama_log().mark()
        ptr = self._llama.llama_init_from_model(model.ptr, params)
        if not ptr:
            detail = "; ".join(llama_log().since(mark)[-3:])
            raise OutOfMemoryError(f"not enough memory for a llama.cpp context of {n_ctx} cells (try a smaller context_len): {detail}")
        self.ptr: Any = ptr
        self.memory = self._llama.llama_get_memory(ptr)
        self.n_ctx = int(self._llama.llama_n_ctx(ptr))

    def launch(self, batch: Any) -> None:
        """Start one ``llama_decode``; ctypes releases the GIL for its duration.

        A GPU backend returns once the work is queued (the outputs are read after
        ``wait``), so the host can do other work meanwhile; the CPU backend returns when
        it is done.  Return codes (llama.h): 1 = no KV slot for the batch, 2 = aborted,
        -1 = invalid batch, < -1 = fatal.  The engine reserves every decode's cells
        beforehand, so any non-zero code here is a real fault (and nothing is left running).
        """
        check_decode(self._llama.llama_decode(self.ptr, batch))

    def wait(self) -> None:
        """Wait until the launched decode is done (at once on the CPU backend)."""
        self._llama.llama_synchronize(self.ptr)

    def remove_sequence(self, seq_id: int) -> None:
        """Free every KV cell of one sequence (positions 0..end)."""
        self._llama.llama_memory_seq_rm(self.memory, seq_id, -1, -1)

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Make the cells of ``src`` at positions [0, length) belong to ``dst`` too (the
        unified cache shares them: nothing is copied or recomputed)."""
        self._llama.llama_memory_seq_cp(self.memory, src, dst, 0, length)

    def sequence_max_pos(self, seq_id: int) -> int:
        """Highest position the cache holds for a sequence, -1 when it holds none."""
        return int(self._llama.llama_memory_seq_pos_max(self.memory, seq_id))

    def logits_ptr(self) -> Any:
        """All output rows of the last decode, in batch order, ``n_vocab`` floats each."""
        return self._llama.llama_get_logits(self.ptr)

    def state_size(self) -> int:
        """Bytes of the context's live state (KV cells in use plus the output buffer)."""
        return int(self._llama.llama_state_get_size(self.ptr))

    def _free(self, ptr: Any) -> None:
        self._llama.llama_free(ptr)


class SamplerChain(_OwnedPointer):
    """Owns a ``llama_sampler *`` chain for the device sampler of one request's sequence."""

    def __init__(self, parts: list[Any]) -> None:
        self._llama = lib()
        params = self._llama.llama_sampler_chain_default_params()
        params.no_perf = True
        self.ptr: Any = self._llama.llama_sampler_chain_init(params)
        for part in parts:
            self._llama.llama_sampler_chain_add(self.ptr, part)  # the chain now owns the part

    def _free(self, ptr: Any) -> None:
        self._llama.llama_sampler_free(ptr)
