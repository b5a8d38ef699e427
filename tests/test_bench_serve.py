"""The serve workload's contenders (``rocm_infer.bench.serve``) on the real Gemma model: a
real ``rocm-infer serve`` child, a real llama-server child and the in-process library each
serve a round of streaming chat clients and leave no child behind; a model that fails to
load and a round past its limit end in typed errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import rocm_infer as ri
from processes import live_children
from rocm_infer.bench.serve import CONTENDERS, ServeConfig, contender


@pytest.fixture(scope="module")
def config(gemma_path: Path) -> ServeConfig:
    return ServeConfig(gemma_path, slots=2, context=1024, backend="llama_cpp")


@pytest.mark.parametrize("name", CONTENDERS)
def test_each_contender_serves_a_round_of_chat_clients_and_stops(config, name):
    before = live_children()
    with contender(name, config) as run:
        if name != "library":
            assert live_children() - before, "the server should be a child of this process"
        result = run(2, "sampled", 4)
    assert live_children() == before
    assert (result.contender, result.sampling, result.clients, result.errors) == (name, "sampled", 2, [])
    assert result.tokens > 0 and result.aggregate_tokens_per_s > 0 and result.wall_s > 0
    assert result.ttft_median_s is not None and result.ttft_max_s is not None
    assert 0 < result.ttft_median_s <= result.ttft_max_s
    assert 0 < result.client_tokens_per_s_min <= result.client_tokens_per_s_median
    assert 0 < result.slowest_over_median <= 1


def test_a_model_that_fails_to_load_is_a_typed_error_and_no_child_is_left(tmp_path, config, gemma_path):
    """The first 3 MB of the model: a header that parses, tensors that end early, so each
    contender fails while loading (the children in their own process)."""
    truncated = tmp_path / "truncated.gguf"
    with gemma_path.open("rb") as source, truncated.open("wb") as sink:
        sink.write(source.read(3_000_000))
    before = live_children()
    for name in CONTENDERS:
        with pytest.raises(ri.RocmInferError):
            with contender(name, replace(config, model=truncated)):
                pytest.fail(f"{name} started on a truncated model")
    assert live_children() == before


def test_a_file_that_is_no_model_fails_before_any_child_starts(tmp_path, config):
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(ri.InvalidModelError):
        with contender("serve", replace(config, model=text)):
            pass
    with pytest.raises(ri.InvalidConfigError):
        with contender("vllm", config):
            pass


def test_a_round_past_its_limit_is_a_typed_timeout(config):
    """A limit of 0 s: the round cannot have finished when it is checked."""
    with pytest.raises(ri.RequestTimeoutError):
        with contender("library", replace(config, round_timeout_s=0)):
            pass

