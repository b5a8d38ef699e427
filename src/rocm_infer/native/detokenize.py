"""Incremental detokenization that never splits a UTF-8 character.

A token's bytes may end in the middle of a multi-byte character (byte-level BPE
splits CJK and emoji across tokens).  The standard library's incremental UTF-8
decoder already holds back an incomplete tail until the next bytes complete it,
so this wraps it rather than re-implementing the UTF-8 state machine.
"""

from __future__ import annotations

import codecs


class Detokenizer:
    """Feed token bytes, get the text they complete.  ``flush`` at the end turns a
    tail that never completed into U+FFFD rather than dropping it."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
