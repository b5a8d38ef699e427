"""A ``llama_batch`` whose arrays are numpy buffers owned by Python.

``llama_batch_init`` would allocate the arrays in C and leave ``seq_id`` as an
array of per-token pointers, which Python can only fill one ctypes write at a
time.  Here every array is a numpy buffer and each token's ``seq_id`` pointer
points at its own slot of one int32 array, so a whole step is written with a
few vectorised numpy assignments.  Nothing is allocated in C, so there is
nothing to free: the buffers live exactly as long as this object.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .bindings import lib


class Batch:
    def __init__(self, capacity: int) -> None:
        llama = lib()
        self.capacity = capacity
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq_id = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        seq_ptr_type = ctypes.POINTER(ctypes.c_int32)
        self._seq_ptrs = (seq_ptr_type * capacity)(
            *[ctypes.cast(self.seq_id.ctypes.data + 4 * i, seq_ptr_type) for i in range(capacity)]
        )
        self.struct: Any = llama.llama_batch()
        self.struct.token = self.token.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.struct.embd = None
        self.struct.pos = self.pos.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.struct.n_seq_id = self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.struct.seq_id = ctypes.cast(self._seq_ptrs, ctypes.POINTER(seq_ptr_type))
        self.struct.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self.size = 0

    def clear(self) -> None:
        self.size = 0

    def add(self, tokens: list[int], start_pos: int, seq_id: int, last_wants_logits: bool) -> int:
        """Append one sequence's tokens at consecutive positions; returns the batch
        index of the last one (where its logits will be)."""
        n = len(tokens)
        lo, hi = self.size, self.size + n
        self.token[lo:hi] = tokens
        self.pos[lo:hi] = np.arange(start_pos, start_pos + n, dtype=np.int32)
        self.seq_id[lo:hi] = seq_id
        self.logits[lo:hi] = 0
        self.logits[hi - 1] = 1 if last_wants_logits else 0
        self.size = hi
        return hi - 1

    def add_decodes(self, tokens: list[int], positions: list[int], seq_ids: list[int]) -> range:
        """Append one token per decoding sequence, each wanting its logits, in three
        vectorised writes; returns their batch indices."""
        lo, hi = self.size, self.size + len(tokens)
        self.token[lo:hi] = tokens
        self.pos[lo:hi] = positions
        self.seq_id[lo:hi] = seq_ids
        self.logits[lo:hi] = 1
        self.size = hi
        return range(lo, hi)

    def finish(self) -> Any:
        """The C struct, ready for ``llama_decode``."""
        self.struct.n_tokens = self.size
        return self.struct
