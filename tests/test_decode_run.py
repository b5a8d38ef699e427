"""Native decode runs: plain decode steps taken in C, recorded afterwards as steps are.

A request with log-probabilities is never plain, so it is decoded step by step; run
alone, both ways feed the model the same one-row batches, so their tokens must match
exactly, greedy or seeded.  The C loop's own stops are checked on a bare context.  The
``host`` model samples on the host on every build (``device_sampling="off"``); the
``device`` one puts its requests' chains in the decode graph (``"on"``, which the CPU
build runs too), where a stop string, not log-probabilities, keeps a request stepwise
(log-probabilities would take it to the host).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import pytest

import rocm_infer as ri
from rocm_infer.native.batch import Batch
from rocm_infer.native.decode_run import DecodeRuns
from rocm_infer.native.device_sampling import DevicePolicy
from rocm_infer.native.handles import LlamaContext, LlamaModel
from rocm_infer.native.host_sampling import HostSampler, RowSampler
from rocm_infer.native.request import Request
from rocm_infer.native.vocab import Vocab
from rocm_infer.types import GenerateConfig

PROMPT = "The three largest cities of the region are"
SAMPLED = {"temperature": 0.9, "top_p": 0.9, "seed": 11}
NEVER_S = 60.0  # a wait only a broken engine reaches


@pytest.fixture(scope="module")
def host(gemma_path) -> Iterator[ri.TextModel]:
    with ri.load_model(gemma_path, backend="llama_cpp", flash_attn="off", parallel_slots=16, prefix_cache=False,
                       device_sampling="off") as loaded:
        yield loaded


def ids_and_runs(model: ri.TextModel, **options) -> tuple[list[int], str | None, int]:
    before = model.engine_stats().run_steps
    stream = model.generate(PROMPT, **options)
    ids = [t.id for t in stream]
    return ids, stream.finish_reason, model.engine_stats().run_steps - before


@pytest.mark.parametrize("sampling", [{}, SAMPLED, {"temperature": 0.7, "top_k": 40, "min_p": 0.05, "seed": 3}])
def test_a_run_gives_the_tokens_of_step_by_step_decoding(host, sampling):
    ran, reason, run_steps = ids_and_runs(host, max_tokens=40, ignore_eos=True, **sampling)
    stepped, stepped_reason, stepped_run_steps = ids_and_runs(host, max_tokens=40, ignore_eos=True, logprobs=True, **sampling)
    assert run_steps > 0 and stepped_run_steps == 0
    assert ran == stepped and len(ran) == 40
    assert reason == stepped_reason == "length"


def test_decode_runs_off_takes_every_step_through_python_with_the_same_tokens(host, gemma_path):
    with ri.load_model(gemma_path, backend="llama_cpp", flash_attn="off", parallel_slots=16, prefix_cache=False,
                       device_sampling="off", decode_runs=False) as stepwise:
        stepped, _, stepped_runs = ids_and_runs(stepwise, max_tokens=24, ignore_eos=True, **SAMPLED)
    ran, _, runs = ids_and_runs(host, max_tokens=24, ignore_eos=True, **SAMPLED)
    assert stepped_runs == 0 and runs > 0
    assert stepped == ran


def test_runs_end_each_stream_at_its_own_max_tokens(host):
    """Sixteen streams of different lengths share runs; each gets exactly its tokens."""
    prompts = [f"Entry {i} of the ship's log reads:" for i in range(16)]
    lengths = [3 + 2 * i for i in range(16)]
    results: dict[int, list[int]] = {}
    before = host.engine_stats().run_steps

    def run(i: int) -> None:
        results[i] = [t.id for t in host.generate(prompts[i], max_tokens=lengths[i], ignore_eos=True, seed=i, temperature=0.8)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert host.engine_stats().run_steps > before
    for i in range(16):
        assert len(results[i]) == lengths[i]
    assert host.cache_occupancy() == {}


def test_a_request_that_is_not_plain_keeps_every_step_in_python(host):
    """A stop string needs each token's text before the next step: while such a request
    runs, no step is taken natively, the plain one's included.  Both are submitted while
    the engine thread is held, so they start in one step and the plain one ends first."""
    before = host.engine_stats().run_steps
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=host._engine.call, args=(lambda _ctx: (held.set(), release.wait()),))
    holder.start()
    try:  # a failure here must not leave the engine thread held
        held.wait(NEVER_S)
        stopping = host.generate(PROMPT, max_tokens=12, ignore_eos=True, stop=["\u2603"])
        plain = host.generate(PROMPT, max_tokens=6, ignore_eos=True)
    finally:
        release.set()
        holder.join()
    assert len(list(plain)) == 6 and len(list(stopping)) == 12
    assert host.engine_stats().run_steps == before


def test_cancelling_one_stream_ends_it_and_the_others_finish(host):
    streams = [host.generate(f"Item {i}:", max_tokens=300, ignore_eos=True) for i in range(4)]
    short = host.generate("Item 9:", max_tokens=24, ignore_eos=True)
    for stream in streams:
        next(stream)
    streams[0].cancel()
    assert streams[0].finish_reason == "cancelled"
    assert len(list(short)) == 24 and short.finish_reason == "length"
    for stream in streams[1:]:
        stream.cancel()
    assert host.cache_occupancy() == {}


@pytest.fixture(scope="module")
def device(gemma_path) -> Iterator[ri.TextModel]:
    with ri.load_model(gemma_path, backend="llama_cpp", flash_attn="off", parallel_slots=16, prefix_cache=False,
                       device_sampling="on") as loaded:
        yield loaded


def started_together(model: ri.TextModel, *requests: dict) -> list[list[int]]:
    """The token ids of requests submitted while the engine thread is held, so that they
    start in one step and share every batch."""
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=model._engine.call, args=(lambda _ctx: (held.set(), release.wait()),))
    holder.start()
    try:  # a failure here must not leave the engine thread held
        held.wait(NEVER_S)
        streams = [model.generate(PROMPT, **options) for options in requests]
    finally:
        release.set()
        holder.join()
    return [[t.id for t in stream] for stream in streams]


NEVER_SEEN = ["\u2603"]  # a stop string that keeps a request stepwise and never ends it


@pytest.mark.parametrize("sampling", [{}, SAMPLED])
def test_device_rows_run_natively_with_the_tokens_of_step_by_step_decoding(device, sampling):
    before = device.engine_stats()
    ran = started_together(device, dict(max_tokens=24, ignore_eos=True, **sampling))
    middle = device.engine_stats()
    stepped = started_together(device, dict(max_tokens=24, ignore_eos=True, stop=NEVER_SEEN, **sampling))
    after = device.engine_stats()
    assert middle.run_steps > before.run_steps and after.run_steps == middle.run_steps
    assert middle.device_sampled - before.device_sampled == 24 and middle.host_sampled == before.host_sampled
    assert ran == stepped and len(ran[0]) == 24


def test_host_and_device_rows_share_a_run(device):
    """The GPU build's ``auto`` policy (greedy on the host, top-p alone on the device while
    few requests run), set on this model: one run holds rows of both kinds.  The device
    row comes first, so the host row is batch row 1: read at its place among the host
    rows (0), its logits would be the other row's."""
    chooser = device._engine._chooser
    policy, chooser._policy = chooser._policy, DevicePolicy.WHOLE_VOCAB
    try:
        greedy, nucleus = dict(max_tokens=20, ignore_eos=True), dict(max_tokens=20, ignore_eos=True, **SAMPLED)
        before = device.engine_stats()
        ran = started_together(device, nucleus, greedy)
        middle = device.engine_stats()
        stepped = started_together(device, dict(nucleus, stop=NEVER_SEEN), dict(greedy, stop=NEVER_SEEN))
    finally:
        chooser._policy = policy
    assert middle.run_steps > before.run_steps
    assert middle.device_sampled - before.device_sampled == 20 and middle.host_sampled - before.host_sampled == 20
    assert ran == stepped


def test_drawn_numbers_are_used_in_one_order_however_runs_split_them():
    ref = np.random.Generator(np.random.PCG64(5)).random(12)
    sampler = HostSampler(temperature=1.0, seed=5)
    taken = [sampler.next_uniform(), sampler.next_uniform()]
    run = sampler.uniforms(6)
    sampler.give_back(run[2:])  # the run used two
    taken += list(run[:2]) + [sampler.next_uniform()] + list(sampler.uniforms(7))
    assert np.array_equal(taken, ref)


@pytest.fixture(scope="module")
def bare(gemma_path):
    """A context without an engine, for the C loop alone."""
    with LlamaModel(gemma_path) as weights, LlamaContext(weights, 512, 2, 64, "off", 0) as ctx:
        vocab = Vocab(weights.vocab)
        yield ctx, Batch(64), vocab, RowSampler(vocab.n_tokens, 2)


def prefilled(bare, seq_id: int = 0) -> Request:
    """A greedy request whose prompt is in the cache but for its last token."""
    ctx, batch, vocab, _ = bare
    ctx.remove_sequence(seq_id)
    prompt = vocab.tokenize(PROMPT)
    batch.clear()
    batch.add(prompt[:-1], 0, seq_id, False)
    ctx.launch(batch.finish())
    ctx.wait()
    request = Request(prompt, GenerateConfig(), queue.SimpleQueue())
    request.seq_id, request.n_computed, request.host_sampler = seq_id, len(prompt) - 1, HostSampler(temperature=0.0)
    return request


def runs(bare, eog: frozenset[int] = frozenset()) -> DecodeRuns:
    ctx, batch, vocab, rows = bare
    return DecodeRuns(ctx, batch, vocab.n_tokens, eog, vocab.suppressed, rows)


def test_the_loop_stops_after_the_first_token_that_ends_a_row(bare):
    free = runs(bare).run([prefilled(bare)], 10, 60.0)
    assert free.code == 0 and free.tokens.shape == (10, 1)
    tokens = free.tokens[:, 0].tolist()
    end = tokens[4]
    ended = runs(bare, frozenset({end})).run([prefilled(bare)], 10, 60.0)
    assert ended.tokens[:, 0].tolist() == tokens[: tokens.index(end) + 1]
    ignoring = prefilled(bare)
    ignoring.config = GenerateConfig(ignore_eos=True)
    assert runs(bare, frozenset({end})).run([ignoring], 10, 60.0).tokens[:, 0].tolist() == tokens


def test_the_loop_stops_after_one_step_when_interrupted_or_out_of_time(bare):
    loop = runs(bare)
    loop.interrupt.value = 1
    assert len(loop.run([prefilled(bare)], 10, 60.0).tokens) == 1
    loop.interrupt.value = 0
    assert len(loop.run([prefilled(bare)], 10, 0.0).tokens) == 1


def test_a_cancel_just_before_a_run_stops_it_after_its_first_step(host):
    """The cancel lands between the engine's look at the cancels and the run (the reap
    is wrapped to cancel right after it, once): the run must see it at its first step."""
    engine = host._engine
    stream = host.generate(PROMPT, max_tokens=400, ignore_eos=True)
    next(stream)
    reap, marks = engine._reap, []

    def reap_then_cancel(now: float) -> None:
        reap(now)
        engine._reap = reap
        marks.append(engine.stats.run_steps)
        stream._cancel()

    engine._reap = reap_then_cancel
    assert len(list(stream)) < 399 and stream.finish_reason == "cancelled"
    assert host.engine_stats().run_steps - marks[0] == 1
