"""The in-process engine under the same workloads as llama.cpp's tools.

Prompts are token ids of a fixed length (as llama.cpp's tools use), and
``ignore_eos`` makes every stream produce exactly the asked number of tokens,
so tokens/s are counted the way llama-bench and llama-batched-bench count them.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

from ..native.model import NativeModel


def synthetic_prompt(model: NativeModel, n_tokens: int, salt: int) -> list[int]:
    """``n_tokens`` ids of ordinary text, different per ``salt`` so sequences share nothing."""
    words = model.tokenize(f"Report {salt}: " + " ".join(f"item {salt * 7 + i} is ready" for i in range(n_tokens)))
    return words[:n_tokens]


@dataclass(frozen=True)
class Aggregate:
    streams: int
    tokens_per_s: float
    python_fraction: float


def single_stream_decode(model: NativeModel, prompt_tokens: int, gen_tokens: int, repetitions: int = 3) -> float:
    rates = []
    for r in range(repetitions):
        stream = model.generate(synthetic_prompt(model, prompt_tokens, r), max_tokens=gen_tokens, ignore_eos=True)
        stream.text()
        rates.append(stream.metrics.decode_tokens_per_s)
    return statistics.median(rates)


def time_to_first_token(model: NativeModel, prompt_tokens: int, repetitions: int = 5) -> float:
    times = []
    for r in range(repetitions):
        stream = model.generate(synthetic_prompt(model, prompt_tokens, 100 + r), max_tokens=1, ignore_eos=True)
        stream.text()
        times.append(stream.metrics.time_to_first_token_s)
    return statistics.median(times)


def aggregate_decode(model: NativeModel, streams: int, prompt_tokens: int, gen_tokens: int) -> Aggregate:
    """All streams start together; the rate counts the tokens after each stream's first,
    over the time from the last first token to the last stream's end (llama-batched-bench's
    S_TG window: prompt processing excluded)."""
    firsts: list[float] = []
    lasts: list[float] = []
    lock = threading.Lock()
    prompts = [synthetic_prompt(model, prompt_tokens, 1000 + i) for i in range(streams)]
    start = threading.Barrier(streams)

    def run(prompt: list[int]) -> None:
        start.wait()
        first = last = 0.0
        for i, _ in enumerate(model.generate(prompt, max_tokens=gen_tokens, ignore_eos=True)):
            last = time.perf_counter()
            if i == 0:
                first = last
        with lock:
            firsts.append(first)
            lasts.append(last)

    before = model.engine_stats()
    threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = model.engine_stats()
    window = max(lasts) - max(firsts)
    step_s, decode_s = after.step_s - before.step_s, after.decode_s - before.decode_s
    return Aggregate(streams, streams * (gen_tokens - 1) / window, (step_s - decode_s) / step_s if step_s else 0.0)


def classify_rate(model: NativeModel, n_prompts: int, prompt_tokens: int) -> float:
    prompts = [synthetic_prompt(model, prompt_tokens, 5000 + i) for i in range(n_prompts)]
    started = time.perf_counter()
    model.classify(prompts)
    return n_prompts / (time.perf_counter() - started)
