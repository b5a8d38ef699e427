"""The workloads every contender runs, on the TextModel interface (either backend).

Prompts are token ids of a fixed length (as llama.cpp's tools use), and
``ignore_eos`` makes every stream produce exactly the asked number of tokens,
so tokens/s are counted the way llama-bench and llama-batched-bench count them.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..interface import TextModel
from ..models import resolve_model_path
from ..native.handles import LlamaModel
from ..native.vocab import Vocab


@contextmanager
def tokenizer(path: Path) -> Iterator[Callable[[str], list[int]]]:
    """The model's own tokenizer, from its vocabulary alone (no weights, no context):
    prompts are made with it once and given to every contender (the llama-server backend
    has no tokenizer)."""
    with LlamaModel(resolve_model_path(path), vocab_only=True) as model:
        yield Vocab(model.vocab).tokenize


def synthetic_prompts(tokenize: Callable[[str], list[int]], n_tokens: int, count: int, salt: int) -> list[list[int]]:
    """``count`` prompts of ``n_tokens`` ids of ordinary text, different from each other."""
    prompts = []
    for k in range(salt, salt + count):
        ids = tokenize(f"Report {k}: " + " ".join(f"item {k * 7 + i} is ready" for i in range(n_tokens)))
        prompts.append(ids[:n_tokens])
    return prompts


def single_stream_decode(model: TextModel, prompts: list[list[int]], gen_tokens: int) -> float:
    """Median decode tokens/s of one stream at a time."""
    rates = []
    for prompt in prompts:
        stream = model.generate(prompt, max_tokens=gen_tokens, ignore_eos=True)
        stream.text()
        rates.append(stream.metrics.decode_tokens_per_s)
    return statistics.median(rates)


def time_to_first_token(model: TextModel, prompts: list[list[int]]) -> float:
    """Median seconds from submitting a request to its first token, one at a time."""
    times = []
    for prompt in prompts:
        stream = model.generate(prompt, max_tokens=1, ignore_eos=True)
        stream.text()
        times.append(stream.metrics.time_to_first_token_s)
    return statistics.median(times)


def aggregate_decode(model: TextModel, prompts: list[list[int]], gen_tokens: int, **options: Any) -> float:
    """All streams start together; the rate counts the tokens after each stream's first,
    over the time from the last first token to the last stream's end (llama-batched-bench's
    S_TG window: prompt processing excluded).  ``options`` are the sampling settings."""
    firsts: list[float] = []
    lasts: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(len(prompts))

    def run(prompt: list[int]) -> None:
        start.wait()
        first = last = 0.0
        for i, _ in enumerate(model.generate(prompt, max_tokens=gen_tokens, ignore_eos=True, **options)):
            last = time.perf_counter()
            if i == 0:
                first = last
        with lock:
            firsts.append(first)
            lasts.append(last)

    threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(prompts) * (gen_tokens - 1) / (max(lasts) - max(firsts))


def classify_rate(model: TextModel, prompts: list[list[int]]) -> float:
    started = time.perf_counter()
    model.classify(prompts)
    return len(prompts) / (time.perf_counter() - started)
