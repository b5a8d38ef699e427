"""What the host and the device samplers share: llama.cpp's chain order, seeds, log-probs.

The order is the one llama.cpp's own tools use (penalties, top-k, top-p, min-p,
temperature, then a seeded draw); ``chain_plan`` is pure, and the device sampler
(``device_sampling``) builds its llama.cpp chain from it, while the host sampler
(``host_sampling``, with ``csrc/host_sampler.c``) follows the same order.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from ..types import GenerateConfig

ChainStep = tuple[str, tuple[Any, ...]]


def token_logprobs(row: np.ndarray, token: int, top: int) -> tuple[float, tuple[tuple[int, float], ...] | None]:
    """``token``'s log-probability (log softmax of the row, in float64) and, with ``top``,
    the ``top`` most likely tokens' (id, log-probability), most likely first, a tie going
    to the lower id (as greedy's argmax does): a partition finds the cut-off, then only
    the tokens at or above it are ordered."""
    normaliser = _log_normaliser(row)
    logprob = float(row[token]) - normaliser
    if not top:
        return logprob, None
    cutoff = row[np.argpartition(row, -top)[-top:]].min()
    candidates = np.flatnonzero(row >= cutoff)  # every token tied at the cut-off, too
    best = candidates[np.lexsort((candidates, -row[candidates]))][:top]
    return logprob, tuple((int(t), float(row[t]) - normaliser) for t in best)


def _log_normaliser(row: np.ndarray) -> float:
    peak = float(row.max())
    return peak + float(np.log(np.exp(row.astype(np.float64) - peak).sum()))


def chain_plan(config: GenerateConfig, seed: int, n_vocab: int) -> list[ChainStep]:
    """The llama.cpp samplers, in order, that implement ``config``."""
    plan: list[ChainStep] = []
    if config.penalised:
        plan.append(("penalties", (n_vocab, config.repeat_last_n, config.repeat_penalty, config.frequency_penalty, config.presence_penalty)))
    if config.temperature == 0:
        plan.append(("greedy", ()))
        return plan
    if config.top_k > 0:
        plan.append(("top_k", (config.top_k,)))
    if 0 < config.top_p < 1:
        plan.append(("top_p", (config.top_p, 1)))
    if config.min_p > 0:
        plan.append(("min_p", (config.min_p, 1)))
    plan.append(("temp", (config.temperature,)))
    plan.append(("dist", (seed,)))
    return plan


def resolve_seed(config: GenerateConfig) -> int:
    """The request's seed: the one given, or a fresh random one."""
    return config.seed if config.seed is not None else secrets.randbits(32)
