"""Continuous batching: many requests share one context and one decode per step."""

import asyncio
import gc
import threading
import time

import numpy as np
import pytest
from near_tie import assert_same_until_near_tie

import rocm_infer as ri

PROMPTS = [f"Story number {i}: once upon a time there was a" for i in range(16)]

def greedy_ids(model, prompt, n=32):
    return [t.id for t in model.generate(prompt, max_tokens=n, ignore_eos=True)]


def test_sixteen_threads_match_their_prompts_run_alone(model):
    alone = {p: greedy_ids(model, p) for p in PROMPTS}
    together: dict[str, tuple[list[int], ri.GenerateMetrics, str]] = {}

    def run(prompt):
        stream = model.generate(prompt, max_tokens=32, ignore_eos=True)
        ids = [t.id for t in stream]
        together[prompt] = (ids, stream.metrics, stream.finish_reason)

    steps_before = model.engine_stats().steps
    threads = [threading.Thread(target=run, args=(p,)) for p in PROMPTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for prompt in PROMPTS:
        ids, metrics, reason = together[prompt]
        assert_same_until_near_tie(model, prompt, alone[prompt], ids)
        assert reason == "length" and len(ids) == 32
        assert metrics.generated_tokens == len(ids)
        assert metrics.prompt_tokens == len(model.tokenize(prompt))
    # batched for real: far fewer decode steps than 16 separate runs would need
    assert model.engine_stats().steps - steps_before < 16 * 32 / 2


def test_classify_matches_the_first_greedy_token(model):
    prompts = [f"Question {i}: is {i} an even number? Answer:" for i in range(64)]
    results = model.classify(prompts, return_logits=True)
    assert len(results) == 64
    for prompt, result in zip(prompts, results):
        assert_same_until_near_tie(model, prompt, greedy_ids(model, prompt, n=1), [result.token])
        assert result.logits.shape == (model.info.vocab_size,)
        assert int(np.argmax(result.logits)) == result.token
    assert model.classify(prompts[:2])[0].logits is None
    assert model.cache_occupancy() == {}  # prefill-only: no KV kept afterwards


def test_flash_attention_on_stays_within_its_tolerance(model_fa):
    results = model_fa.classify(PROMPTS)
    for prompt, result in zip(PROMPTS, results):
        assert_same_until_near_tie(model_fa, prompt, greedy_ids(model_fa, prompt, n=1), [result.token], tie=1.5)


def test_cancelling_half_the_streams_frees_their_cells_and_spares_the_rest(model):
    alone = {p: greedy_ids(model, p, n=24) for p in PROMPTS[:8]}
    # the long ones reserve prompt + 200 cells each: all sixteen fit in the 4096-cell cache at once
    streams = [model.generate(p, max_tokens=24 if i < 8 else 200) for i, p in enumerate(PROMPTS)]
    for stream in streams[8:]:
        next(stream)
    for stream in streams[8:]:
        stream.cancel()
        assert stream.finish_reason == "cancelled" and stream.error is None
    for prompt, stream in zip(PROMPTS[:8], streams[:8]):
        assert_same_until_near_tie(model, prompt, alone[prompt], [t.id for t in stream])
    assert model.cache_occupancy() == {}


def test_breaking_out_of_the_loop_cancels_the_request(model):
    for _ in model.generate(PROMPTS[0], max_tokens=5000):
        break
    deadline = time.monotonic() + 5
    while model.cache_occupancy() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert model.cache_occupancy() == {}


def test_classify_with_one_bad_prompt_raises_and_leaves_nothing_running(model):
    with pytest.raises(ri.PromptTooLongError):
        model.classify([PROMPTS[0], "word " * 5000])
    deadline = time.monotonic() + 5
    while model.cache_occupancy() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert model.cache_occupancy() == {}
    assert model.classify([PROMPTS[0]])[0].token == greedy_ids(model, PROMPTS[0], n=1)[0]


def test_batch_generate_keeps_order_and_isolates_errors(model):
    prompts = [PROMPTS[0], "word " * 5000, PROMPTS[1]]
    results = model.batch_generate(prompts, max_tokens=8)
    assert [r.finish_reason for r in results] == ["length", "error", "length"]
    assert isinstance(results[1].err, ri.PromptTooLongError)
    assert_same_until_near_tie(model, PROMPTS[0], greedy_ids(model, PROMPTS[0], n=8), list(results[0].tokens))
    assert_same_until_near_tie(model, PROMPTS[1], greedy_ids(model, PROMPTS[1], n=8), list(results[2].tokens))
    assert results[0].metrics.generated_tokens == len(results[0].tokens)


def test_async_streams_without_blocking_the_event_loop(model):
    """Another task finishes its work while a stream is still running; the stream runs to
    the end of the context (thousands of tokens), so no speed lets it finish first."""
    async def main():
        seen = [token.id async for token in model.agenerate(PROMPTS[0], max_tokens=32)]
        long = model.agenerate(PROMPTS[1], max_tokens=4000, ignore_eos=True)
        await long.__anext__()

        async def other_work():
            for _ in range(20):
                await asyncio.sleep(0.001)

        other = asyncio.create_task(other_work())
        while not other.done():
            await long.__anext__()
        running = long.finished is None
        await long.aclose()
        chat = await model.achat([{"role": "user", "content": "Hi"}], max_tokens=4).text()
        return seen, running, chat

    seen, running, chat = asyncio.run(main())
    assert seen == greedy_ids(model, PROMPTS[0])
    assert running  # the other task finished while the stream was still producing
    assert isinstance(chat, str)


def test_a_dropped_model_stops_its_engine_and_frees_the_context(gemma_path):
    def engines() -> int:
        return sum(thread.name == "rocm-infer-engine" for thread in threading.enumerate())

    before = engines()
    dropped = ri.load_model(gemma_path, backend="llama_cpp", parallel_slots=2)
    dropped.generate("Hello", max_tokens=2).text()
    assert engines() == before + 1
    del dropped
    gc.collect()
    assert engines() == before


def test_a_call_the_engine_cannot_take_in_time_raises_a_typed_error_and_never_runs(model):
    entered, release = threading.Event(), threading.Event()
    ran: list[int] = []

    def hold(_ctx):  # keeps the engine thread busy, as a long step would
        entered.set()
        release.wait()

    holder = threading.Thread(target=model._engine.call, args=(hold,))
    holder.start()
    entered.wait()
    try:
        with pytest.raises(ri.EngineError, match="did not take the call"):
            model._engine.call(lambda _ctx: ran.append(1), timeout=0.05)
    finally:
        release.set()
        holder.join()
    assert model.cache_occupancy() == {}  # and it serves on (this call came after the one given up)
    assert ran == []
