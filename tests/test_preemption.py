"""``max_tokens`` is a ceiling, not a reservation: requests get KV cells as they generate,
and when the context runs out the newest is preempted and recomputed (real Gemma, a
256-cell context shared by four slots, so 64 cells are given at a time)."""

import threading
import time
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
    together: dict[str, tuple[list[int], str | None]] = {}

    def run(prompt: str) -> None:
        stream = model.generate(prompt, max_tokens=80, ignore_eos=True)
        together[prompt] = ([t.id for t in stream], stream.finish_reason)

    threads = [threading.Thread(target=run, args=(p,)) for p in PROMPTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert model.engine_stats().preemptions > preemptions_before
    for prompt in PROMPTS:
        ids, reason = together[prompt]
        assert reason == "length" and len(ids) == 80  # a preempted stream loses nothing and repeats nothing
        assert_same_until_near_tie(model, prompt, alone[prompt], ids)
    assert model.cache_occupancy() == {}


def test_a_request_asking_for_the_whole_context_does_not_hold_back_a_short_one(small_context):
    model = small_context
    long = model.generate(PROMPTS[0], max_tokens=100_000, ignore_eos=True)  # ends at the context's end
    first_token = threading.Event()
    ended_at: dict[str, float] = {}

    def read_long() -> None:
        for _ in long:
            first_token.set()
        ended_at["long"] = time.perf_counter()

    reader = threading.Thread(target=read_long)
    reader.start()
    first_token.wait()
    short = model.generate(PROMPTS[1], max_tokens=4, ignore_eos=True)
    assert len(list(short)) == 4
    ended_at["short"] = time.perf_counter()
    reader.join()
    # reserving prompt + max_tokens, the short one would wait for all ~240 of the long one's tokens
    assert ended_at["short"] < ended_at["long"]
    assert long.finish_reason == "length" and short.finish_reason == "length"
