"""Plans one engine step; never touches the model or changes a request.

There are no prefill and decode phases: every request has tokens not yet in the
KV cache (``pending``), and each step gives them room in one batch of at most
``budget`` tokens:

1. every running request with one pending token (decoding) gets it first, so
   live streams keep their pace while long prompts are prefilled;
2. running requests still prefilling get chunks from what budget is left;
3. waiting requests are admitted in arrival order while a sequence slot is free
   and the KV cells they need now fit: up to ``growth`` positions (one slot's share,
   the prompt counted in it), or their tokens and one more where they pass it, capped by
   prompt + ``max_tokens`` and the context (``Request.cells_needed``).  ``max_tokens`` is a
   ceiling, not a reservation, so one request asking for the whole context does not
   hold every other back; a running request is given more cells as it generates, and
   when none are left the newest is preempted and recomputed later (the engine's
   ``_make_room``).  Admission stops at the first request that does not fit, so none
   is overtaken forever, and at one deferred until a running request has computed the
   prefix it will reuse.  A waiting request's ``n_computed`` is the length of the
   prefix it will reuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .request import Request


@dataclass(frozen=True)
class Chunk:
    """``count`` tokens of ``request`` starting at position ``start``."""

    request: Request
    start: int
    count: int

    @property
    def wants_logits(self) -> bool:
        """Logits only where the request's known tokens end: sample (or classify) there."""
        return self.start + self.count == self.request.n_tokens


@dataclass(frozen=True)
class StepPlan:
    admitted: tuple[Request, ...]
    chunks: tuple[Chunk, ...]

    @property
    def n_tokens(self) -> int:
        return sum(chunk.count for chunk in self.chunks)


def plan_step(
    running: Sequence[Request],
    waiting: Sequence[Request],
    free_slots: int,
    free_cells: int,
    n_ctx: int,
    budget: int,
    growth: int,
) -> StepPlan:
    chunks: list[Chunk] = []
    for request in running:
        if request.pending == 1 and budget > 0:
            chunks.append(Chunk(request, request.n_computed, 1))
            budget -= 1
    for request in running:
        if request.pending > 1 and budget > 0:
            count = min(request.pending, budget)
            chunks.append(Chunk(request, request.n_computed, count))
            budget -= count
    admitted: list[Request] = []
    for request in waiting:
        cells = request.cells_needed(n_ctx, growth)
        if request.deferred or free_slots == 0 or budget == 0 or cells > free_cells:
            break
        admitted.append(request)
        free_slots -= 1
        free_cells -= cells
        count = min(request.pending, budget)
        chunks.append(Chunk(request, request.n_computed, count))
        budget -= count
    return StepPlan(tuple(admitted), tuple(chunks))
