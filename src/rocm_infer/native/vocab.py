"""Tokenizer calls on a loaded model's vocabulary.

These only read the vocabulary (immutable after load), so callers may tokenize
on their own threads while the engine thread decodes: the prompt is tokenized
before it is submitted, keeping that work off the engine's hot path.
"""

from __future__ import annotations

import array
import ctypes
import itertools
from typing import Any

from .bindings import lib


class Vocab:
    def __init__(self, vocab_ptr: Any) -> None:
        self._llama = lib()
        self.ptr = vocab_ptr
        self.n_tokens = int(self._llama.llama_vocab_n_tokens(vocab_ptr))
        self.add_bos = bool(self._llama.llama_vocab_get_add_bos(vocab_ptr))
        # These tables are read once at load, so no request pays for them.  eog_tokens:
        # end-of-generation ids (EOS, EOT, <end_of_turn>...), as llama.cpp marks them.
        self._blob, self._offsets = self._read_pieces()
        self.eog_tokens = frozenset(t for t in range(self.n_tokens) if self._llama.llama_vocab_is_eog(self.ptr, t))
        self.suppressed = self._read_suppressed()

    def _read_suppressed(self) -> tuple[int, ...]:
        """``tokenizer.ggml.suppress_tokens``: ids the model must never produce.  llama.cpp's
        own sampler chain (``common/sampling.cpp``, so llama-server) bans them with a logit
        bias of -inf; the engine does the same on both of its paths."""
        count = ctypes.c_int32(0)
        ids = self._llama.llama_vocab_get_suppress_tokens(self.ptr, ctypes.byref(count))
        return tuple(int(ids[i]) for i in range(count.value)) if ids and count.value > 0 else ()

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """``parse_special`` lets a rendered chat template's control tokens
        (``<start_of_turn>``) become single tokens, as llama-server does."""
        data = text.encode("utf-8")
        capacity = len(data) + 16
        buf = (ctypes.c_int32 * capacity)()
        n = self._llama.llama_tokenize(self.ptr, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:  # too small: -n is the size needed
            capacity = -n
            buf = (ctypes.c_int32 * capacity)()
            n = self._llama.llama_tokenize(self.ptr, data, len(data), buf, capacity, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes of one token; control tokens render as nothing.  Bytes, not
        text: a token may hold part of a UTF-8 character."""
        if not 0 <= token < self.n_tokens:
            return b""
        return self._blob[self._offsets[token] : self._offsets[token + 1]]

    def shown_piece(self, token: int) -> bytes:
        """A token's bytes as log-probabilities show it: its piece, or for a control token
        (which ``piece`` renders as nothing) its own text, ``<end_of_turn>``, as llama-server
        shows it."""
        piece = self.piece(token)
        if piece or not 0 <= token < self.n_tokens:
            return piece
        buf = ctypes.create_string_buffer(256)
        n = self._llama.llama_token_to_piece(self.ptr, token, buf, len(buf), 0, True)
        return buf.raw[: max(0, n)]

    def _read_pieces(self) -> tuple[bytes, array.array[int]]:
        """Every token's bytes, read once, end to end in one buffer with each token's
        offset in another: a lookup on the per-token path is then two reads from two
        compact tables.  A list of 128k separate bytes objects was as fast only while it
        was in cache: on the 2-core VM, 80 lookups of random tokens after a 5 ms pause took
        15-19 us each from the list, 3.5-6.3 us from these tables (0.2-0.4 us warm)."""
        buf = ctypes.create_string_buffer(256)
        pieces = []
        for token in range(self.n_tokens):
            n = self._llama.llama_token_to_piece(self.ptr, token, buf, len(buf), 0, False)
            if n < 0:
                big = ctypes.create_string_buffer(-n)
                n = self._llama.llama_token_to_piece(self.ptr, token, big, len(big), 0, False)
                pieces.append(big.raw[:n])
            else:
                pieces.append(buf.raw[:n])
        return b"".join(pieces), array.array("q", itertools.accumulate(map(len, pieces), initial=0))

    def is_eog(self, token: int) -> bool:
        return token in self.eog_tokens

    def special_text(self, which: str) -> str:
        """The literal text of the BOS or EOS token ("" when the model has none),
        for chat templates that write it themselves."""
        token = getattr(self._llama, f"llama_vocab_{which}")(self.ptr)
        if token < 0:
            return ""
        return (self._llama.llama_vocab_get_text(self.ptr, token) or b"").decode("utf-8", "replace")

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")
