"""``max_tokens`` is a ceiling, not a reservation: requests get KV cells as they generate,
and when the context runs out the newest is preempted and recomputed (real Gemma, a
256-cell context shared by four slots, so 64 cells are given at a time)."""

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from near_tie import assert_same_until_near_tie

import rocm_infer as ri

PROMPTS = [f"Story number {i}: once upon a time there was a" for i in range(4)]


@pytest.fixture(scope="module")
def small_context(gemma_path: Path) -> Iterator[ri.TextModel]:
    with ri.load_model(str(gemma_path), context_len=256, parallel_slots=4) as model:
        yield model


def test_requests_that_outgrow_the_context_together_are_preempted_and_match_their_runs_alone(small_context):
    model = small_context
    # each needs ~90 cells by its end: four do not fit in 256 at once, three start together
    alone = {p: [t.id for t in model.generate(p, max_tokens=80, ignore_eos=True)] for p in PROMPTS}
    preemptions_before = model.engine_stats().preemptions
    streams = {p: model.generate(p, max_tokens=80, ignore_eos=True) for p in PROMPTS}  # all submitted at once
    together: dict[str, list[int]] = {}

    def read(prompt: str) -> None:
        together[prompt] = [t.id for t in streams[prompt]]

    threads = [threading.Thread(target=read, args=(p,)) for p in PROMPTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert model.engine_stats().preemptions > preemptions_before
    for prompt, stream in streams.items():
        ids = together[prompt]
        assert stream.finish_reason == "length" and len(ids) == 80  # a preempted stream loses nothing and repeats nothing
        assert stream.metrics.prefill_s >= 0 and stream.metrics.decode_s >= 0  # timed from its first admission
        assert_same_until_near_tie(model, prompt, alone[prompt], ids)
    assert model.cache_occupancy() == {}


def test_a_request_asking_for_the_whole_context_does_not_hold_back_a_short_one(small_context):
    model = small_context
    long = model.generate(PROMPTS[0], max_tokens=100_000, ignore_eos=True)  # ends at the context's end
    short = model.generate(PROMPTS[1], max_tokens=4, ignore_eos=True)  # submitted right behind it
    assert len(list(short)) == 4
    assert len(list(long)) > 200 and long.finish_reason == "length"
    # timed by the engine from each one's submission: reserving prompt + max_tokens, the short
    # one would have waited for all of the long one's tokens before its first
    assert short.metrics.total_s < long.metrics.total_s / 10
