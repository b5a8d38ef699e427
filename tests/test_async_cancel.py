"""An async consumer that goes away cancels its request at once, on both backends.

Every way a consumer leaves is tried: ``break`` out of ``async for`` (which never calls
``aclose``), ``aclose()``, the stream dropped, the task cancelled while the stream is
still referenced elsewhere, and the event loop closed under a stream that is still
referenced.  Each request asks for far more tokens than it can produce before it is
cancelled (``ignore_eos``, so it cannot stop early), and each test then waits, with
no clock, until the backend is idle and checks that the request was cut short: the
in-process engine took few steps and holds no KV cells; llama-server's slot was never
seen with more than a few tokens decoded.  A request that was not cancelled would run
to ``MAX_TOKENS``.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import rocm_infer as ri

MAX_TOKENS = 256
PROMPT = "Once upon a time, in a land far away,"


class Idle:
    """Waits until a backend has nothing live, then says how much work the cancelled
    request did since ``__init__``."""

    def __init__(self, model: ri.TextModel) -> None:
        self.model = model
        self.steps_before = model.engine_stats().steps if model.info.backend != "llama_server" else 0

    def work_done(self) -> int:
        if self.model.info.backend == "llama_server":
            return self._server_tokens()
        engine = self.model._engine  # a request not yet decoded holds no cells: wait for it too
        while engine.call(lambda _ctx: bool(engine._running or engine._waiting)):
            time.sleep(0.01)
        while self.model.cache_occupancy():
            time.sleep(0.01)
        steps = self.model.engine_stats().steps
        assert self.model.cache_occupancy() == {}
        return steps - self.steps_before

    def _server_tokens(self) -> int:
        """The most tokens a slot was seen to have decoded while it ran (a released slot
        reports 0, so the count is sampled until the server is idle)."""
        headers = {"Authorization": f"Bearer {self.model._process.api_key}"}
        most = 0
        while True:
            # a reader still live may not have sent its request yet: the server looks idle
            live = any(not worker.done.is_set() for worker in list(self.model._workers._workers))
            slots = httpx.get(self.model.base_url + "/slots", headers=headers).json()
            running = [slot["next_token"][0]["n_decoded"] for slot in slots if slot["is_processing"]]
            if not running and not live:
                return most
            most = max([most, *running])
            time.sleep(0.05)


@pytest.fixture(scope="module")
def server_one_slot(gemma_path) -> Iterator[ri.TextModel]:
    with ri.load_model(gemma_path, backend="llama_server", parallel_slots=1, context_len=2048) as loaded:
        yield loaded


@pytest.fixture(params=["llama_cpp", "llama_server"])
def backend(request) -> ri.TextModel:
    return request.getfixturevalue("model" if request.param == "llama_cpp" else "server_one_slot")


def assert_cut_short(idle: Idle) -> None:
    done = idle.work_done()
    assert done < MAX_TOKENS // 2, f"the request kept running after its consumer left ({done} steps/tokens)"


def run(coro_fn: Callable[[], object]) -> object:
    return asyncio.run(coro_fn())


def test_break_out_of_async_for(backend):
    idle = Idle(backend)

    async def main():
        async for _ in backend.agenerate(PROMPT, max_tokens=MAX_TOKENS, ignore_eos=True):
            break

    run(main)
    assert_cut_short(idle)


def test_aclose(backend):
    idle = Idle(backend)

    async def main():
        stream = backend.agenerate(PROMPT, max_tokens=MAX_TOKENS, ignore_eos=True)
        await stream.__anext__()
        await stream.aclose()
        return stream.finish_reason

    assert run(main) == "cancelled"
    assert_cut_short(idle)


def test_dropping_the_stream(backend):
    idle = Idle(backend)

    async def main():
        stream = backend.agenerate(PROMPT, max_tokens=MAX_TOKENS, ignore_eos=True)
        await stream.__anext__()
        del stream
        gc.collect()

    run(main)
    assert_cut_short(idle)


def test_cancelling_the_task_while_the_stream_is_still_referenced(backend):
    idle = Idle(backend)
    kept = []  # keeps the stream alive: only the task's cancellation may end the request

    async def main():
        started = asyncio.Event()

        async def consume():
            stream = backend.agenerate(PROMPT, max_tokens=MAX_TOKENS, ignore_eos=True)
            kept.append(stream)
            async for _ in stream:
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)
    assert_cut_short(idle)
    assert kept[0].finished is None  # nobody read the end; the request ended all the same


def test_closing_the_event_loop_under_a_live_stream(backend):
    idle = Idle(backend)
    loop = asyncio.new_event_loop()

    async def start():
        stream = backend.agenerate(PROMPT, max_tokens=MAX_TOKENS, ignore_eos=True)
        await stream.__anext__()
        return stream

    try:
        stream = loop.run_until_complete(start())
    finally:
        loop.close()
    assert_cut_short(idle)
    assert stream.finished is None


def test_a_cancelled_consumer_leaves_the_model_serving(backend):
    async def main():
        async for _ in backend.agenerate(PROMPT, max_tokens=MAX_TOKENS, ignore_eos=True):
            break
        return [tok async for tok in backend.agenerate(PROMPT, max_tokens=4, ignore_eos=True)]

    assert len(run(main)) == 4


def test_astart_chat_streams_what_achat_streams(backend):
    messages = [{"role": "user", "content": "Name three colours."}]

    async def main():
        started = [t.id async for t in await backend.astart_chat(messages, max_tokens=6, ignore_eos=True)]
        direct = [t.id async for t in backend.achat(messages, max_tokens=6, ignore_eos=True)]
        return started, direct

    started, direct = run(main)
    assert started == direct and started


def test_astart_raises_the_typed_error_at_its_await(backend):
    async def main():
        await backend.astart_generate([10**9], max_tokens=4)

    with pytest.raises(ri.InvalidConfigError):
        run(main)


def test_a_task_cancelled_while_its_prompt_is_prepared_leaves_nothing_running(backend):
    """The task is cancelled as soon as it waits for the worker thread, so the start
    completes after (or, on a fast machine, just before) the cancellation: either way
    the request it started must be cancelled."""
    idle = Idle(backend)

    async def main():
        task = asyncio.create_task(backend.astart_generate(PROMPT, max_tokens=MAX_TOKENS, ignore_eos=True))
        await asyncio.sleep(0)  # the task runs up to its wait for the thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)
    assert_cut_short(idle)


def test_closing_the_event_loop_while_a_stream_starts(backend):
    """The loop is closed (its tasks not cancelled) while the start is on its worker thread,
    or just after it finished but before the task took the result: no stream object is ever
    made, and the request must still end when it finds the loop closed."""
    idle = Idle(backend)
    loop = asyncio.new_event_loop()
    starts = ThreadPoolExecutor(1)
    loop.set_default_executor(starts)
    try:
        task = loop.create_task(backend.astart_generate(PROMPT, max_tokens=MAX_TOKENS, ignore_eos=True))
        loop.run_until_complete(asyncio.sleep(0))  # the task runs up to its wait for the thread
    finally:
        loop.close()
    starts.shutdown(wait=True)  # the start is done: the request was submitted
    assert_cut_short(idle)
    assert not task.done()
