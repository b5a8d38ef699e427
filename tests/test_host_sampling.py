"""The host sampler on hand-made logits: exact candidates, llama.cpp's distribution.

No model is loaded.  The reference distribution is computed here from a full sort in
float64; both this library's sampler and llama.cpp's own sampler chain (run through
the bindings on the same row) must match it within sampling error.  Seeds are fixed,
so every run draws the same numbers.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest

from rocm_infer.native.bindings import lib
from rocm_infer.native.host_sampling import HostSampler, RowPool, sample_rows, top_candidates
from rocm_infer.native.sampling import chain_plan
from rocm_infer.types import GenerateConfig

DRAWS = 12_000


def peaked_row(n_vocab: int, seed: int) -> np.ndarray:
    """Logits shaped like a trained model's: a broad body and a few strong tokens."""
    rng = np.random.default_rng(seed)
    row = rng.standard_normal(n_vocab).astype(np.float32) * 2.0
    row[rng.choice(n_vocab, 60, replace=False)] += rng.uniform(4, 9, 60).astype(np.float32)
    return row


def reference(row: np.ndarray, top_k: int, top_p: float, min_p: float, temperature: float) -> dict[int, float]:
    """llama.cpp's chain (top_k, top_p at temperature 1, min_p, temperature) by full sort."""
    order = np.argsort(-row, kind="stable")
    logits = row[order].astype(np.float64)
    if top_k:
        order, logits = order[:top_k], logits[:top_k]
    if 0 < top_p < 1:
        p = np.exp(logits - logits[0])
        keep = int(np.searchsorted(np.cumsum(p / p.sum()), top_p)) + 1
        order, logits = order[:keep], logits[:keep]
    if min_p:
        keep = max(1, int(np.count_nonzero(logits >= logits[0] + math.log(min_p))))
        order, logits = order[:keep], logits[:keep]
    q = np.exp((logits - logits[0]) / temperature)
    return dict(zip(order.tolist(), (q / q.sum()).tolist()))


def ours(row: np.ndarray, config: GenerateConfig, draws: int) -> np.ndarray:
    """``draws`` tokens, 200 rows a step as the engine would hand them over."""
    tokens = []
    per_step = 200
    for step in range(draws // per_step):
        samplers = [HostSampler(config.temperature, config.top_k, config.top_p, config.min_p, seed=step * per_step + i) for i in range(per_step)]
        # small candidate sets and blocks, so widening and the block path both run
        tokens.extend(sample_rows(np.tile(row, (per_step, 1)), samplers, block=8, floor=0.3).tolist())
    return np.array(tokens)


def llama_cpp_draws(row: np.ndarray, config: GenerateConfig, draws: int) -> np.ndarray:
    llama = lib()
    parts = [getattr(llama, f"llama_sampler_init_{name}")(*args) for name, args in chain_plan(config, 1234, len(row))]
    chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
    for part in parts:
        llama.llama_sampler_chain_add(chain, part)
    template = (llama.llama_token_data * len(row))(*[llama.llama_token_data(i, float(v), 0.0) for i, v in enumerate(row)])
    data = (llama.llama_token_data * len(row))()
    tokens = []
    try:
        for _ in range(draws):
            ctypes.memmove(data, template, ctypes.sizeof(template))
            array = llama.llama_token_data_array(data, len(row), -1, False)
            llama.llama_sampler_apply(chain, ctypes.byref(array))
            tokens.append(array.data[array.selected].id)
    finally:
        llama.llama_sampler_free(chain)
    return np.array(tokens)


def chi_square(tokens: np.ndarray, expected: dict[int, float]) -> tuple[float, int]:
    """Chi-square of the drawn counts against ``expected`` (rare tokens pooled)."""
    counts = np.bincount(tokens, minlength=max(expected) + 1)
    n = len(tokens)
    common = [t for t, p in expected.items() if p * n >= 5]
    rare_p = sum(p for t, p in expected.items() if p * n < 5)
    rare_count = sum(int(counts[t]) for t, p in expected.items() if p * n < 5)
    stat = sum((counts[t] - n * expected[t]) ** 2 / (n * expected[t]) for t in common)
    bins = len(common)
    if rare_p * n >= 5:
        stat += (rare_count - n * rare_p) ** 2 / (n * rare_p)
        bins += 1
    return float(stat), bins - 1


SETTINGS = [
    GenerateConfig(temperature=0.8, top_k=40, top_p=0.95),
    GenerateConfig(temperature=0.8, top_p=0.95),
    GenerateConfig(temperature=1.0, top_p=0.7),
    GenerateConfig(temperature=1.0, min_p=0.05),
    GenerateConfig(temperature=0.7, top_k=100, min_p=0.02),
    GenerateConfig(temperature=1.5),
]


@pytest.mark.parametrize("config", SETTINGS, ids=lambda c: f"T{c.temperature}-k{c.top_k}-p{c.top_p}-m{c.min_p}")
def test_sampled_frequencies_match_llama_cpp(config):
    row = peaked_row(3000, seed=7)
    expected = reference(row, config.top_k, config.top_p, config.min_p, config.temperature)
    for tokens in (ours(row, config, DRAWS), llama_cpp_draws(row, config, DRAWS)):
        assert set(tokens.tolist()) <= set(expected)  # nothing outside the filtered set
        stat, dof = chi_square(tokens, expected)
        assert stat < dof + 6 * math.sqrt(2 * dof) + 10, (stat, dof)


def test_rows_with_different_settings_in_one_step_each_keep_their_distribution():
    """Rows bounded by different top_k values are drawn together (``_draw_top_k_rows``),
    beside a row that top_k does not bound: each must keep its own distribution."""
    row = peaked_row(3000, seed=11)
    mix = [SETTINGS[0], SETTINGS[4], SETTINGS[1]]
    per_step = 3 * 100
    drawn: list[list[int]] = [[] for _ in mix]
    for step in range(DRAWS // 100):
        samplers = [HostSampler(c.temperature, c.top_k, c.top_p, c.min_p, seed=step * per_step + i)
                    for i, c in enumerate(mix * 100)]
        tokens = sample_rows(np.tile(row, (per_step, 1)), samplers, block=8, floor=0.3)
        for i in range(len(mix)):
            drawn[i].extend(tokens[i::len(mix)].tolist())
    for config, tokens in zip(mix, drawn):
        expected = reference(row, config.top_k, config.top_p, config.min_p, config.temperature)
        assert set(tokens) <= set(expected)
        stat, dof = chi_square(np.array(tokens), expected)
        assert stat < dof + 6 * math.sqrt(2 * dof) + 10, (config, stat, dof)


@pytest.mark.parametrize(("n_vocab", "k", "block"), [(4096, 32, 16), (4099, 32, 16), (5000, 7, 8), (300, 50, 16), (64, 64, 16)])
def test_top_candidates_are_the_exact_top_k(n_vocab, k, block):
    rows = np.random.default_rng(n_vocab).standard_normal((5, n_vocab)).astype(np.float32)
    ids, values = top_candidates(rows, k, block)
    assert np.array_equal(values, -np.sort(-rows, axis=1)[:, :k])
    assert np.array_equal(np.take_along_axis(rows, ids, axis=1), values)


def test_greedy_rows_are_the_argmax_and_mix_with_drawn_rows():
    rows = np.random.default_rng(1).standard_normal((4, 500)).astype(np.float32)
    expected = rows.argmax(axis=1)
    samplers = [HostSampler(0.0), HostSampler(1.0, top_k=1, seed=3), HostSampler(0.0), HostSampler(0.5, top_k=1)]
    assert sample_rows(rows.copy(), samplers).tolist() == expected.tolist()


def test_rows_split_over_threads_draw_what_one_thread_draws():
    """Each request's row stays in one group: its generator draws as it would alone."""
    rows = np.stack([peaked_row(4000, seed) for seed in range(19)])
    settings = [{"temperature": 0.0}, {"temperature": 0.8, "top_k": 40, "top_p": 0.95}, {"temperature": 0.8, "top_p": 0.95}, {"temperature": 1.1, "min_p": 0.05}]

    def samplers() -> list[HostSampler]:
        # runs of one setting: the groups differ in their candidate widths and greedy rows
        return [HostSampler(seed=row, **settings[(row // 4) % len(settings)]) for row in range(len(rows))]

    alone, grouped = samplers(), samplers()
    pool = RowPool(threads=3)
    try:
        for _ in range(5):
            assert pool.sample(rows.copy(), grouped).tolist() == sample_rows(rows.copy(), alone).tolist()
    finally:
        pool.close()


def test_a_seed_repeats_its_tokens_and_another_seed_does_not():
    row = peaked_row(3000, seed=2)

    def run(seed: int) -> list[int]:
        sampler = HostSampler(1.0, top_p=0.95, seed=seed)
        return [int(sample_rows(row[None, :].copy(), [sampler])[0]) for _ in range(50)]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_repeat_penalty_follows_llama_cpp():
    row = np.array([2.0, -1.0, 1.9, 0.5], dtype=np.float32)
    sampler = HostSampler(0.0, repeat_penalty=2.0, repeat_last_n=4)
    for token in (0, 1):
        sampler.accept(token)
    penalised = row.copy()
    sampler.penalise(penalised)
    assert np.allclose(penalised, [1.0, -2.0, 1.9, 0.5])  # positive divided, negative multiplied
    assert sample_rows(row[None, :].copy(), [sampler]).tolist() == [2]
