"""Property tests (hypothesis) for admission: random request mixes (shared prefixes,
cancellations, early stops, the prefix cache on and off, cells given a few at a time so
that requests grow and are preempted) run through the engine's own planning
(``Engine._make_room``: growth and preemption; ``Engine._plan``: ``KvSlots`` matching and
eviction, then ``plan_step``) against a model of llama.cpp's unified KV cache.  Each step:
every decoding request has a cell reserved for its token, no more admitted than free ids,
no more cells reserved than free, the queue admitted in order, the head admitted whenever
it fits; the cells really filled never exceed the context nor what the ledger charges;
every request ends within a bound, and at the end every cell is free.

``UnifiedCache`` stands in for ``LlamaContext``: it keeps, per sequence, which cell holds
each position, and shares cells on ``copy_prefix`` as llama.cpp's unified cache does.  A
real context would decode each step (minutes for the examples here) and could not say
which cell a position uses, which is what the properties are about.
"""

from __future__ import annotations

import functools
import itertools
import queue
from dataclasses import dataclass, field
from types import SimpleNamespace

from hypothesis import given, settings, strategies as st

from rocm_infer.native.decode_run import MAX_RUN_STEPS
from rocm_infer.native.engine import Engine
from rocm_infer.native.kv_slots import KvSlots
from rocm_infer.native.request import Request, RequestStatus
from rocm_infer.native.stats import EngineStats
from rocm_infer.types import GenerateConfig


class UnifiedCache:
    """Positions of each sequence mapped to cell ids; a cell lives while a sequence holds it."""

    def __init__(self, n_ctx: int) -> None:
        self.n_ctx = n_ctx
        self.seqs: dict[int, dict[int, int]] = {}
        self._ids = itertools.count()

    def fill(self, seq: int, start: int, count: int) -> None:
        cells = self.seqs.setdefault(seq, {})
        for pos in range(start, start + count):
            assert pos not in cells, f"position {pos} of sequence {seq} computed twice"
            cells[pos] = next(self._ids)

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        source = self.seqs.get(src, {})
        assert all(pos in source for pos in range(length)), "a prefix copied before it was computed"
        self.seqs.setdefault(dst, {}).update({pos: source[pos] for pos in range(length)})

    def remove_sequence(self, seq: int) -> None:
        self.seqs.pop(seq, None)

    @property
    def used(self) -> int:
        return len({cell for cells in self.seqs.values() for cell in cells.values()})


@dataclass
class Plan:
    """One request of a scenario: when it arrives, what it does."""

    prompt: list[int]
    max_tokens: int
    stops_after: int  # generated tokens before it ends on its own (a stop)
    arrives: int
    cancel_at: int | None
    request: Request = field(init=False)


TOKENS = st.lists(st.integers(0, 2), min_size=1, max_size=40)  # few ids: prefixes are shared often


@st.composite
def scenarios(draw):
    n_ctx = draw(st.integers(32, 128))
    plans = []
    for _ in range(draw(st.integers(1, 10))):
        prefix = draw(st.sampled_from([[], [7] * 20, [7] * 20 + [8] * 10]))
        prompt = (prefix + draw(TOKENS))[: n_ctx - 1]
        plans.append(Plan(prompt, draw(st.integers(1, 80)), draw(st.integers(1, 80)), draw(st.integers(0, 12)),
                          draw(st.none() | st.integers(0, 30))))
    growth = draw(st.integers(1, 8) | st.integers(1, 80))
    return n_ctx, draw(st.integers(1, 5)), draw(st.integers(1, 48)), growth, draw(st.booleans()), draw(st.booleans()), plans


class Sim:
    """The engine's bookkeeping around ``Engine._make_room`` and ``Engine._plan``: admit, run,
    apply, finish.  With ``runs``, a step that only decodes every running request becomes a
    native run of as many steps as ``Request.steps_left`` allows (``Engine._decode_run``),
    ending early where a request's stop comes."""

    def __init__(self, n_ctx: int, slots: int, budget: int, growth: int, prefix_cache: bool, runs: bool = False) -> None:
        self.cache = UnifiedCache(n_ctx)
        self.kv = KvSlots(self.cache, slots, prefix_cache)  # type: ignore[arg-type]
        self.kv.growth = growth
        self._n_ctx, self._budget, self.slots, self._runs = n_ctx, budget, slots, runs
        self._running: list[Request] = []
        self._waiting: list[Request] = []
        self.preempted: list[Request] = []
        self._arrivals = itertools.count()
        self.engine = SimpleNamespace(kv=self.kv, _waiting=self._waiting, _running=self._running, _n_ctx=n_ctx, _budget=budget,
                                      _chooser=SimpleNamespace(release=lambda request: None), stats=EngineStats())
        self.engine._preempt = self._preempt
        self.engine._leave_running = lambda request, keep: Engine._leave_running(self.engine, request, keep)
        self._granted_all = True  # every growth this step got all it asked for
        self.kv.grow = self._grow  # type: ignore[method-assign]

    def _grow(self, request: Request, n_ctx: int) -> bool:
        whole = KvSlots.grow(self.kv, request, n_ctx)
        self._granted_all &= whole
        return whole

    def arrive(self, request: Request, now: int) -> None:
        request.submitted_at = now + next(self._arrivals) * 1e-6  # distinct, as the engine's clock readings are
        self._waiting.append(request)

    def _preempt(self, request: Request) -> None:
        ledger = self.kv._ledger
        assert not any(ledger.freeable(seq) for seq in self.kv.cached_ids()), "a request preempted while a cached prefix could free cells"
        self.preempted.append(request)
        Engine._preempt(self.engine, request)

    def step(self, now: int) -> None:
        for request in [*self._running, *self._waiting]:
            if request.cancel_event.is_set():
                self.finish(request, RequestStatus.FINISHED_CANCELLED)
        self._granted_all, preempted_before = True, len(self.preempted)
        room = Engine._make_room(self.engine)
        short = not self._granted_all or len(self.preempted) > preempted_before
        for request in self._running:  # the token each decodes next has its cell
            assert request.pending > 1 or request.n_computed < request.reserved_end, "a decode without a reserved cell"
        arrivals = [r.submitted_at for r in self._waiting]
        assert arrivals == sorted(arrivals), "the queue left arrival order"
        waiting_before = list(self._waiting)
        plan = Engine._plan(self.engine, room)
        admitted = list(plan.admitted)
        # never admits past a free id; never reserves more cells than are free; in order;
        # nothing while a running request is short of cells
        assert not short or not admitted
        assert len(admitted) <= self.kv.free_ids
        assert self.kv.free_ids + len(self.kv.cached_ids()) + len(self._running) == self.slots
        assert sum(r.cells_needed(self._n_ctx, self.kv.growth) for r in admitted) <= self.kv.free_cells
        assert admitted == waiting_before[: len(admitted)]
        assert plan.n_tokens <= self._budget
        head = waiting_before[0] if waiting_before else None
        if room and head is not None and head not in admitted and not head.deferred:  # never starves the head
            budget_left = self._budget - sum(c.count for c in plan.chunks)
            fits = self.kv.free_ids > 0 and head.cells_needed(self._n_ctx, self.kv.growth) <= self.kv.free_cells
            assert not fits or budget_left == 0, "the head of the queue fits and was not admitted"
        for request in admitted:
            self._waiting.remove(request)
            self.kv.admit(request, self._n_ctx)
            self._running.append(request)
            request.status = RequestStatus.RUNNING
        steps = self._run_length(plan)
        for chunk in plan.chunks:
            count = steps or chunk.count
            assert chunk.start + count <= chunk.request.reserved_end, "a token decoded past its request's cells"
            self.cache.fill(chunk.request.seq_id, chunk.start, count)
            chunk.request.n_computed += count
        assert self.cache.used <= self._n_ctx, "more cells filled than the context has"
        charged = self.kv.stats().cells_held + sum(self.kv._ledger.charge(r.seq_id) for r in self._running)
        assert self.cache.used <= charged <= self._n_ctx, "the ledger charges fewer cells than are filled"
        for chunk in plan.chunks:
            request = chunk.request
            if chunk.wants_logits and not request.status.finished:
                request.generated.extend([1] * (steps or 1))
                if len(request.generated) >= request.stops_after:
                    self.finish(request, RequestStatus.FINISHED_STOPPED)
                elif len(request.generated) >= request.config.max_tokens or request.n_tokens >= self._n_ctx:
                    self.finish(request, RequestStatus.FINISHED_LENGTH)

    def _run_length(self, plan) -> int:
        """Steps of a native run, or 0 where the step is not one (``Engine._can_run``)."""
        chunks = plan.chunks
        if not self._runs or plan.admitted or not chunks or len(chunks) != len(self._running):
            return 0
        if not all(c.count == 1 and c.wants_logits for c in chunks):
            return 0
        requests = [c.request for c in chunks]
        return min(MAX_RUN_STEPS, *(r.steps_left(self._n_ctx) for r in requests),
                   *(r.stops_after - len(r.generated) for r in requests))

    def finish(self, request: Request, status: RequestStatus) -> None:
        if request in self._running:
            self._running.remove(request)
            self.kv.finish(request, keep=status in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH))
        elif request in self._waiting:
            self._waiting.remove(request)
        request.status = status


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_admission_never_over_reserves_never_overfills_and_never_starves(scenario):
    n_ctx, slots, budget, growth, prefix_cache, runs, plans = scenario
    sim = Sim(n_ctx, slots, budget, growth, prefix_cache, runs)
    for plan in plans:
        plan.request = Request(list(plan.prompt), GenerateConfig(max_tokens=plan.max_tokens), queue.SimpleQueue())
        plan.request.stops_after = plan.stops_after  # type: ignore[attr-defined]
    # each request alone needs at most ceil(prompt / budget) + max_tokens steps; one at a time,
    # and then again for each preemption (prefilling what it had generated as well)
    bound = 13 + 3 * sum(-(-(len(p.prompt) + p.max_tokens) // budget) + p.max_tokens + 1 for p in plans)
    for now in range(bound):
        for plan in plans:
            if plan.arrives == now:
                sim.arrive(plan.request, now)
            if plan.cancel_at == now:
                plan.request.cancel_event.set()
        sim.step(now)
        if now > 12 and all(p.request.status.finished for p in plans):
            break
    assert all(p.request.status.finished for p in plans), "a request never ended"
    for seq in list(sim.kv.cached_ids()):  # the cache's entries go; then nothing may be held
        sim.kv._evict(seq)
    assert sim.cache.used == 0 and sim.cache.seqs == {}
    assert sim.kv.free_cells == n_ctx and sim.kv.free_ids == slots


def test_requests_that_each_need_the_whole_context_finish_one_after_another_by_preemption():
    sim = Sim(n_ctx=64, slots=4, budget=16, growth=2, prefix_cache=False, runs=True)
    requests = [Request(list(range(i, i + 10)), GenerateConfig(max_tokens=60), queue.SimpleQueue()) for i in range(4)]
    for request in requests:
        request.stops_after = 100  # type: ignore[attr-defined]
        sim.arrive(request, 0)
    for now in range(4 * 64 * 2):
        sim.step(now)
        if all(r.status.finished for r in requests):
            break
    assert all(r.status is RequestStatus.FINISHED_LENGTH and len(r.generated) == 64 - 10 for r in requests)
    assert sim.preempted and requests[0] not in sim.preempted  # the oldest gives way to none
    assert sim.cache.used == 0 and sim.kv.free_cells == 64


def prefilled(kv: KvSlots, cache: UnifiedCache, prompt: list[int], max_tokens: int) -> Request:
    """A request admitted (reusing what it can) with its whole prompt computed, running."""
    request = Request(prompt, GenerateConfig(max_tokens=max_tokens), queue.SimpleQueue())
    kv.match([request], [])
    kv.admit(request, cache.n_ctx)
    cache.fill(request.seq_id, request.reuse_len, len(prompt) - request.reuse_len)
    request.n_computed = len(prompt)
    request.status = RequestStatus.RUNNING
    return request


def test_growth_spares_a_cached_prefix_that_running_requests_share():
    cache = UnifiedCache(64)
    kv = KvSlots(cache, 3, prefix_cache=True)  # type: ignore[arg-type]
    kv.growth = 8
    run = functools.partial(prefilled, kv, cache)

    system = run([7] * 20, max_tokens=1)
    kv.finish(system, keep=True)  # a cached system prompt, 20 cells
    user = run([7] * 20 + [2] * 30, max_tokens=40)  # holds all of it, and its own 30
    run([3] * 11, max_tokens=40)  # reserves 12 cells: all the rest but one
    assert kv.free_cells == 1 and kv.cached_ids() == {system.seq_id}
    assert not kv.grow(user, 64)  # short: evicting the entry would free no cell
    assert kv.cached_ids() == {system.seq_id} and kv.stats().evictions == 0
    assert user.reserved_end == 51 + 1  # it took the free one


def test_admission_evicts_only_cached_prefixes_that_free_cells_when_it_lacks_cells():
    sim = Sim(n_ctx=64, slots=4, budget=64, growth=8, prefix_cache=True)
    run = functools.partial(prefilled, sim.kv, sim.cache)
    kv = sim.kv

    system = run([7] * 20, max_tokens=1)
    kv.finish(system, keep=True)  # a cached system prompt, 20 cells, the oldest entry
    user = run([7] * 20 + [2] * 30, max_tokens=40)  # shares all of it, and reserves 31 of its own
    sim._running.append(user)
    other = run([5] * 6, max_tokens=1)
    kv.finish(other, keep=True)  # a cached prefix nobody shares, 6 cells
    assert kv.free_cells == 7 and kv.free_ids == 1
    head = Request([9] * 10, GenerateConfig(max_tokens=5), queue.SimpleQueue())  # needs 11 cells
    sim.arrive(head, 0)
    plan = Engine._plan(sim.engine, True)
    assert plan.admitted == (head,)
    # evicting the system prompt first (the least recently used) would have freed nothing
    assert kv.cached_ids() == {system.seq_id} and kv.stats().evictions == 1
