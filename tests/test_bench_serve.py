"""The serve workload's contenders (``rocm_infer.bench.serve``) on the real Gemma model: a
real ``rocm-infer serve`` child, a real llama-server child and the in-process library each
serve a round of streaming chat clients and leave no child behind; a model that fails to
load and a round past its limit end in typed errors; the bench's serve rows compare what
they should."""

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



def test_serve_rows_compare_in_process_with_llama_server_and_the_library():
    """``report.document`` on figures as ``bench.run`` records them (made-up numbers): the
    in-process rows' reference is the library's same round, ``vs_server`` is in-process over
    llama-server, and the llama-server rows have no reference."""
    from dataclasses import asdict

    from rocm_infer.bench.report import ROW_KEYS, document
    from rocm_infer.bench.serve import ClientResult, summarise

    def rounds(name: str, rate: float) -> dict:  # two clients, 10 tokens each, first tokens at 0.1 and 0.3 s
        results = [ClientResult(10, 0.1, 20 / rate), ClientResult(10, 0.3, 20 / rate)]
        return {kind: {2: asdict(summarise(name, kind, results, 20 / rate))} for kind in ("greedy", "sampled")}

    base = {"single_stream_decode_tokens_per_s": 40.0, "ttft_short_s": 0.03, "ttft_long_s": 0.4, "classify_prompts_per_s": 30.0,
            "aggregate_greedy_tokens_per_s": {2: 60.0}, "aggregate_sampled_tokens_per_s": {2: 55.0}}
    backends = {"llama_cpp": base | {"serve": {"serve": rounds("serve", 90.0), "library": rounds("library", 100.0)}},
                "llama_server": base | {"serve": {"llama_server": rounds("llama_server", 60.0)}}}
    references = {"llama_bench": {"prompt_tokens_per_s": {8: 300.0, 16: 300.0}, "decode_tokens_per_s": 45.0},
                  "llama_batched_bench_tokens_per_s": {2: 70.0}}
    result = {"when": "", "machine": "", "commit": "", "llama_cpp_commit": "", "gpu_backend": "cpu", "hsa_override_gfx_version": None,
              "model": {"path": "m.gguf", "name": "m.gguf"}, "modes": {"auto": {"references": references, "backends": backends}},
              "settings": {"gen_tokens": 4, "ttft_short_tokens": 8, "ttft_long_tokens": 16, "classify_prompts": 2, "serve_clients": [2]}}
    rows = {(r["id"], r["path"]): r for r in document(result)["rows"]}
    assert all(tuple(r) == ROW_KEYS for r in rows.values())
    for id_ in ("serve_aggregate_greedy_2", "serve_aggregate_sampled_2"):
        ours, theirs = rows[id_, "in-process"], rows[id_, "llama-server"]
        assert ours["value"] == pytest.approx(90.0) and ours["reference"] == pytest.approx(100.0) and ours["higher_is_better"]
        assert ours["ratio"] == pytest.approx(0.9) and ours["vs_server"] == pytest.approx(1.5)
        assert theirs["reference"] is None and theirs["vs_server"] is None
    ttft = rows["serve_ttft_2", "in-process"]
    assert (ttft["unit"], ttft["value"], ttft["higher_is_better"]) == ("ms", pytest.approx(200.0), False)
    assert ttft["ratio"] == pytest.approx(1.0) and ttft["vs_server"] == pytest.approx(1.0)
