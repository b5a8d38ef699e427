"""llama-server's ``/completion`` chunks turned into the ``Token``s the in-process engine emits.

Pure: a chunk (a decoded JSON object) in, tokens out, no I/O, so every case is tested
on hand-made chunks (``tests/test_chunk_reader.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..types import FinishReason, GenerateConfig, Token

_STOP_REASONS: dict[str, FinishReason] = {"eos": "stop", "word": "stop", "limit": "length"}
UNKNOWN_ID = -1  # a token llama-server generated but never sent (see ``ChunkReader``)

# ``byte_ids(char, count)``: the ids of the ``count`` single-byte tokens that spell ``char``, or None
ByteIds = Callable[[str, int], "list[int] | None"]
Detokenize = Callable[[list[int]], str]


class ChunkReader:
    """llama-server's ``/completion`` chunks in, the in-process engine's ``Token``s out.

    What the server does differently, and how it is undone here (tools/server/
    server-context.cpp, ``process_token``):

    - The end-of-generation token comes as its own chunk, with empty text or with the
      text a possible stop string was holding back.  In-process it ends the request
      unseen unless it releases such text, and then it carries that text (native
      ``Engine._emit``); the same here.
    - A token after which the text ends inside a UTF-8 character gets no chunk at all:
      the next complete chunk carries only its own id, but ``tokens_predicted`` counts
      every token.  The missing tokens are emitted before it, with empty text, so
      counts and positions match in-process.  Their ids are recovered exactly when the
      character is spelled by single-byte tokens (``byte_ids``: byte-fallback
      vocabularies such as Gemma's and Llama 2's); otherwise the server has sent no
      trace of them and the id is ``UNKNOWN_ID``.  When generation ends inside a
      character (``max_tokens``, or an end token after an unfinished character) the
      last tokens are never sent: they are counted, the last carrying U+FFFD, which is
      what in-process releases then.
    - Text that could begin a stop string is held back by the server and, when the
      request reaches ``max_tokens``, never sent; in-process it is released on the last
      token.  The ids of the tokens whose chunks came without text are kept, and at that
      end their text (``detokenize``) goes to the last of them, which is why a token with
      empty text waits for the next chunk (tokens with text go out at once, so no
      visible text waits).
    - Stop token ids have no server option: the stream ends at one, which, as in-process,
      is emitted only to carry text held back before it.
    """

    def __init__(self, config: GenerateConfig, eog_ids: frozenset[int], byte_ids: ByteIds, detokenize: Detokenize) -> None:
        self._eog = frozenset() if config.ignore_eos else eog_ids
        self._stop_ids = frozenset(config.stop_tokens)
        self._stops = bool(config.stop)
        self._logprobs = config.logprobs
        self._top = config.top_logprobs > 0
        self._byte_ids = byte_ids
        self._detokenize = detokenize
        self._pending: Token | None = None
        self._held: list[int] = []  # tokens whose chunks came without text since the last text
        self._predicted = 0  # tokens the server has accounted for, sent or not
        self.generated = 0  # tokens handed out
        self.prompt_tokens = 0
        self.started = False  # a chunk with a generated token's id has arrived
        self.reason: FinishReason | None = None  # set once the stream has ended

    @property
    def complete(self) -> bool:
        """llama-server ends the stream with its final chunk."""
        return self.reason is not None

    def feed(self, data: dict[str, Any]) -> list[Token]:
        """The tokens one chunk releases; sets ``reason`` when the chunk ends the stream."""
        self.prompt_tokens = int(data.get("tokens_evaluated", self.prompt_tokens))
        if data.get("stop"):  # the final chunk: its text and ids were in the partials
            out = self._release()
            missing = int(data.get("tokens_predicted", self._predicted)) - self._predicted
            stop_type = data.get("stop_type", "")
            if stop_type in ("limit", "eos") and missing > 0:  # ended inside a character: never sent
                out += self._count([Token(UNKNOWN_ID, "") for _ in range(missing - 1)] + [Token(UNKNOWN_ID, "\ufffd")])
            elif stop_type == "limit" and self._held and out and out[-1].id == self._held[-1]:
                last = out[-1]  # the held-back text of a stop string that never completed
                out[-1] = dataclasses.replace(last, text=last.text + self._held_text())
            self.reason = _STOP_REASONS.get(stop_type, "stop")
            return out
        ids = data.get("tokens") or []
        if not ids:  # a progress or start chunk
            return []
        self.started = True
        token, text = int(ids[-1]), data.get("content", "")
        predicted = int(data.get("tokens_predicted", self._predicted + 1))
        missing = [Token(i, "") for i in self._recover(text, predicted - self._predicted - 1, token)]
        self._predicted = predicted
        out = self._release() + self._count(missing)
        current = Token(token, text, *_logprobs(data, self._top)) if self._logprobs else Token(token, text)
        if token in self._stop_ids:  # its chunk's text may hold its own piece: use the held ids
            self.reason = "stop"
            tail = self._held_text()
            return out + self._count([dataclasses.replace(current, text=tail)] if tail else [])
        if token in self._eog:  # the server sends exactly the held-back text with it
            self._held = []
            return out + self._count([current] if text else [])
        if text:
            self._held = []
            out += self._count([current])
        else:
            self._held.append(token)
            self._pending = current
        return out

    def _held_text(self) -> str:
        return self._detokenize(self._held) if self._stops and self._held else ""

    def _release(self) -> list[Token]:
        pending, self._pending = self._pending, None
        return self._count([pending]) if pending is not None else []

    def _count(self, tokens: list[Token]) -> list[Token]:
        self.generated += len(tokens)
        return tokens

    def _recover(self, text: str, count: int, last: int) -> list[int]:
        if count <= 0:
            return []
        ids = self._byte_ids(text[-1], count + 1) if text else None
        if ids is not None and len(ids) == count + 1 and ids[-1] == last:
            return ids[:-1]
        return [UNKNOWN_ID] * count


def _logprobs(data: dict[str, Any], top: bool) -> tuple[float | None, tuple[tuple[int, float], ...] | None]:
    """The chunk's token's logprob and, with ``top``, its step's most likely tokens (``n_probs``
    of them: llama-server's ``top_logprobs``, from the logits before sampling)."""
    probs = data.get("completion_probabilities") or []
    if not probs:
        return None, None
    best = probs[-1].get("top_logprobs") if top else None
    return probs[-1].get("logprob"), tuple((int(p["id"]), float(p["logprob"])) for p in best) if best is not None else None
