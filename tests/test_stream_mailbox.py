"""Items cross from producer threads into an event loop in bursts (stream.AsyncSink)."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

from rocm_infer.stream import AsyncSink, Finished
from rocm_infer.types import GenerateMetrics


def test_a_burst_wakes_the_loop_once_and_keeps_each_streams_order() -> None:
    async def main() -> tuple[list[list[int]], int]:
        loop = asyncio.get_running_loop()
        wakeups = 0
        schedule = loop.call_soon_threadsafe

        def counting(callback, *args):  # type: ignore[no-untyped-def]
            nonlocal wakeups
            wakeups += 1
            return schedule(callback, *args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        sinks = [AsyncSink(loop) for _ in range(4)]
        producer = threading.Thread(target=lambda: [sink.put(i) for i in range(50) for sink in sinks])
        producer.start()
        producer.join()  # the loop was not running meanwhile: one burst
        received = [[await sink.queue.get() for _ in range(50)] for sink in sinks]
        return received, wakeups

    received, wakeups = asyncio.run(main())
    assert received == [list(range(50))] * 4
    assert wakeups == 1


def test_items_after_a_burst_was_handed_over_wake_the_loop_again() -> None:
    async def main() -> list[int]:
        sink = AsyncSink(asyncio.get_running_loop())
        got = []
        for i in range(3):
            threading.Thread(target=sink.put, args=(i,)).start()
            got.append(await asyncio.wait_for(sink.queue.get(), 30))
        return got

    assert asyncio.run(main()) == [0, 1, 2]


def test_a_closed_loop_cancels_the_producer_on_every_later_item() -> None:
    loop = asyncio.new_event_loop()
    sink = AsyncSink(loop)
    cancels = []
    sink.on_loop_closed = lambda: cancels.append(1)
    sink.put("pending")  # scheduled, never handed over
    loop.close()
    sink.put("token")
    sink.put("token")
    sink.put(Finished("stop", GenerateMetrics()))  # the end needs no cancel
    assert len(cancels) == 2


def test_a_closed_loop_is_not_kept_alive_by_its_mailbox() -> None:
    loop = asyncio.new_event_loop()
    AsyncSink(loop).put("token")  # a hand-over scheduled that never runs
    loop.close()
    ref = weakref.ref(loop)
    del loop
    gc.collect()
    assert ref() is None
