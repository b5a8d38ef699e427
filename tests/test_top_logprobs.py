"""``top_logprobs``: each generated token carries its step's most likely tokens with their
log-probabilities, in-process and on llama_server (the openai backend refuses: OpenAI's
API names the alternatives by text, not id).  Real Gemma model."""

from __future__ import annotations

import pytest

import rocm_infer as ri

PROMPT = "The capital of France is"
NEVER_S = 120.0


@pytest.fixture(params=["llama_cpp", "llama_server"])
def loaded(request, model, server_model) -> ri.TextModel:
    return model if request.param == "llama_cpp" else server_model


def test_greedy_tokens_are_the_first_of_their_steps_alternatives(loaded):
    """Without ``ignore_eos``: llama-server bans end tokens for it, after its alternatives
    are taken, so an end token could lead them there while another was chosen."""
    tokens = list(loaded.generate(PROMPT, max_tokens=4, logprobs=True, top_logprobs=3, timeout=NEVER_S))
    assert tokens
    for token in tokens:
        top = token.top_logprobs
        assert top is not None and len(top) == 3
        values = [logprob for _, logprob in top]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert top[0][0] == token.id and abs(top[0][1] - token.logprob) < 1e-3


def test_a_sampled_token_is_no_likelier_than_the_best(loaded):
    tokens = list(loaded.generate(PROMPT, max_tokens=6, temperature=1.5, seed=11, logprobs=True, top_logprobs=2,
                                  ignore_eos=True, timeout=NEVER_S))
    for token in (t for t in tokens if t.top_logprobs is not None):  # (llama_server: see Token's docstring)
        best = dict(token.top_logprobs)
        assert token.logprob <= max(best.values()) + 1e-3
        if token.id in best:
            assert abs(best[token.id] - token.logprob) < 1e-3


def test_without_top_logprobs_there_are_none(loaded):
    assert all(t.top_logprobs is None for t in loaded.generate(PROMPT, max_tokens=2, logprobs=True, timeout=NEVER_S))


@pytest.mark.parametrize("options, says", [
    ({"top_logprobs": 2}, "needs logprobs=True"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs must be"),
    ({"logprobs": True, "top_logprobs": -1}, "top_logprobs must be"),
    ({"logprobs": True, "top_logprobs": True}, "top_logprobs must be"),
])
def test_bad_top_logprobs_are_refused(options, says):
    with pytest.raises(ri.InvalidConfigError, match=says):
        ri.GenerateConfig(**options)
