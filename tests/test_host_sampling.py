"""The host sampler on hand-made logits: llama.cpp's distribution, seeds, threads.

No model is loaded.  The reference distribution is computed here from a full sort in
float64; both this library's sampler and llama.cpp's own sampler chain (run through
the bindings on the same row) must match it within sampling error.  Seeds are fixed,
so every run draws the same numbers.
"""

from __future__ import annotations

import ctypes
import math
import queue

import numpy as np
import pytest

from rocm_infer.native.bindings import lib
from rocm_infer.native.device_sampling import DevicePolicy
from rocm_infer.native.host_sampling import HostSampler, RowSampler
from rocm_infer.native.request import Request
from rocm_infer.native.sampling import chain_plan
from rocm_infer.native.token_choice import TokenChooser
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


def sample_rows(rows: np.ndarray, samplers: list[HostSampler], threads: int = 1) -> np.ndarray:
    return RowSampler(rows.shape[1], threads).sample(rows, samplers)


def ours(row: np.ndarray, config: GenerateConfig, draws: int) -> np.ndarray:
    """``draws`` tokens, 200 rows a step as the engine would hand them over."""
    tokens = []
    per_step = 200
    sampler = RowSampler(len(row), threads=2)
    for step in range(draws // per_step):
        samplers = [HostSampler(config.temperature, config.top_k, config.top_p, config.min_p, seed=step * per_step + i) for i in range(per_step)]
        tokens.extend(sampler.sample(np.tile(row, (per_step, 1)), samplers).tolist())
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
    GenerateConfig(temperature=0.9, top_p=0.9, min_p=0.05),
    GenerateConfig(temperature=0.9, top_k=60, top_p=0.9, min_p=0.05),
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
    """Rows bounded by different top_k values are drawn in one call beside a row that
    top_k does not bound: each must keep its own distribution."""
    row = peaked_row(3000, seed=11)
    mix = [SETTINGS[0], SETTINGS[4], SETTINGS[1]]
    per_step = 3 * 100
    drawn: list[list[int]] = [[] for _ in mix]
    for step in range(DRAWS // 100):
        samplers = [HostSampler(c.temperature, c.top_k, c.top_p, c.min_p, seed=step * per_step + i)
                    for i, c in enumerate(mix * 100)]
        tokens = sample_rows(np.tile(row, (per_step, 1)), samplers)
        for i in range(len(mix)):
            drawn[i].extend(tokens[i::len(mix)].tolist())
    for config, tokens in zip(mix, drawn):
        expected = reference(row, config.top_k, config.top_p, config.min_p, config.temperature)
        assert set(tokens) <= set(expected)
        stat, dof = chi_square(np.array(tokens), expected)
        assert stat < dof + 6 * math.sqrt(2 * dof) + 10, (config, stat, dof)


def test_a_nucleus_past_the_head_of_the_row_widens_to_hold_it():
    """One strong token and a heavy tail of 3,000 tokens each far below it (weights e^-12 to e^-11,
    under the sampler's first floor of e^-10): top_p 0.99 needs the tail, so the
    candidates must widen; min_p alone and temperature alone reach it too."""
    row = np.random.default_rng(9).uniform(-2.0, -1.0, 3001).astype(np.float32)  # no ties at the nucleus's edge
    row[1234] = 10.0
    for config in (GenerateConfig(temperature=1.0, top_p=0.99), GenerateConfig(temperature=1.0, min_p=1e-6), GenerateConfig(temperature=1.0)):
        expected = reference(row, config.top_k, config.top_p, config.min_p, config.temperature)
        tokens = ours(row, config, DRAWS)
        assert set(tokens.tolist()) <= set(expected)
        stat, dof = chi_square(tokens, expected)
        assert stat < dof + 6 * math.sqrt(2 * dof) + 10, (config, stat, dof)


@pytest.mark.parametrize("n_vocab", [64, 1000, 4099, 128_256])
def test_top_k_rows_draw_only_from_the_k_best_at_any_vocabulary_size(n_vocab):
    """Vocabularies that fill the native loops' chunks and ones with a remainder; k at
    and past the vocabulary means no top_k."""
    rows = np.random.default_rng(n_vocab).standard_normal((40, n_vocab)).astype(np.float32)
    for k in (1, 7, 50, n_vocab - 1, n_vocab, n_vocab + 5):
        samplers = [HostSampler(50.0, top_k=k, seed=i) for i in range(len(rows))]  # near-uniform over the k
        tokens = sample_rows(rows.copy(), samplers)
        best = np.argsort(-rows, axis=1)[:, : min(k, n_vocab)]
        assert all(token in best[i] for i, token in enumerate(tokens))
        if k >= 50 and n_vocab > k:
            assert len(set(tokens.tolist())) > 20  # drawn across the k, not only the best


def test_a_nucleus_ending_among_tied_tokens_takes_as_many_as_it_needs():
    """100 equal logits: top_p 0.505 is reached at the 51st of them (clear of rounding,
    unlike 0.5), so 51 different tokens are drawn (which 51 is arbitrary, in llama.cpp
    too), never more."""
    row = np.zeros(100, dtype=np.float32)
    config = GenerateConfig(temperature=1.0, top_p=0.505)
    for tokens in (ours(row, config, DRAWS), llama_cpp_draws(row, config, 4000)):
        assert len(set(tokens.tolist())) == 51


def test_rows_without_weights_to_draw_by_give_their_best_token():
    """A subnormal temperature (1 / T overflows) is greedy; a row whose only finite logit
    is one token gives that token on every path; a NaN among a row's first k does not
    hide its best token from top_k."""
    rng = np.random.default_rng(4)
    row = rng.standard_normal(1000).astype(np.float32)
    row[0] = -np.inf
    assert ours(row, GenerateConfig(temperature=1e-40), 200).tolist() == [int(row.argmax())] * 200
    lone = np.full(1000, -np.inf, dtype=np.float32)
    lone[321] = 0.5
    for config in (GenerateConfig(temperature=0.0), GenerateConfig(temperature=1.0), GenerateConfig(temperature=0.8, top_p=0.9),
                   GenerateConfig(temperature=0.8, min_p=0.1), GenerateConfig(temperature=0.8, top_k=40)):
        assert set(ours(lone, config, 200).tolist()) == {321}, config
    nan_first = rng.standard_normal(1000).astype(np.float32)
    nan_first[0], nan_first[500] = np.nan, 20.0
    assert set(ours(nan_first, GenerateConfig(temperature=0.1, top_k=10), 200).tolist()) == {500}


def test_suppressed_and_masked_tokens_are_never_drawn():
    """-inf logits (suppressed ids, structured-output masks) have no weight in any path."""
    rng = np.random.default_rng(5)
    row = rng.standard_normal(5000).astype(np.float32)
    banned = rng.choice(5000, 4990, replace=False)
    row[banned] = -np.inf
    allowed = set(range(5000)) - set(banned.tolist())
    for config in (GenerateConfig(temperature=100.0), GenerateConfig(temperature=5.0, top_p=0.999), GenerateConfig(temperature=5.0, min_p=1e-9),
                   GenerateConfig(temperature=5.0, top_k=100)):
        assert set(ours(row, config, 2000).tolist()) <= allowed, config


def test_greedy_rows_are_the_argmax_and_mix_with_drawn_rows():
    rows = np.random.default_rng(1).standard_normal((4, 500)).astype(np.float32)
    expected = rows.argmax(axis=1)
    samplers = [HostSampler(0.0), HostSampler(1.0, top_k=1, seed=3), HostSampler(0.0), HostSampler(0.5, top_k=1)]
    assert sample_rows(rows.copy(), samplers).tolist() == expected.tolist()


def test_rows_split_over_threads_draw_what_one_thread_draws():
    """Each row draws with its own request's uniform number: the thread count changes
    nothing."""
    rows = np.stack([peaked_row(4000, seed) for seed in range(19)])
    settings = [{"temperature": 0.0}, {"temperature": 0.8, "top_k": 40, "top_p": 0.95}, {"temperature": 0.8, "top_p": 0.95}, {"temperature": 1.1, "min_p": 0.05}]

    def samplers() -> list[HostSampler]:
        return [HostSampler(seed=row, **settings[(row // 4) % len(settings)]) for row in range(len(rows))]

    alone, grouped = samplers(), samplers()
    for _ in range(5):
        assert sample_rows(rows.copy(), grouped, threads=3).tolist() == sample_rows(rows.copy(), alone).tolist()


def test_row_ids_pick_the_rows_sampled_and_leave_the_others():
    rows = np.random.default_rng(3).standard_normal((6, 300)).astype(np.float32)
    before = rows.copy()
    tokens = RowSampler(300).sample(rows, [HostSampler(0.0), HostSampler(0.0)], row_ids=[4, 1])
    assert tokens.tolist() == [int(rows[4].argmax()), int(rows[1].argmax())]
    assert np.array_equal(rows, before)
    with pytest.raises(ValueError):
        RowSampler(300).sample(rows, [HostSampler(0.0)], row_ids=[6])
    with pytest.raises(ValueError):
        RowSampler(300).sample(rows[0], [HostSampler(0.0)])


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


def test_a_penalty_applies_to_the_row_its_row_id_picks():
    rows = np.array([[0.0, 0.0, 0.0, 3.0], [2.0, -1.0, 1.9, 0.5]], dtype=np.float32)
    penalised = HostSampler(0.0, repeat_penalty=2.0, repeat_last_n=4)
    penalised.accept(0)
    tokens = RowSampler(4).sample(rows, [HostSampler(0.0), penalised], row_ids=[0, 1])
    assert tokens.tolist() == [3, 2]  # row 1's token 0 (2.0) penalised to 1.0, below 1.9
    assert np.allclose(rows[1], [1.0, -1.0, 1.9, 0.5]) and rows[0].tolist() == [0.0, 0.0, 0.0, 3.0]


def test_a_preempted_request_keeps_its_host_sampler_when_admitted_again():
    chooser = TokenChooser(None, 64, DevicePolicy.OFF)  # type: ignore[arg-type]  # placing touches no context
    request = Request([1, 2, 3], GenerateConfig(max_tokens=8, temperature=0.8, repeat_penalty=1.2, seed=5), queue.SimpleQueue())
    chooser.place(request, running=1)
    sampler = request.host_sampler
    assert sampler is not None
    sampler.accept(7)  # its penalty window and random state move on as it generates
    chooser.release(request)  # preempted ...
    chooser.place(request, running=2)  # ... and admitted again
    assert request.host_sampler is sampler
