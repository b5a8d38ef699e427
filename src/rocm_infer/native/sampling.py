"""Choosing the next token: a numpy greedy fast path, llama.cpp sampler chains otherwise.

Greedy decoding (temperature 0, no penalty) is an argmax over the logits row;
numpy does that without a ctypes round trip or a sampler object.  Anything
else is a llama.cpp sampler chain, in the order llama.cpp's own tools use
(penalties, top-k, top-p, min-p, temperature, then a seeded draw), so a seed
gives the same text here as the same settings would there.  ``chain_plan`` is
pure (testable without a model); ``build_chain`` turns the plan into C objects.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from ..types import GenerateConfig
from .bindings import lib
from .handles import SamplerChain

ChainStep = tuple[str, tuple[Any, ...]]


def greedy_tokens(rows: np.ndarray) -> np.ndarray:
    """Argmax of each logits row (one row per sequence)."""
    return np.argmax(rows, axis=-1)


def token_logprob(row: np.ndarray, token: int) -> float:
    """log softmax of one row at ``token``, computed stably in float64."""
    peak = float(row.max())
    return float(row[token] - peak - np.log(np.exp(row.astype(np.float64) - peak).sum()))


def chain_plan(config: GenerateConfig, seed: int, n_vocab: int) -> list[ChainStep]:
    """The llama.cpp samplers, in order, that implement ``config``."""
    plan: list[ChainStep] = []
    if config.repeat_penalty != 1.0:
        plan.append(("penalties", (n_vocab, config.repeat_last_n, config.repeat_penalty, 0.0, 0.0)))
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


def build_chain(config: GenerateConfig, history: list[int], n_vocab: int) -> SamplerChain:
    """A sampler chain for one request; ``history`` (the prompt's tail) primes the
    repeat penalty the way llama-server does."""
    llama = lib()
    parts = [getattr(llama, f"llama_sampler_init_{name}")(*args) for name, args in chain_plan(config, resolve_seed(config), n_vocab)]
    chain = SamplerChain(parts)
    for token in history[-config.repeat_last_n :] if config.repeat_last_n else ():
        llama.llama_sampler_accept(chain.ptr, token)
    return chain
