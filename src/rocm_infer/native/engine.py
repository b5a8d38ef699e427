"""The engine: one thread owns the llama context and batches every live request.

Callers tokenize on their own thread and ``submit`` a ``Request``; from then on
only the engine thread touches it.  Each step is plan, run, record, deliver:

- ``_make_room`` gives running requests the KV cells their next tokens need,
  preempting the newest when there are none (below);
- ``plan_step`` (pure) picks one token for every decoding request, prefill
  chunks for new ones and admissions (see ``scheduler``), after ``KvSlots`` has
  matched waiting requests with the prefixes they can reuse;
- ``_decode_step`` fills one ``llama_batch`` and launches ``llama_decode`` (the only
  Python that does; ctypes releases the GIL meanwhile), then waits for it;
- ``_record`` has the step's tokens chosen (``TokenChooser``: device or host) and
  appends them to their requests, ending those that reached an end token, their
  length or the end of their structured output: what the next plan depends on;
- ``_deliver`` does the text work of recorded tokens (detokenizing, stop strings,
  handing each request its ``Token`` and, once ended, its ``Finished``).

Delivery either follows the record at once, or, with ``overlap`` (a GPU, where
``llama_decode`` returns before the device is done), runs while the *next* step
decodes: the host's per-token work then costs no step time.  A stop string found
that way ends its request one step late; the extra row it decoded is dropped.
A finished request's cells become a prefix-cache entry or are freed at once, and
never while a decode is in flight.

A request is admitted with cells up to ``growth`` (one slot's share of the context, its
prompt counted in it; ``Request.cells_needed``), and given ``growth`` more at a time as
it generates, so ``max_tokens`` is a ceiling rather than a reservation.  When a running
request has no cell left for its next token and running requests hold all the others,
the one submitted last is preempted, as vLLM does: its cells are freed and it goes back
into the queue (in arrival order, so ahead of every request never admitted) with what it
generated, to be prefilled again (its stream sees only a pause).  The
oldest running request is never preempted for a newer one, so it always progresses.
Its sampler goes with it (a host sampler keeps its penalty window and random state; a
device chain is attached afresh from its seed, so a preempted seeded request may
continue differently than it would have alone).

When a step would only decode one token for each running request, every one of them
is plain (``decode_run.is_plain``: no per-token work that needs Python before the next
step) and nothing new came in or can be admitted, the step becomes a native run
(``_decode_run``): C decodes and samples step after step until a row ends, a row's
length is reached, the run's time is up or ``interrupt`` is set (by ``submit``,
``call``, ``close`` and every cancel); then the run's tokens are recorded and delivered
as each step's would be.

Errors come back as values on the request's sink and are raised in the
caller's thread; an exception inside a step fails the requests of that step,
never the thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError  # the builtin only from 3.11
from typing import Any, TypeVar

import numpy as np

from ..errors import EngineError, ModelClosedError, OutOfMemoryError, RequestTimeoutError, RocmInferError
from ..stream import Finished
from ..types import ClassifyResult, GenerateMetrics, Token
from .batch import Batch
from .decode_run import MAX_RUN_S, MAX_RUN_STEPS, DecodeRuns, is_plain
from .device_sampling import DevicePolicy
from .handles import LlamaContext, NoKvSlotError
from .kv_slots import KvSlots
from .request import Request, RequestKind, RequestStatus
from .sampling import token_logprobs
from .scheduler import Chunk, StepPlan, plan_step
from .stats import EngineStats
from .token_choice import TokenChooser
from .vocab import Vocab

_log = logging.getLogger("rocm_infer.engine")
T = TypeVar("T")
_SHUTDOWN = object()


class Engine:
    def __init__(self, ctx: LlamaContext, vocab: Vocab, n_slots: int, budget: int, weights_bytes: int, device_policy: DevicePolicy,
                 prefix_cache: bool, overlap: bool = False, sampling_threads: int = 1, decode_runs: bool = True) -> None:
        self._ctx = ctx
        self._chooser = TokenChooser(ctx, vocab.n_tokens, device_policy, sampling_threads, vocab.suppressed)
        self._vocab = vocab
        self._n_ctx = ctx.n_ctx
        self._budget = budget
        self._weights_bytes = weights_bytes
        self._batch = Batch(budget)
        self._runs = DecodeRuns(ctx, self._batch, vocab.n_tokens, vocab.eog_tokens, vocab.suppressed, self._chooser.rows)
        self._interrupt = self._runs.interrupt  # set after each put into the inbox and each cancel
        self._decode_runs = decode_runs
        self._n_slots = n_slots
        self.kv = KvSlots(ctx, n_slots, prefix_cache)  # read only on the engine thread (``call``)
        self._running: list[Request] = []
        self._waiting: deque[Request] = deque()
        self._overlap = overlap
        self._undelivered: deque[Request] = deque()  # recorded tokens whose text work is still to do
        self._text_stopped: list[Request] = []  # stop strings found while a decode was in flight
        self._in_flight = False
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self.peak_memory_bytes = weights_bytes
        self._active_bytes: int | None = None  # ``active_memory_bytes``, read again after each decode
        self.stats = EngineStats()
        self._thread = threading.Thread(target=self._loop, name="rocm-infer-engine", daemon=True)
        self._thread.start()

    # ---- caller side -------------------------------------------------------------
    def submit(self, request: Request) -> None:
        with self._close_lock:
            if self._closed:
                raise ModelClosedError("the model is closed; load it again")
            self._inbox.put(request)
            self._interrupt.value = 1

    def canceller(self, request: Request) -> Callable[[], None]:
        """The request's cancel: thread-safe, never blocks (a stream's finalizer calls
        it), and holds neither the engine nor the request."""
        event, interrupt = request.cancel_event, self._interrupt

        def cancel() -> None:
            event.set()
            interrupt.value = 1

        return cancel

    def call(self, fn: Callable[[LlamaContext], T], timeout: float = 30.0) -> T:
        """Run ``fn(ctx)`` on the engine thread between two steps (the context is
        never touched from another thread) and return its result."""
        future: Future[T] = Future()
        with self._close_lock:
            if self._closed:
                raise ModelClosedError("the model is closed; load it again")
            self._inbox.put((fn, future))
            self._interrupt.value = 1
        try:
            return future.result(timeout)
        except FutureTimeoutError as exc:
            if future.cancel():  # not taken yet: it never will be (the engine skips a cancelled call)
                raise EngineError(f"the engine did not take the call within {timeout} s: one step is taking that long") from exc
            if future.done():  # it ended as the wait did (or ``fn`` raised it: then so does this)
                return future.result()
            raise EngineError(f"the call was still running on the engine thread after {timeout} s") from exc

    def close(self) -> None:
        """End every live request with ``ModelClosedError`` and join the thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._inbox.put(_SHUTDOWN)
            self._interrupt.value = 1
        self._thread.join()

    def active_memory_bytes(self) -> int:
        """The weights and the context's live state, read at most once before a step's
        decode and once after it: ``llama_state_get_size`` walks every used cell (~0.1 ms
        here), and a step may end dozens of requests (a ``classify`` of 64 prompts ends them
        all in one), each reporting the figure of its step."""
        if self._active_bytes is None:
            self._active_bytes = self._weights_bytes + self._ctx.state_size()
        return self._active_bytes

    # ---- engine thread -------------------------------------------------------------
    def _loop(self) -> None:
        try:
            # undelivered text with no decode to come is delivered by an empty step
            while self._take_inbox(block=not (self._running or self._waiting or self._undelivered)):
                self._step()
        finally:  # also when the loop itself failed: no request may wait forever
            with self._close_lock:
                self._closed = True
            self._shutdown()

    def _step(self) -> None:
        started = time.perf_counter()
        plan: StepPlan | None = None
        self._active_bytes = None
        try:
            # before the reap: a cancel after this point sets it again, and the run stops for it
            self._interrupt.value = 0
            self._reap(started)
            plan = self._plan(admit=self._make_room())
            if not plan.chunks:
                self._deliver()
                return
            self._admit(plan.admitted)
            self.stats.plan_s += time.perf_counter() - started
            if self._can_run(plan):
                self._decode_run(plan)
            else:
                outputs = self._decode_step(plan)
                self._record(plan, outputs)
                if not self._overlap:
                    self._deliver()
                self.stats.steps += 1
                self.stats.tokens += plan.n_tokens
            self.stats.step_s += time.perf_counter() - started
        except NoKvSlotError as exc:  # the failed decode changed nothing: the step's newest request gives way
            assert plan is not None
            newest = max((chunk.request for chunk in plan.chunks), key=lambda r: r.submitted_at)
            _log.warning("%s; ending the step's newest request, the others retry", exc)
            self._finish(newest, RequestStatus.FINISHED_ERROR, OutOfMemoryError(
                f"no free KV cells for this request ({exc}); the context is shared with the other requests"))
        except Exception as exc:  # a fault in one step fails its requests, not the engine
            error = exc if isinstance(exc, RocmInferError) else EngineError(f"engine step failed: {exc!r}")
            _log.exception("engine step failed")
            failed = {chunk.request for chunk in plan.chunks} if plan else {*self._running, *self._waiting}
            for request in [*failed, *self._undelivered, *self._text_stopped]:
                self._finish(request, RequestStatus.FINISHED_ERROR, error)
            self._undelivered.clear()
            self._text_stopped.clear()

    def _plan(self, admit: bool) -> StepPlan:
        """Match waiting requests with reusable prefixes, free ids for all a step could
        admit (evicting cached prefixes they do not reuse), then plan; while the head of
        the queue still lacks a slot or cells, evict another cached prefix (one that frees
        cells, where only cells are short) and plan again.
        Without ``admit`` (a running request is short of cells) only the running are
        planned: a request admitted then would be the first preempted."""
        if not admit:
            return plan_step(self._running, (), 0, 0, self._n_ctx, self._budget, self.kv.growth)
        self.kv.match(self._waiting, self._running)
        if self._waiting:  # the matches stay valid: the entries they reuse are spared
            self.kv.free_ids_for(self._waiting, len(self._running))
        while True:
            plan = plan_step(self._running, self._waiting, self.kv.free_ids, self.kv.free_cells, self._n_ctx, self._budget, self.kv.growth)
            head = self._waiting[0] if self._waiting else None
            if head is None or head in plan.admitted or head.deferred:
                return plan
            short_of_ids = self.kv.free_ids == 0
            short_of_room = short_of_ids or head.cells_needed(self._n_ctx, self.kv.growth) > self.kv.free_cells
            if not short_of_room or not self.kv.evict_for(head, short_of_ids):  # (else it waits for this step's budget)
                return plan
            self.kv.match(self._waiting, self._running)  # an eviction can take a source away

    def _make_room(self) -> bool:
        """Give each running request cells for its next tokens before the plan, oldest
        first: more once fewer than a native run's longest are left (a run stops at the
        first row out of them), and when one has no cell for its next token and no entry
        or free cell can give it one, preempt the request submitted last (perhaps itself)
        until it has one.  False when some running request got fewer cells than it asked
        for: then nothing is admitted, since the next admitted would be the first preempted."""
        n_ctx, room = self._n_ctx, True
        short = [r for r in self._running if r.reserved_end - r.n_computed < MAX_RUN_STEPS and r.reserved_end < r.limit_end(n_ctx)]
        for request in sorted(short, key=lambda r: r.submitted_at):
            if request.status is not RequestStatus.RUNNING or self.kv.grow(request, n_ctx):
                continue
            room = False
            while request.reserved_end == request.n_computed:
                victim = max(self._running, key=lambda r: r.submitted_at)
                self._preempt(victim)
                if victim is request:
                    break
                self.kv.grow(request, n_ctx)
        return room

    def _preempt(self, request: Request) -> None:
        """Free a running request's cells and put it back in the queue, in arrival order
        (admission keeps the queue so: it comes before every request never admitted), to
        be prefilled again with what it generated."""
        self._leave_running(request, keep=False)
        request.status = RequestStatus.WAITING
        request.seq_id, request.n_computed, request.reserved_end = -1, 0, 0
        request.reuse_from, request.reuse_len, request.deferred = None, 0, False  # (``match`` sets them again)
        later = (i for i, waiting in enumerate(self._waiting) if waiting.submitted_at > request.submitted_at)
        self._waiting.insert(next(later, len(self._waiting)), request)
        self.stats.preemptions += 1
        _log.info("preempted a request for KV cells after %d generated tokens", len(request.generated))

    def _take_inbox(self, block: bool) -> bool:
        """Move submissions into the waiting queue; False once shutdown arrives."""
        try:
            item = self._inbox.get() if block else self._inbox.get_nowait()
        except queue.Empty:
            return True
        while True:
            if item is _SHUTDOWN:
                return False
            if isinstance(item, Request):
                self._waiting.append(item)
            else:
                fn, future = item
                if future.set_running_or_notify_cancel():  # False: its caller gave up waiting
                    try:
                        future.set_result(fn(self._ctx))
                    except Exception as exc:
                        future.set_exception(exc)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _reap(self, now: float) -> None:
        """Finish cancelled and timed-out requests before planning."""
        for request in [*self._running, *self._waiting]:
            if request.cancel_event.is_set():
                self._finish(request, RequestStatus.FINISHED_CANCELLED)
            elif request.expired(now):
                self._finish(request, RequestStatus.FINISHED_ERROR, RequestTimeoutError(f"the request ran past its timeout of {request.config.timeout} s"))

    def _admit(self, admitted: tuple[Request, ...]) -> None:
        now = time.perf_counter()
        # all that will share the steps: the admitted are still in the queue, and no more
        # than the slots run at once
        running = min(self._n_slots, len(self._running) + len(self._waiting))
        for request in admitted:
            self._waiting.remove(request)
            self.kv.admit(request, self._n_ctx)
            self._running.append(request)  # from here on _finish frees its id and cells
            request.status = RequestStatus.RUNNING
            request.admitted_at = request.admitted_at or now  # (its first admission, if preempted since)
            self._chooser.place(request, running)
            request.plain = is_plain(request)

    def _decode_step(self, plan: StepPlan) -> list[tuple[Chunk, int]]:
        """Fill the batch and decode (with ``overlap``, delivering the last step's text
        meanwhile); returns (chunk, batch index) of each output row, in row order."""
        started = time.perf_counter()
        batch = self._batch
        batch.clear()
        # the plan puts decoding sequences (one token, logits wanted) first: one write for all
        n_decodes = next((i for i, c in enumerate(plan.chunks) if c.count != 1 or not c.wants_logits), len(plan.chunks))
        decodes = plan.chunks[:n_decodes]
        indices = batch.add_decodes([c.request.last_token for c in decodes], [c.start for c in decodes], [c.request.seq_id for c in decodes])
        outputs = list(zip(decodes, indices))
        for chunk in plan.chunks[n_decodes:]:
            request = chunk.request
            index = batch.add(request.tokens(chunk.start, chunk.count), chunk.start, request.seq_id, chunk.wants_logits)
            if chunk.wants_logits:
                outputs.append((chunk, index))
        decode_started = time.perf_counter()
        self.stats.fill_s += decode_started - started
        self._ctx.launch(batch.finish())
        self._in_flight = True
        try:
            if self._overlap and self._undelivered:
                self._deliver()  # inside the decode's span: its time is emit time too
        finally:
            try:
                self._ctx.wait()
            finally:
                self._in_flight = False
        self.stats.decode_s += time.perf_counter() - decode_started
        self._active_bytes = None  # the decode took cells
        return outputs

    def _can_run(self, plan: StepPlan) -> bool:
        """The step may become a native run (``decode_run``): it only decodes one token for
        each running request, each is plain, and nothing new came in (``interrupt`` was
        reset before the reap: a put after that sets it, one before is in the inbox).
        Requests left waiting wait for cells or a slot, which only an ending request (that
        ends the run) frees, or for running requests to be given cells they lacked, which
        only a later step's ``_make_room`` does (a row short of cells ends the run)."""
        if not self._decode_runs or plan.admitted or len(plan.chunks) != len(self._running):
            return False
        if not all(c.request.plain and c.count == 1 and c.wants_logits for c in plan.chunks):
            return False
        return self._inbox.empty()

    def _decode_run(self, plan: StepPlan) -> None:
        """Decode steps natively until one of the rows ends (or the run's limits), then
        record and deliver the run's tokens with the effect ``_record`` and ``_deliver``
        would have had step by step."""
        if self._undelivered:  # (``overlap``) a plain request has no stop string: this ends no row
            self._deliver()
        requests = [chunk.request for chunk in plan.chunks]
        max_steps = min(MAX_RUN_STEPS, *(r.steps_left(self._n_ctx) for r in requests))
        now = time.perf_counter()
        # a deadline (running or waiting) ends the run near it, so timeouts stay on time
        max_seconds = min([MAX_RUN_S, *(r.deadline - now for r in (*self._running, *self._waiting) if r.deadline is not None)])
        result = self._runs.run(requests, max_steps, max(0.0, max_seconds))
        self._active_bytes = None  # the run took cells
        recorded = time.perf_counter()
        self.stats.decode_s += result.decode_s
        self.stats.sample_s += result.sample_s
        steps = len(result.tokens)
        if steps:
            self._record_run(requests, result.tokens, recorded)
        self.stats.host_sampled += steps * (len(requests) - result.device_rows)
        self.stats.device_sampled += steps * result.device_rows
        self.stats.emit_s += time.perf_counter() - recorded
        self._deliver()  # (timed as emit on its own)
        self.stats.steps += steps
        self.stats.run_steps += steps
        self.stats.tokens += result.tokens.size
        result.raise_for_code()

    def _record_run(self, requests: list[Request], tokens: np.ndarray, now: float) -> None:
        """Record a run's tokens, request by request.  Only a run's last step can end a row
        (the run stops after it), and a plain request has no stop string, penalty window
        or structured output, so each token before the last is appended and its text
        handed over at once; the last goes the way of every step's token
        (``_record_token``, then ``_deliver``)."""
        piece = self._vocab.piece
        for request, column in zip(requests, tokens.T.tolist()):
            *head, last = column
            request.n_computed += len(column)
            request.generated.extend(head)
            put, release = request.sink.put, request.release
            for token in head:
                put(Token(token, release(piece(token))[0]))
            self._record_token(request, last, None, now)

    def _record(self, plan: StepPlan, outputs: list[tuple[Chunk, int]]) -> None:
        """Choose the step's tokens and append them to their requests; end the requests
        whose end shows without their text (end token, length, structured output done)."""
        for chunk in plan.chunks:
            chunk.request.n_computed += chunk.count
        started = time.perf_counter()
        try:
            tokens, rows = self._chooser.choose(outputs, self.stats) if outputs else ([], None)
        finally:
            # after the count: the token this step decoded for them is in their cells (and in
            # a cache entry made of them); after the choice, failed or not: their chains were
            # in this decode; their rows' new tokens are dropped
            for request in self._text_stopped:
                self._finish(request, RequestStatus.FINISHED_STOPPED)
            self._text_stopped.clear()
        chosen = time.perf_counter()
        self.stats.sample_s += chosen - started
        for row, (chunk, _) in enumerate(outputs):
            request = chunk.request
            if request.status.finished:
                continue
            token = int(tokens[row])
            if request.kind is RequestKind.CLASSIFY:
                logits = rows[row].copy() if request.config.return_logits and rows is not None else None
                request.first_token_at = request.last_token_at = chosen
                request.sink.put(ClassifyResult(token, self._vocab.detokenize([token]), logits))
                self._finish(request, RequestStatus.FINISHED_STOPPED)
                continue
            logprob, top = None, None
            if request.config.logprobs and rows is not None:
                logprob, top = token_logprobs(rows[row], token, request.config.top_logprobs)
            self._record_token(request, token, logprob, chosen, top)
        self.stats.emit_s += time.perf_counter() - chosen

    def _record_token(self, request: Request, token: int, logprob: float | None, now: float,
                      top: tuple[tuple[int, float], ...] | None = None) -> None:
        if not request.first_token_at:
            request.first_token_at = now
        request.last_token_at = now
        config = request.config
        end_token = (self._vocab.is_eog(token) and not config.ignore_eos) or token in config.stop_tokens
        request.undelivered = (token, logprob, top, end_token)
        self._undelivered.append(request)
        if end_token:
            self._end(request, RequestStatus.FINISHED_STOPPED)
            return
        request.generated.append(token)
        if request.host_sampler is not None:
            request.host_sampler.accept(token)
        constraint = request.constraint
        if constraint is not None:
            constraint.consume(token)
            if constraint.ended:  # the structured output is complete (or failed)
                error = constraint.error
                self._end(request, RequestStatus.FINISHED_ERROR if error else RequestStatus.FINISHED_STOPPED, error)
                return
        if len(request.generated) >= config.max_tokens or request.n_tokens >= self._n_ctx:
            self._end(request, RequestStatus.FINISHED_LENGTH)

    def _deliver(self) -> None:
        """The text work of every recorded token, in order: each request gets its
        ``Token`` and, once ended, its ``Finished``."""
        started = time.perf_counter()
        pending = self._undelivered
        while pending:  # a request leaves the queue once done: a fault leaves it to the handler
            request = pending[0]
            if request.undelivered is not None:  # (else delivered early, as its request ended)
                stopped = self._deliver_text(request)
                if request.status.finished:
                    if stopped and request.status is RequestStatus.FINISHED_LENGTH:
                        request.status = RequestStatus.FINISHED_STOPPED  # its last token ended a stop string
                    self._announce(request)
                elif stopped:
                    if self._in_flight:  # its cells are in use: end it after the decode
                        self._text_stopped.append(request)
                    else:
                        self._finish(request, RequestStatus.FINISHED_STOPPED)
            pending.popleft()
        self.stats.emit_s += time.perf_counter() - started

    def _deliver_text(self, request: Request) -> bool:
        """Detokenize the request's last recorded token, match stop strings and hand over
        the text it releases; True when a stop string ends the request."""
        assert request.undelivered is not None
        token, logprob, top, end_token = request.undelivered
        request.undelivered = None
        if end_token:
            tail = request.flush_text()
            if tail:  # text held back before the end token is the generation's, so it is sent
                request.generated.append(token)
                request.sink.put(Token(token, tail, logprob, top))
            return False
        released, stopped = request.release(self._vocab.piece(token))
        if not stopped and request.status.finished:
            released += request.flush_text()
        request.sink.put(Token(token, released, logprob, top))
        return stopped

    def _end(self, request: Request, status: RequestStatus, error: BaseException | None = None) -> None:
        """Take an ended request out of the running set and free its cells (or keep them
        as a prefix-cache entry); its ``Finished`` follows its last text."""
        if request in self._running:
            self._leave_running(request, keep=status in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH))
        elif request in self._waiting:
            self._waiting.remove(request)
        request.status = status
        request.error = error

    def _leave_running(self, request: Request, keep: bool) -> None:
        """Its device chain off its sequence, and its cells freed or kept as a cache entry."""
        self._running.remove(request)
        self._chooser.release(request)
        self.kv.finish(request, keep=keep)

    def _finish(self, request: Request, status: RequestStatus, error: BaseException | None = None) -> None:
        """End a request now (unless it has ended already): its cells are freed, the text
        of its last token is delivered, then its ``Finished`` is sent."""
        if request.announced:
            return
        if not request.status.finished:
            self._end(request, status, error)
        if request.undelivered is not None:
            self._deliver_text(request)
        self._announce(request)

    def _announce(self, request: Request) -> None:
        item = Finished(_REASONS[request.status], self._metrics(request), request.error)
        request.announced = True
        request.sink.put(item)

    def _metrics(self, request: Request) -> GenerateMetrics:
        active = self.active_memory_bytes()
        self.peak_memory_bytes = max(self.peak_memory_bytes, active)
        return request.metrics(time.perf_counter(), active, self.peak_memory_bytes)

    def _shutdown(self) -> None:
        closed = ModelClosedError("the model was closed while this request was live")
        for request in [*self._running, *self._waiting, *self._undelivered, *self._text_stopped]:
            self._finish(request, RequestStatus.FINISHED_CANCELLED, closed)
        while True:  # submissions that raced with close()
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Request):
                item.sink.put(Finished("cancelled", GenerateMetrics(), closed))
            elif isinstance(item, tuple) and item[1].set_running_or_notify_cancel():  # (a cancelled call: nobody waits)
                item[1].set_exception(closed)
        self._chooser.close()  # last: every stream has its end whatever this does


_REASONS = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH: "length",
    RequestStatus.FINISHED_CANCELLED: "cancelled",
    RequestStatus.FINISHED_ERROR: "error",
}
