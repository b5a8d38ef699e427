"""Structured output in the engine: one llguidance matcher per constrained request, and the
masks of a step's constrained rows applied together before the host sampler.

- ``Grammars`` (one per model) builds llguidance's tokenizer from the loaded llama.cpp
  vocabulary once, on the first constrained request (``llguidance.llamacpp`` reads every
  token's bytes, about a second on a 262k vocabulary), and makes each request's
  ``Constraint`` on the caller's thread, so compiling a grammar never stalls the engine.
- ``mask_rows`` runs on the engine thread once per step: llguidance fills the allowed-token
  bitmask of every constrained row in one call (its own thread pool, ``LLExecutor``), and
  the disallowed logits of those rows become -inf.  Rows without a constraint are not
  touched, and a constrained request never leaves the host path (``runs_on_device``), so
  it costs its own row only.
- ``Constraint.consume`` feeds the chosen token back; the engine ends the request when the
  matcher is stopped (the grammar is complete) or in error.
"""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..errors import RocmInferError
from .bindings import lib
from .vocab import Vocab

if TYPE_CHECKING:  # llguidance is imported on first use: most requests are not constrained
    from llguidance import LLExecutor, LLMatcher, LLTokenizer


class Constraint:
    """One request's matcher; after submission only the engine thread touches it."""

    def __init__(self, matcher: LLMatcher, executor: LLExecutor) -> None:
        self.matcher = matcher
        self.executor = executor  # the model's llguidance thread pool, shared by its requests

    def consume(self, token: int) -> None:
        self.matcher.consume_token(token)

    @property
    def ended(self) -> bool:
        """The grammar is complete (only an end token could follow), or the matcher failed."""
        return self.matcher.is_stopped()

    @property
    def error(self) -> RocmInferError | None:
        if not self.matcher.is_error():
            return None
        return RocmInferError(f"structured output failed: {self.matcher.get_error()}")


class Grammars:
    """llguidance's view of one model's vocabulary, built once and shared by its requests."""

    def __init__(self, vocab: Vocab) -> None:
        self._vocab = vocab
        self._lock = threading.Lock()
        self._tokenizer: LLTokenizer | None = None
        self._executor: LLExecutor | None = None

    def constraint(self, grammar: str) -> Constraint:
        """A fresh matcher for ``grammar`` (already validated by ``structured``)."""
        import llguidance

        matcher = llguidance.LLMatcher(self._llg_tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise RocmInferError(f"structured output: the grammar cannot be used with this vocabulary: {matcher.get_error()}")
        return Constraint(matcher, self._executor)  # type: ignore[arg-type]  # set with the tokenizer

    def prepare(self) -> None:
        """Build the tokenizer ahead of the first constrained request."""
        self._llg_tokenizer()

    def _llg_tokenizer(self) -> LLTokenizer:
        """Built on first use, under a lock: callers of one model may start constrained
        requests on several threads at once."""
        with self._lock:
            if self._tokenizer is None:
                lib()  # the bindings llguidance.llamacpp imports must point at this package's libllama
                import llguidance
                import llguidance.llamacpp

                with warnings.catch_warnings():  # it calls a deprecated binding once per token
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._tokenizer = llguidance.llamacpp.lltokenizer_from_vocab(
                        self._vocab.ptr, n_vocab=self._vocab.n_tokens, eos_token=sorted(self._vocab.eog_tokens)
                    )
                self._executor = llguidance.LLExecutor()
            return self._tokenizer


def mask_rows(logits: np.ndarray, constraints: list[Constraint]) -> None:
    """Set the logits a constraint forbids to -inf, in place, for ``logits[i]`` under
    ``constraints[i]`` (all of one model): one llguidance call computes every row's bitmask."""
    import llguidance.numpy as llg_numpy

    n_vocab = logits.shape[1]
    bitmask = llg_numpy.allocate_token_bitmask(len(constraints), n_vocab)
    llg_numpy.fill_next_token_bitmask_par(constraints[0].executor, [(c.matcher, i) for i, c in enumerate(constraints)], bitmask)
    # bit j of 32-bit word w allows token 32 * w + j: little-endian bytes unpack in token order
    allowed = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")[:, :n_vocab].astype(bool)
    np.copyto(logits, -np.inf, where=~allowed)
