"""Prefix-cache workloads: what a prompt's known beginning saves, in-process with and without
the cache (and llama-server, which has its own ``cache_prompt``).

- ``shared_prefix_ttft``: a request with a long prefix, then another sharing it: the
  second one's time to first token against the first's;
- ``multi_turn_chat``: a chat whose history grows by a user turn each time; the last
  turn's time to first token;
- ``few_shot_classify``: many short items after one instruction prefix, prompts/s;
- ``shared_system_prompt``: requests arriving together with one system prompt; the
  engine's counters say how many prompt tokens were computed and how many reused.

``rocm-infer bench`` runs the four with the cache on, for both backends (its
``--prefix-tokens`` sets the sizes).  This module's own command adds the in-process
path with the cache off:
``python -m rocm_infer.bench.prefix [--model M] [--backends llama_cpp,llama_server]``;
it prints a markdown table and writes JSON with ``--out``.  It asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import load_model
from ..interface import TextModel
from ..models import resolve_model_path
from ..build import package_commit
from .report import write
from .workloads import tokenizer

WORDS = "the keeper climbed the stairs and lit the great lamp while the storm rolled in from the west "


@dataclass(frozen=True)
class Prompts:
    """Every workload's prompts, made once with the model's own tokenizer so every
    contender gets the same strings.  (The llama-server backend has no tokenizer here;
    when each contender sized its own text, llama-server got about a fifth fewer tokens,
    and its 1,500-token prefill looked 1.2x faster than in-process for that reason.)"""

    long_prefix: str
    chat_turns: tuple[str, ...]  # user turns, each on the whole history before it
    instructions: str  # the few-shot classify prefix
    system_prompts: tuple[str, ...]  # one system prompt, then each request's own line
    system_prompt_tokens: int  # the tokens of all of system_prompts together


PREFIX_TOKENS, CHAT_TURNS, CLASSIFY_ITEMS, SYSTEM_REQUESTS = 1500, 4, 64, 16


def make_prompts(tokenize: Callable[[str], list[int]], prefix_tokens: int = PREFIX_TOKENS, requests: int = SYSTEM_REQUESTS) -> Prompts:
    """The other sizes follow the long prefix's: at 1,500 tokens, chat turns of 187, a
    300-token instruction and a 1,000-token system prompt (``rocm-infer bench --quick``
    runs them at 256: 32, 64 and 170)."""
    turn, instructions, system = max(32, prefix_tokens // 8), max(64, prefix_tokens // 5), max(128, 2 * prefix_tokens // 3)
    shared = text_of(tokenize, system, salt="System: ")
    system_prompts = tuple(f"{shared}\nUser {i}: what is lamp {i} for?" for i in range(requests))
    return Prompts(
        long_prefix=text_of(tokenize, prefix_tokens),
        chat_turns=tuple(text_of(tokenize, turn, salt=f"turn {i} ") for i in range(CHAT_TURNS)),
        instructions=text_of(tokenize, instructions, salt="Instructions: label each report. "),
        system_prompts=system_prompts,
        system_prompt_tokens=sum(len(tokenize(prompt)) for prompt in system_prompts),
    )


def text_of(tokenize: Callable[[str], list[int]], n_tokens: int, salt: str = "") -> str:
    """Ordinary text of at most ``n_tokens`` tokens (the longest such run of words)."""
    words = (salt + WORDS * (n_tokens // 8 + 8)).split()
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if len(tokenize(" ".join(words[:mid]))) <= n_tokens else (lo, mid - 1)
    return " ".join(words[:lo])


def ttft(model: TextModel, prompt: str) -> float:
    stream = model.generate(prompt, max_tokens=1, ignore_eos=True)
    stream.text()
    return stream.metrics.time_to_first_token_s


def shared_prefix_ttft(model: TextModel, prefix: str) -> dict[str, float]:
    first = ttft(model, prefix + " Question one: who lit the lamp?")
    second = ttft(model, prefix + " Question two: where did the storm come from?")
    return {"first_s": first, "second_s": second, "ratio": second / first}


def multi_turn_chat(model: TextModel, turns: Sequence[str]) -> dict[str, float]:
    history: list[dict[str, str]] = []
    times = []
    for turn in turns:
        history.append({"role": "user", "content": turn})
        stream = model.chat(history, max_tokens=16, ignore_eos=True)
        reply = stream.text()
        times.append(stream.metrics.time_to_first_token_s)
        history.append({"role": "assistant", "content": reply})
    return {"first_turn_s": times[0], "last_turn_s": times[-1]}


def few_shot_classify(model: TextModel, instructions: str, items: int) -> dict[str, float]:
    prompts = [f"{instructions}\nReport {i}: the lamp number {i} is broken.\nLabel:" for i in range(items)]
    started = time.perf_counter()
    model.classify(prompts)
    return {"prompts_per_s": items / (time.perf_counter() - started)}


def shared_system_prompt(model: TextModel, prompts: Sequence[str], prompt_tokens: int) -> dict[str, float]:
    stats = getattr(model, "cache_stats", None)
    before = stats() if stats else None
    start = threading.Barrier(len(prompts))

    def run(prompt: str) -> None:
        start.wait()
        model.generate(prompt, max_tokens=4, ignore_eos=True).text()

    threads = [threading.Thread(target=run, args=(prompt,)) for prompt in prompts]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result: dict[str, float] = {"wall_s": time.perf_counter() - started, "requests": float(len(prompts))}
    if before is not None:
        reused = stats().tokens_reused - before.tokens_reused  # type: ignore[misc]
        result["prompt_tokens"] = float(prompt_tokens)
        result["prompt_tokens_reused"] = float(reused)
        result["prompt_tokens_computed"] = float(prompt_tokens - reused)
    return result


def workloads(model: TextModel, prompts: Prompts, classify_items: int = CLASSIFY_ITEMS) -> dict[str, Any]:
    """The four workloads on one loaded model (16 slots or more, a context of 8,192 cells)."""
    model.generate("warm up", max_tokens=2).text()
    return {
        "shared_prefix_ttft": shared_prefix_ttft(model, prompts.long_prefix),
        "multi_turn_chat": multi_turn_chat(model, prompts.chat_turns),
        "few_shot_classify": few_shot_classify(model, prompts.instructions, classify_items),
        "shared_system_prompt": shared_system_prompt(model, prompts.system_prompts, prompts.system_prompt_tokens),
    }


def run(model: str | None, backends: list[str], threads: int) -> dict[str, Any]:
    path = resolve_model_path(model)
    with tokenizer(path) as tokenize:
        prompts = make_prompts(tokenize)
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
        with load_model(path, backend=backend, parallel_slots=SYSTEM_REQUESTS, context_len=8192, prefix_cache=cache, **options) as m:
            results[name] = workloads(m, prompts)
        print(f"  {name} done", file=sys.stderr, flush=True)
    return {"commit": package_commit(), "model": str(path), "results": results}


def markdown(result: dict[str, Any]) -> str:
    r = result["results"]
    lines = [f"{Path(result['model']).name}, commit {result['commit']}", "", "| workload | " + " | ".join(r) + " |", "|---|" + "---|" * len(r)]
    rows = [
        ("1,500-token prefix: first request TTFT (ms)", lambda x: x["shared_prefix_ttft"]["first_s"] * 1000),
        ("1,500-token prefix: second request TTFT (ms)", lambda x: x["shared_prefix_ttft"]["second_s"] * 1000),
        ("4-turn chat (187 tokens a turn): last turn TTFT (ms)", lambda x: x["multi_turn_chat"]["last_turn_s"] * 1000),
        ("classify 64 items after a 300-token prefix (prompts/s)", lambda x: x["few_shot_classify"]["prompts_per_s"]),
        ("16 requests, 1,000-token system prompt: wall (s)", lambda x: x["shared_system_prompt"]["wall_s"]),
        ("  prompt tokens computed", lambda x: x["shared_system_prompt"].get("prompt_tokens_computed", float("nan"))),
        ("  prompt tokens reused", lambda x: x["shared_system_prompt"].get("prompt_tokens_reused", float("nan"))),
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
