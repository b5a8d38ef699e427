import math

import numpy as np

from rocm_infer.native.sampling import chain_plan, token_logprobs
from rocm_infer.types import GenerateConfig


def test_logprob_is_log_softmax():
    row = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    expected = 3.0 - math.log(math.exp(1) + math.exp(2) + math.exp(3))
    logprob, top = token_logprobs(row, 2, 0)
    assert abs(logprob - expected) < 1e-6 and top is None


def test_top_logprobs_are_the_best_tokens_most_likely_first():
    row = np.array([0.5, 3.0, -1.0, 3.0, 2.0], dtype=np.float32)
    logprob, top = token_logprobs(row, 0, 3)
    normaliser = math.log(sum(math.exp(x) for x in row.tolist()))
    assert [t for t, _ in top] == [1, 3, 4]  # a tie goes to the lower id
    assert all(abs(lp - (row[t] - normaliser)) < 1e-6 for t, lp in top)
    assert abs(logprob - (0.5 - normaliser)) < 1e-6
    _, tied = token_logprobs(np.zeros(100, dtype=np.float32), 0, 3)  # ties at the cut-off too
    assert [t for t, _ in tied] == [0, 1, 2]
    _, cut = token_logprobs(np.array([0.0, 1.0, 1.0, 1.0], dtype=np.float32), 0, 1)
    assert cut[0][0] == 1


def test_chain_order_follows_llama_cpp():
    config = GenerateConfig(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, repeat_penalty=1.1)
    assert [name for name, _ in chain_plan(config, seed=7, n_vocab=100)] == ["penalties", "top_k", "top_p", "min_p", "temp", "dist"]
    assert chain_plan(config, seed=7, n_vocab=100)[-1] == ("dist", (7,))


def test_filters_that_are_off_are_left_out():
    assert chain_plan(GenerateConfig(temperature=1.0, top_p=1.0), seed=1, n_vocab=100) == [("temp", (1.0,)), ("dist", (1,))]


def test_greedy_with_a_penalty_still_needs_a_chain():
    config = GenerateConfig(repeat_penalty=1.3)
    assert not config.greedy
    assert [name for name, _ in chain_plan(config, seed=0, n_vocab=100)] == ["penalties", "greedy"]
    assert GenerateConfig().greedy
