"""scripts/make_random_model.py: the fast-step stand-in loads, generates, and has logits as
peaked as a trained model's (bounds far from the measured values, so a seed never flakes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import dequantize
from repo_scripts import load_script

import rocm_infer as ri
from rocm_infer.gguf_header import HeaderReader

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "1, 2, 3, 4,"]


mrm = load_script("scripts/make_random_model.py")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory, vendor_models: Path) -> Path:
    path = tmp_path_factory.mktemp("random") / "tiny.gguf"
    vocab = vendor_models / "ggml-vocab-llama-bpe.gguf"
    assert mrm.main(["--preset", "tiny", "--vocab-from", str(vocab), "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def tiny(tiny_path: Path) -> Iterator[ri.TextModel]:
    with ri.load_model(tiny_path, backend="llama_cpp") as loaded:
        yield loaded


def test_the_file_says_it_is_for_timing_only_and_has_the_llama_3_vocabulary(tiny_path):
    header = HeaderReader(tiny_path)
    assert header.value("general.architecture") == "llama"
    assert header.value("rocm_infer.timing_only") is True
    assert "timing only" in header.value("general.name")
    assert header.value("tokenizer.ggml.tokens") == header.value("llama.vocab_size") == 128256
    assert header.value("tokenizer.ggml.pre") == "llama-bpe"


def test_the_tiny_preset_generates(tiny):
    tokens = [token.id for token in tiny.generate("Hello", max_tokens=8, ignore_eos=True)]
    assert len(tokens) == 8
    assert all(0 <= t < 128256 for t in tokens)


def test_the_logits_are_as_peaked_as_a_trained_models(tiny):
    for result in tiny.classify(PROMPTS, return_logits=True):
        std, nucleus = mrm.logit_stats(result.logits)
        assert 3.5 < std < 5.5
        assert 20 <= nucleus <= 5000


@pytest.mark.parametrize("qtype", [GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q6_K, GGMLQuantizationType.Q4_K])
def test_raw_blocks_dequantize_to_the_wanted_rms(qtype):
    """The gguf package's own dequantizer reads the blocks: layouts and d are right."""
    blocks = mrm.quantized_blocks(np.random.default_rng(0), 256 * 256, qtype, rms=0.07)
    weights = dequantize(blocks, qtype).astype(np.float64)
    assert np.isfinite(weights).all()
    assert np.sqrt((weights**2).mean()) == pytest.approx(0.07, rel=0.03)
    assert abs(weights.mean()) < 0.005


def test_the_8b_preset_has_llama_cpps_q4_k_m_types():
    """llama.cpp's Q4_K_M rule for 32 layers; llama-bench reads the written file as a real
    one, "llama 8B Q4_K - Medium, 4.58 GiB, 8.03 B"."""
    specs = list(mrm.tensor_specs(mrm.PRESETS["llama-3.1-8b"], vocab=128256))
    counts = Counter(spec.qtype for spec in specs)
    assert counts == {GGMLQuantizationType.Q4_K: 193, GGMLQuantizationType.Q6_K: 33, GGMLQuantizationType.F32: 65}
    assert sum(spec.nbytes for spec in specs) == pytest.approx(4.58 * 2**30, rel=0.01)


def test_a_shape_that_does_not_fit_the_blocks_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        mrm.main(["--preset", "tiny", "--type", "q4_k", "--out", str(tmp_path / "x.gguf")])
    assert "multiples of 256" in capsys.readouterr().err
    assert not (tmp_path / "x.gguf").exists()


def test_logit_stats_counts_the_smallest_set_of_tokens_holding_095():
    std, nucleus = mrm.logit_stats(np.log([0.04, 0.5, 0.06, 0.3, 0.1]))
    assert nucleus == 4
    assert std == pytest.approx(np.log([0.04, 0.5, 0.06, 0.3, 0.1]).std())


def test_the_vocabularys_suppressed_tokens_are_never_produced(tiny: ri.TextModel, tmp_path: Path, vendor_models: Path) -> None:
    """``tokenizer.ggml.suppress_tokens`` on every path: host sampling, device chains and
    llama-server.  The same random weights with the tokens greedy chose suppressed."""
    prompt = "Once upon a time"
    suppressed = sorted({token.id for token in tiny.generate(prompt, max_tokens=8, ignore_eos=True)})
    vocab = tmp_path / "vocab.gguf"
    writer = GGUFWriter(vocab, "llama")
    mrm.copy_tokenizer(writer, vendor_models / "ggml-vocab-llama-bpe.gguf")
    writer.add_array("tokenizer.ggml.suppress_tokens", suppressed)  # int32, as llama.cpp reads it
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    path = tmp_path / "suppressed.gguf"
    assert mrm.main(["--preset", "tiny", "--vocab-from", str(vocab), "--out", str(path)]) == 0
    for backend, options in (("llama_cpp", {}), ("llama_cpp", {"device_sampling": "on"}), ("llama_server", {})):
        with ri.load_model(path, backend=backend, parallel_slots=2, context_len=512, **options) as model:
            produced = [token.id for token in model.generate(prompt, max_tokens=8, ignore_eos=True)]
            produced += [token.id for token in model.generate(prompt, max_tokens=8, ignore_eos=True, temperature=1.5, seed=3)]
            produced += [result.token for result in model.classify([prompt, "1, 2, 3,"])]
            if options:  # the chains really ran on the device, with the ban in them
                assert model.engine_stats().device_sampled > 0
        assert produced and not set(produced) & set(suppressed), (backend, options)
