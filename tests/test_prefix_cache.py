"""The prefix cache on the real Gemma 3 model: reuse, sharing, eviction, cancellation.

Greedy output with the cache must equal the output without it up to the first near-tie
(``near_tie``): the reused prefix was computed in another batch than the rest.
"""

from __future__ import annotations

import threading

import pytest
from near_tie import assert_same_until_near_tie

import rocm_infer as ri

SYSTEM = "You are a careful assistant who answers questions about the history of lighthouses. " * 12


@pytest.fixture(scope="module")
def uncached(gemma_path):
    with ri.load_model(gemma_path, backend="llama_cpp", flash_attn="off", parallel_slots=8, prefix_cache=False) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def cached(gemma_path):
    with ri.load_model(gemma_path, backend="llama_cpp", flash_attn="off", parallel_slots=8) as loaded:
        yield loaded


def greedy(model, prompt, n=16):
    return [t.id for t in model.generate(prompt, max_tokens=n, ignore_eos=True)]


def test_a_second_request_reuses_the_first_ones_prefix(cached, uncached):
    first = SYSTEM + "Question: who built the first lighthouse?"
    second = SYSTEM + "Question: why are lighthouses painted in stripes?"
    before = cached.cache_stats()
    greedy(cached, first)
    stream = cached.generate(second, max_tokens=16, ignore_eos=True)
    ids = [t.id for t in stream]
    after = cached.cache_stats()
    shared = len(cached.tokenize(SYSTEM))
    assert after.hits > before.hits
    assert after.tokens_reused - before.tokens_reused >= shared - 2  # the system prompt, up to a merged token
    assert after.entries >= 1 and after.cells_held > 0
    assert_same_until_near_tie(uncached, second, greedy(uncached, second), ids)
    assert cached.cache_occupancy() == {}  # only cache entries hold cells now


def test_concurrent_requests_compute_a_shared_prefix_once(gemma_path, uncached):
    prompts = [SYSTEM + f"Question {i}: how tall is lighthouse number {i}?" for i in range(6)]
    alone = {p: greedy(uncached, p, 8) for p in prompts}
    results: dict[str, list[int]] = {}
    start = threading.Barrier(len(prompts))
    with ri.load_model(gemma_path, backend="llama_cpp", flash_attn="off", parallel_slots=8) as fresh:  # nothing cached yet

        def run(prompt: str) -> None:
            start.wait()
            results[prompt] = greedy(fresh, prompt, 8)

        threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        reused = fresh.cache_stats().tokens_reused
        shared = len(fresh.tokenize(SYSTEM)) - 2
    assert reused >= (len(prompts) - 1) * shared  # computed by one request, copied by the others
    for prompt in prompts:
        assert_same_until_near_tie(uncached, prompt, alone[prompt], results[prompt])


def test_entries_are_evicted_when_their_cells_are_needed(gemma_path):
    with ri.load_model(gemma_path, backend="llama_cpp", flash_attn="off", parallel_slots=4, context_len=1024) as small:
        for i in range(3):  # three entries of ~300 cells each
            greedy(small, f"Entry {i}: " + "the sea is calm tonight and " * 40, 4)
        assert small.cache_stats().entries == 3
        long_prompt = "A completely different story about mountains and " * 60  # ~600 cells, needs evictions
        ids = greedy(small, long_prompt, 8)
        stats = small.cache_stats()
        assert len(ids) == 8 and stats.evictions >= 1
        assert small.cache_occupancy() == {}


def test_cancelling_the_owner_of_a_shared_prefix_spares_the_sharer(cached, uncached):
    owner_prompt = SYSTEM + "Tell me a very long story about a keeper named Ada."
    sharer_prompt = SYSTEM + "Tell me a short fact about fog horns."
    owner = cached.generate(owner_prompt, max_tokens=500, ignore_eos=True)
    next(owner)  # the owner has computed its prompt: the sharer copies from it
    sharer = cached.generate(sharer_prompt, max_tokens=12, ignore_eos=True)
    first = next(sharer)
    owner.cancel()
    ids = [first.id] + [t.id for t in sharer]
    assert owner.finish_reason == "cancelled"
    assert_same_until_near_tie(uncached, sharer_prompt, greedy(uncached, sharer_prompt, 12), ids)
    assert cached.cache_occupancy() == {}


def test_prefix_cache_off_keeps_nothing(uncached):
    greedy(uncached, SYSTEM + "Anything.", 4)
    stats = uncached.cache_stats()
    assert stats.entries == 0 and stats.hits == 0 and stats.cells_held == 0
