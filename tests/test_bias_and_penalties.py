"""``logit_bias`` (a number added to chosen tokens' logits before sampling, ``-inf`` bans
one) on every path a token is chosen: the host sampler, a device chain, llama-server,
and ``classify``; and the frequency and presence penalties beside the repeat penalty.
Checked on the real Gemma model with biases and penalties large enough that the outcome
does not depend on the model's own logits (Gemma's lie within a few tens), and against
llama.cpp's own penalties sampler on a hand-made row."""

from __future__ import annotations

import ctypes
import math
from collections.abc import Iterator

import numpy as np
import pytest

import rocm_infer as ri
from rocm_infer.native.bindings import lib
from rocm_infer.native.host_sampling import HostSampler, RowSampler
from rocm_infer.native.sampling import chain_plan
from rocm_infer.server.openai_chunks import openai_body

PROMPT = "The capital of France is"
NEVER_S = 120.0


@pytest.fixture(scope="module")
def device_model(gemma_path) -> Iterator[ri.TextModel]:
    with ri.load_model(gemma_path, backend="llama_cpp", context_len=1024, parallel_slots=2, device_sampling="on") as loaded:
        yield loaded


@pytest.fixture(params=["host", "device", "llama_server"])
def loaded(request, model, device_model, server_model) -> ri.TextModel:
    return {"host": model, "device": device_model, "llama_server": server_model}[request.param]


@pytest.fixture(scope="module")
def word(model) -> int:
    """A token the model would not pick after PROMPT."""
    [token] = model.tokenize(" banana", add_special=False)
    return token


def token_ids(model: ri.TextModel, **options) -> list[int]:
    return [t.id for t in model.generate(PROMPT, max_tokens=3, timeout=NEVER_S, **options)]


@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {"temperature": 1.0, "top_p": 0.9, "seed": 7}])
def test_a_large_bias_forces_its_token(loaded, word, sampling):
    assert token_ids(loaded, logit_bias={word: 100.0}, **sampling) == [word] * 3


def test_a_biased_request_is_sampled_on_the_device_where_it_can_be(device_model, word):
    before = device_model.engine_stats().device_sampled
    assert token_ids(device_model, logit_bias={word: 100.0}, temperature=0.8, seed=1) == [word] * 3
    assert device_model.engine_stats().device_sampled >= before + 3


def test_a_ban_removes_the_token_the_model_would_choose(loaded, model):
    first = token_ids(model)[0]
    assert token_ids(loaded, logit_bias={first: -math.inf})[0] != first
    assert token_ids(loaded, logit_bias={first: -100.0})[0] != first


def test_classify_chooses_among_the_biased_tokens(model, server_model, word):
    first = model.classify([PROMPT])[0].token
    for loaded in (model, server_model):
        [result] = loaded.classify([PROMPT], logit_bias={word: 100.0})
        assert result.token == word
        [result] = loaded.classify([PROMPT], logit_bias={first: -math.inf})
        assert result.token != first


def test_a_biased_token_past_the_vocabulary_is_a_typed_error_and_the_model_serves_on(loaded, word):
    with pytest.raises(ri.InvalidConfigError, match="logit_bias's token ids .* vocabulary size"):
        list(loaded.generate(PROMPT, max_tokens=2, logit_bias={10_000_000: 1.0}, timeout=NEVER_S))
    assert token_ids(loaded, logit_bias={word: 100.0}) == [word] * 3


def test_a_bias_changes_its_own_row_only_and_log_probabilities_stay_the_models_own(model, word):
    """A biased and a plain request in the same steps: each step samples the plain row in
    llama.cpp's buffer and the biased one from a copy, so neither sees the other's bias and
    the biased one's log-probabilities are the model's."""
    biased = model.generate(PROMPT, max_tokens=3, logprobs=True, logit_bias={word: 100.0}, timeout=NEVER_S)
    plain = model.generate("Once upon a time", max_tokens=3, logprobs=True, ignore_eos=True, timeout=NEVER_S)
    biased_tokens, plain_tokens = list(biased), list(plain)
    assert [t.id for t in biased_tokens] == [word] * 3
    assert all(t.logprob is not None and t.logprob < math.log(0.5) for t in biased_tokens)  # " banana" is unlikely here
    assert word not in [t.id for t in plain_tokens]
    assert all(t.logprob is not None and t.logprob <= 0 for t in plain_tokens)


def test_classify_logits_stay_the_models_own(model, word):
    [plain] = model.classify([PROMPT], return_logits=True)
    [biased] = model.classify([PROMPT], return_logits=True, logit_bias={word: 100.0})
    assert biased.token == word and abs(float(biased.logits[word]) - float(plain.logits[word])) < 1.0


@pytest.mark.parametrize("bias", [{-1: 1.0}, {1.5: 1.0}, {True: 1.0}, {2**40: 1.0}, {1: math.inf}, {1: math.nan}, {1: "1"},
                                  {1: 10**400}, {1: 1e300}, [1, 2], np.array(5)])
def test_bad_biases_are_refused(bias):
    """1e300 is finite in float64 but +inf in float32, where logits are kept."""
    with pytest.raises(ri.InvalidConfigError, match="logit_bias"):
        ri.GenerateConfig(logit_bias=bias)


@pytest.mark.parametrize("value", [math.nan, -1e300, "1", None, True])
@pytest.mark.parametrize("name", ["frequency_penalty", "presence_penalty"])
def test_bad_penalties_are_refused(name, value):
    with pytest.raises(ri.InvalidConfigError, match=name):
        ri.GenerateConfig(**{name: value})


def test_token_ids_of_any_integer_type_elsewhere_too():
    config = ri.GenerateConfig(stop_tokens=np.array([1, 2]), presence_penalty=np.float32(0.5))
    assert config.stop_tokens == (1, 2) and type(config.stop_tokens[0]) is int and config.presence_penalty == 0.5
    with pytest.raises(ri.InvalidConfigError, match="stop_tokens"):
        ri.GenerateConfig(stop_tokens=[2**31])


def test_numpy_ids_and_values_are_taken_as_plain_numbers():
    config = ri.GenerateConfig(logit_bias={np.int64(5): np.float32(2.5), 7: -math.inf})
    assert config.logit_bias == {5: 2.5, 7: -math.inf} and all(type(k) is int and type(v) is float for k, v in config.logit_bias.items())
    assert ri.GenerateConfig(logit_bias={}).logit_bias is None


def test_the_host_sampler_adds_the_bias_before_the_penalty():
    """llama.cpp's chain order: a bias that makes a logit positive is then divided by the
    repeat penalty, not multiplied."""
    rows = np.array([[3.0, -1.0, 2.5, 0.0]], dtype=np.float32)
    sampler = HostSampler(0.0, repeat_penalty=2.0, repeat_last_n=4, logit_bias={1: 5.0, 0: -math.inf})
    sampler.accept(1)
    # token 1: (-1 + 5) / 2 = 2, below token 2's 2.5 (penalised first it would be -1 * 2 + 5 = 3)
    assert RowSampler(4).sample(rows, [sampler]).tolist() == [2]
    assert rows[0].tolist() == [-math.inf, 2.0, 2.5, 0.0]


def test_the_openai_backend_sends_openai_s_form():
    body = openai_body("m", "hi", ri.GenerateConfig(logit_bias={5: -math.inf, 6: 250.0, 7: 1.5}))
    assert body["logit_bias"] == {"5": -100.0, "6": 100.0, "7": 1.5}


def test_a_large_presence_penalty_never_repeats_a_token_of_its_window(model, server_model):
    prompt = "1, 1, 1, 1, 1, 1, 1, 1,"
    window = set(model.tokenize(prompt))
    for loaded in (model, server_model):
        ids = [t.id for t in loaded.generate(prompt, max_tokens=4, presence_penalty=100.0, ignore_eos=True, timeout=NEVER_S)]
        assert len(ids) == 4 and len(set(ids)) == 4 and not window & set(ids), ids


def test_classify_takes_the_penalties_on_every_backend(model, server_model):
    prompt = "1, 1, 1, 1, 1, 1, 1, 1,"
    window = set(model.tokenize(prompt))
    assert model.classify([prompt])[0].token in window  # " 1" or ",": what the penalty must move away from
    for loaded in (model, server_model):
        assert loaded.classify([prompt], presence_penalty=100.0)[0].token not in window


@pytest.mark.parametrize("penalties", [
    {"frequency_penalty": 0.7},
    {"presence_penalty": -0.4},
    {"repeat_penalty": 1.5, "frequency_penalty": 0.3, "presence_penalty": 0.6},
])
def test_penalties_follow_llama_cpp(penalties):
    """The same window through this sampler and through llama.cpp's penalties sampler."""
    rng = np.random.default_rng(3)
    row = (rng.standard_normal(50) * 3).astype(np.float32)
    window = [4, 4, 4, 9, 9, 17, 30, 4]
    sampler = HostSampler(0.0, repeat_last_n=8, **penalties)
    for token in window:
        sampler.accept(token)
    ours = row.copy()
    sampler.penalise(ours)
    assert np.allclose(ours, llama_cpp_penalised(row, window, sampler), atol=1e-5)
    assert not np.allclose(ours, row)


def llama_cpp_penalised(row: np.ndarray, window: list[int], sampler: HostSampler) -> np.ndarray:
    llama = lib()
    _, args = chain_plan(ri.GenerateConfig(repeat_penalty=sampler.repeat_penalty, repeat_last_n=sampler.repeat_last_n,
                                           frequency_penalty=sampler.frequency_penalty, presence_penalty=sampler.presence_penalty),
                         seed=0, n_vocab=len(row))[0]
    penalties = llama.llama_sampler_init_penalties(*args)
    try:
        for token in window:
            llama.llama_sampler_accept(penalties, token)
        data = (llama.llama_token_data * len(row))(*[llama.llama_token_data(i, float(v), 0.0) for i, v in enumerate(row)])
        array = llama.llama_token_data_array(data, len(row), -1, False)
        llama.llama_sampler_apply(penalties, ctypes.byref(array))
        out = np.empty_like(row)
        for i in range(array.size):
            out[array.data[i].id] = array.data[i].logit
        return out
    finally:
        llama.llama_sampler_free(penalties)
