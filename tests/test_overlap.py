"""Delivering a step's text while the next step decodes (``overlap_decode``).

On a GPU ``auto`` turns it on; here it is forced on the CPU build, and every stream
must come out as it does without it: the same tokens and text, stop strings and end
tokens honoured, metrics counting what was yielded, every cell freed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from near_tie import assert_same_until_near_tie

import rocm_infer as ri

PROMPT = "The three primary colours are"


@pytest.fixture(scope="module")
def pair(gemma_path) -> Iterator[tuple[ri.TextModel, ri.TextModel]]:
    options = dict(backend="llama_cpp", flash_attn="off", parallel_slots=4, context_len=2048, prefix_cache=False)
    with ri.load_model(gemma_path, overlap_decode="off", **options) as plain, ri.load_model(gemma_path, overlap_decode="on", **options) as overlapped:
        yield plain, overlapped


def run(model: ri.TextModel, prompt: str = PROMPT, **options) -> tuple[list[int], str, ri.TokenStream]:
    stream = model.generate(prompt, **options)
    tokens = list(stream)
    return [t.id for t in tokens], "".join(t.text for t in tokens), stream


def test_the_same_tokens_text_and_counts(pair) -> None:
    plain, overlapped = pair
    ids, text, stream = run(plain, max_tokens=24, ignore_eos=True)
    ids_o, text_o, stream_o = run(overlapped, max_tokens=24, ignore_eos=True)
    assert (ids_o, text_o) == (ids, text)
    assert stream_o.finish_reason == "length" and stream_o.metrics.generated_tokens == len(ids_o) == 24


def test_a_stop_string_ends_the_stream_where_it_does_without_overlap(pair) -> None:
    plain, overlapped = pair
    _, text, _ = run(plain, max_tokens=24, ignore_eos=True)
    stop = text.strip().split()[2]  # a word from the middle of the greedy text
    ids, stopped, stream = run(plain, max_tokens=24, ignore_eos=True, stop=[stop])
    ids_o, stopped_o, stream_o = run(overlapped, max_tokens=24, ignore_eos=True, stop=[stop])
    assert stopped_o == stopped == text[: text.index(stop)]
    assert ids_o == ids and stream_o.finish_reason == stream.finish_reason == "stop"
    assert stream_o.metrics.generated_tokens == len(ids_o)
    assert overlapped.cache_occupancy() == {}


def test_an_end_token_ends_the_stream_without_being_yielded(pair) -> None:
    plain, overlapped = pair
    ids, _, _ = run(plain, max_tokens=24, ignore_eos=True)
    end = ids[5]
    ids_o, _, stream_o = run(overlapped, max_tokens=24, ignore_eos=True, stop_tokens=[end])
    assert ids_o == ids[: ids.index(end)]
    assert stream_o.finish_reason == "stop"


def test_concurrent_streams_with_cancels_all_end_and_free_their_cells(pair) -> None:
    _, overlapped = pair
    alone = {n: run(overlapped, f"{PROMPT} (list {n})", max_tokens=8 + 3 * n, ignore_eos=True)[0] for n in range(6)}
    together: dict[int, list[int]] = {}

    def consume(n: int) -> None:
        stream = overlapped.generate(f"{PROMPT} (list {n})", max_tokens=8 + 3 * n, ignore_eos=True)
        ids = []
        for token in stream:
            ids.append(token.id)
            if n % 3 == 2 and len(ids) == 3:
                stream.cancel()
                break
        together[n] = ids

    threads = [threading.Thread(target=consume, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n, ids in together.items():  # batched: equal to the run alone up to a near-tie
        expected = alone[n][:3] if n % 3 == 2 else alone[n]
        assert len(ids) == len(expected)
        assert_same_until_near_tie(overlapped, f"{PROMPT} (list {n})", expected, ids)
    assert overlapped.cache_occupancy() == {}


def test_a_stopped_requests_cells_become_a_cache_entry_that_the_next_request_reuses(pair, gemma_path) -> None:
    """A stop string found under the next decode ends its request one step late: the
    token decoded meanwhile is in its cells, so its cache entry must count it."""
    _, text, _ = run(pair[0], max_tokens=16, ignore_eos=True)
    stop = text.strip().split()[2]
    with ri.load_model(gemma_path, backend="llama_cpp", flash_attn="off", parallel_slots=2, context_len=1024, overlap_decode="on") as model:
        _, first, stream = run(model, max_tokens=16, ignore_eos=True, stop=[stop])
        entry = model.cache_stats()
        _, second, _ = run(model, max_tokens=16, ignore_eos=True, stop=[stop])
        assert stream.finish_reason == "stop" and first == second == text[: text.index(stop)]
        assert entry.entries == 1 and entry.cells_held == stream.metrics.prompt_tokens + stream.metrics.generated_tokens
        assert model.cache_stats().hits == 1 and model.cache_occupancy() == {}


def test_a_stop_string_completed_by_the_last_allowed_token_ends_with_stop(pair) -> None:
    """The length limit is known when the token is recorded, the stop string only when its
    text is delivered: a stop string still wins, as without the split."""
    ids, _, _ = run(pair[0], max_tokens=8, ignore_eos=True)
    tail = pair[0].detokenize(ids[5:8])  # the text of the last three allowed tokens
    for model in pair:
        _, text, stream = run(model, max_tokens=8, ignore_eos=True, stop=[tail])
        assert stream.finish_reason == "stop" and tail not in text
