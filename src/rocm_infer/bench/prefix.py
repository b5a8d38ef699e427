"""Prefix-cache workloads: what a prompt's known beginning saves, in-process with and without
the cache (and llama-server, which has its own ``cache_prompt``).

- ``shared_prefix_ttft``: a request with a long prefix, then another sharing it: the
  second one's time to first token against the first's;
- ``multi_turn_chat``: a chat whose history grows by a user turn each time; the last
  turn's time to first token;
- ``few_shot_classify``: many short items after one instruction prefix, prompts/s;
- ``shared_system_prompt``: requests arriving together with one system prompt; the
  engine's counters say how many prompt tokens were computed and how many reused.

Usage: ``python -m rocm_infer.bench.prefix [--model M] [--backends llama_cpp,llama_server]``;
prints a markdown table and writes JSON with ``--out``.  It asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import load_model
from ..interface import TextModel
from ..models import resolve_model_path
from ..build import package_commit
from .report import write

WORDS = "the keeper climbed the stairs and lit the great lamp while the storm rolled in from the west "


def text_of(model: TextModel, n_tokens: int, salt: str = "") -> str:
    """Ordinary text of about ``n_tokens`` tokens."""
    words = (salt + WORDS * (n_tokens // 8 + 8)).split()
    tokenize = getattr(model, "tokenize", None)
    if tokenize is None:
        return " ".join(words[: int(n_tokens * 0.8)])
    lo, hi = 1, len(words)
    while lo < hi:  # the longest word count within n_tokens
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if len(tokenize(" ".join(words[:mid]))) <= n_tokens else (lo, mid - 1)
    return " ".join(words[:lo])


def ttft(model: TextModel, prompt: str) -> float:
    stream = model.generate(prompt, max_tokens=1, ignore_eos=True)
    stream.text()
    return stream.metrics.time_to_first_token_s


def shared_prefix_ttft(model: TextModel, prefix_tokens: int) -> dict[str, float]:
    prefix = text_of(model, prefix_tokens)
    first = ttft(model, prefix + " Question one: who lit the lamp?")
    second = ttft(model, prefix + " Question two: where did the storm come from?")
    return {"first_s": first, "second_s": second, "ratio": second / first}


def multi_turn_chat(model: TextModel, turns: int, turn_tokens: int) -> dict[str, float]:
    history: list[dict[str, str]] = []
    times = []
    for turn in range(turns):
        history.append({"role": "user", "content": text_of(model, turn_tokens, salt=f"turn {turn} ")})
        stream = model.chat(history, max_tokens=16, ignore_eos=True)
        reply = stream.text()
        times.append(stream.metrics.time_to_first_token_s)
        history.append({"role": "assistant", "content": reply})
    return {"first_turn_s": times[0], "last_turn_s": times[-1]}


def few_shot_classify(model: TextModel, prefix_tokens: int, items: int) -> dict[str, float]:
    prefix = text_of(model, prefix_tokens, salt="Instructions: label each report. ")
    prompts = [f"{prefix}\nReport {i}: the lamp number {i} is broken.\nLabel:" for i in range(items)]
    started = time.perf_counter()
    model.classify(prompts)
    return {"prompts_per_s": items / (time.perf_counter() - started)}


def shared_system_prompt(model: TextModel, prefix_tokens: int, requests: int) -> dict[str, float]:
    prefix = text_of(model, prefix_tokens, salt="System: ")
    stats = getattr(model, "cache_stats", None)
    before = stats() if stats else None
    start = threading.Barrier(requests)
    own = []

    def run(i: int) -> None:
        prompt = f"{prefix}\nUser {i}: what is lamp {i} for?"
        own.append(len(model.tokenize(prompt)) if hasattr(model, "tokenize") else 0)
        start.wait()
        model.generate(prompt, max_tokens=4, ignore_eos=True).text()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(requests)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result: dict[str, float] = {"wall_s": time.perf_counter() - started}
    if before is not None:
        after = stats()  # type: ignore[misc]
        reused = after.tokens_reused - before.tokens_reused
        result["prompt_tokens"] = float(sum(own))
        result["prompt_tokens_reused"] = float(reused)
        result["prompt_tokens_computed"] = float(sum(own) - reused)
    return result


def run(model: str | None, backends: list[str], threads: int) -> dict[str, Any]:
    path = resolve_model_path(model)
    contenders = {
        "in_process_cache": ("llama_cpp", True),
        "in_process_no_cache": ("llama_cpp", False),
        "server_cache": ("llama_server", True),
    }
    results: dict[str, Any] = {}
    for name, (backend, cache) in contenders.items():
        if backend not in backends:
            continue
        options = {"n_threads": threads} if threads else {}
        with load_model(path, backend=backend, parallel_slots=16, context_len=8192, prefix_cache=cache, **options) as m:
            m.generate("warm up", max_tokens=2).text()
            results[name] = {
                "shared_prefix_ttft_1500": shared_prefix_ttft(m, 1500),
                "multi_turn_chat_4x200": multi_turn_chat(m, 4, 200),
                "few_shot_classify_64x300": few_shot_classify(m, 300, 64),
                "shared_system_prompt_16x1000": shared_system_prompt(m, 1000, 16),
            }
        print(f"  {name} done", file=sys.stderr, flush=True)
    return {"commit": package_commit(), "model": str(path), "results": results}


def markdown(result: dict[str, Any]) -> str:
    r = result["results"]
    lines = [f"{Path(result['model']).name}, commit {result['commit']}", "", "| workload | " + " | ".join(r) + " |", "|---|" + "---|" * len(r)]
    rows = [
        ("1,500-token prefix: first request TTFT (ms)", lambda x: x["shared_prefix_ttft_1500"]["first_s"] * 1000),
        ("1,500-token prefix: second request TTFT (ms)", lambda x: x["shared_prefix_ttft_1500"]["second_s"] * 1000),
        ("4-turn chat (200 tokens a turn): last turn TTFT (ms)", lambda x: x["multi_turn_chat_4x200"]["last_turn_s"] * 1000),
        ("classify 64 items after a 300-token prefix (prompts/s)", lambda x: x["few_shot_classify_64x300"]["prompts_per_s"]),
        ("16 requests, 1,000-token system prompt: wall (s)", lambda x: x["shared_system_prompt_16x1000"]["wall_s"]),
        ("  prompt tokens computed", lambda x: x["shared_system_prompt_16x1000"].get("prompt_tokens_computed", float("nan"))),
        ("  prompt tokens reused", lambda x: x["shared_system_prompt_16x1000"].get("prompt_tokens_reused", float("nan"))),
    ]
    for label, pick in rows:
        lines.append(f"| {label} | " + " | ".join(f"{pick(v):.1f}" for v in r.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--backends", default="llama_cpp,llama_server")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.model, args.backends.split(","), args.threads)
    table = markdown(result)
    print(table)
    if args.out:
        write(result, args.out)


if __name__ == "__main__":
    main()
