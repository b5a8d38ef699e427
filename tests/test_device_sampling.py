"""Sampling in the decode graph (``device_sampling="on"``) against the host path.

On this CPU build the "device" is the CPU backend, but the path is the one a GPU
build takes: a llama.cpp chain per sequence, only tokens coming back.
"""

from __future__ import annotations

import queue
import threading

import pytest
from near_tie import assert_same_until_near_tie

import rocm_infer as ri
from rocm_infer.native.device_sampling import WHOLE_VOCAB_ROWS, DevicePolicy, runs_on_device
from rocm_infer.native.request import Request
from rocm_infer.types import GenerateConfig

PROMPTS = [f"Chapter {i}: the old lighthouse keeper" for i in range(6)]
SAMPLED = {"temperature": 0.9, "top_k": 40, "top_p": 0.9, "seed": 42}


# Prefix cache off: a reused prefix leaves the prompt's last token to a batch of its own,
# whose logits differ in the last bits, so a seed would repeat its tokens only up to a
# near-tie (as batching does); these tests compare computations that are the same.
@pytest.fixture(scope="module")
def device_model(gemma_path):
    with ri.load_model(gemma_path, backend="llama_cpp", flash_attn="off", parallel_slots=8, device_sampling="on", prefix_cache=False) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def host_model(gemma_path):
    with ri.load_model(gemma_path, backend="llama_cpp", flash_attn="off", parallel_slots=8, prefix_cache=False) as loaded:
        yield loaded


def ids(model, prompt, **options):
    return [t.id for t in model.generate(prompt, max_tokens=12, ignore_eos=True, **options)]


def test_device_greedy_gives_the_host_tokens(host_model, device_model):
    for prompt in PROMPTS[:3]:
        assert_same_until_near_tie(host_model, prompt, ids(host_model, prompt), ids(device_model, prompt))
    assert device_model.engine_stats().device_sampled > 0


def test_a_finished_request_takes_its_chain_off_its_sequence(device_model):
    """llama.cpp runs every attached chain in every decode (an idle one on a dummy row):
    a chain left behind would slow each later step."""
    engine = device_model._engine
    before = device_model.engine_stats().device_sampled
    assert ids(device_model, PROMPTS[1], **SAMPLED) and device_model.engine_stats().device_sampled > before
    assert engine.call(lambda _ctx: len(engine._chooser._device._attached)) == 0


@pytest.mark.parametrize("which", ["host", "device"])
def test_a_seed_repeats_its_tokens(which, host_model, device_model):
    chosen = host_model if which == "host" else device_model
    first = ids(chosen, PROMPTS[0], **SAMPLED)
    assert ids(chosen, PROMPTS[0], **SAMPLED) == first
    others = [ids(chosen, PROMPTS[0], **(SAMPLED | {"seed": seed})) for seed in (1, 2, 3)]
    assert any(other != first for other in others)  # the seed matters


def test_host_and_device_requests_share_a_step(device_model):
    """A repeat penalty has no device sampler: that request is sampled on the host,
    in the same decode steps as its device-sampled neighbours."""
    penalised = {"repeat_penalty": 1.3}
    alone = {p: ids(device_model, p, **(penalised if i % 2 else {})) for i, p in enumerate(PROMPTS)}
    before = device_model.engine_stats()
    together: dict[str, list[int]] = {}
    start = threading.Barrier(len(PROMPTS))

    def run(i: int, prompt: str) -> None:
        start.wait()
        together[prompt] = ids(device_model, prompt, **(penalised if i % 2 else {}))

    threads = [threading.Thread(target=run, args=(i, p)) for i, p in enumerate(PROMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = device_model.engine_stats()
    assert after.device_sampled > before.device_sampled and after.host_sampled > before.host_sampled
    assert after.steps - before.steps < len(PROMPTS) * 12  # they were batched together
    for prompt in PROMPTS[::2]:  # the greedy ones; the penalised ones are checked by count
        assert_same_until_near_tie(device_model, prompt, alone[prompt], together[prompt])
    assert all(len(together[prompt]) == 12 for prompt in PROMPTS)


def test_classify_and_logprobs_next_to_device_streams(device_model):
    stream = device_model.generate(PROMPTS[0], max_tokens=8, ignore_eos=True, logprobs=True)
    results = device_model.classify(PROMPTS[:3], return_logits=True)
    tokens = list(stream)
    assert all(t.logprob is not None and t.logprob <= 0 for t in tokens)
    assert [r.token for r in results] == [int(r.logits.argmax()) for r in results]


def test_auto_sends_only_few_whole_vocabulary_requests_to_the_device():
    """``device_sampling="auto"`` on a GPU: top-p alone goes to the device while few
    requests run (where the H200 measured it faster), greedy and top-k never."""
    def placed(running: int, **config) -> bool:
        return runs_on_device(Request([1, 2], GenerateConfig(**config), queue.SimpleQueue()), DevicePolicy.WHOLE_VOCAB, running)

    assert placed(1, temperature=0.8, top_p=0.95) and placed(WHOLE_VOCAB_ROWS, temperature=0.8, top_p=0.95)
    assert not placed(WHOLE_VOCAB_ROWS + 1, temperature=0.8, top_p=0.95)
    assert not placed(1, temperature=0.0) and not placed(1, temperature=0.8, top_k=40, top_p=0.95)
    assert not placed(1, temperature=0.8, top_p=0.95, repeat_penalty=1.2)
