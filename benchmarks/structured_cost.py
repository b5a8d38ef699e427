"""What structured output costs, and whom: N concurrent streams in-process, run twice on one
loaded model, first all free, then with half of them constrained by a JSON schema.

    python benchmarks/structured_cost.py [--model PATH] [--streams 16] [--constrained 8]
        [--max-tokens 64] [--repeat 3] [--json OUT]

The claim it checks (issue 18): a constrained request costs its own row, never the others'.
The free streams of the mixed run should make tokens about as fast as the free streams of
the all-free run; the constrained ones pay for their masks (llguidance per step, one
bitmask call for all of them, and their rows copied and masked before sampling).  Free
streams use ``ignore_eos`` so every round makes the same number of tokens; constrained
streams write one long JSON string, so they keep their rows about as long.  The engine's own counters (``engine_stats``)
show where the step time went.  Rounds alternate between the two runs and the best of
``--repeat`` is kept, so a noisy machine skews both alike.  Prints (and writes) JSON;
asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

import rocm_infer as ri

# One long string field: a constrained stream keeps its row about as long as a free one
# (it ends early only if the model closes the string), so both runs batch alike.
SCHEMA = {"type": "object", "properties": {"story": {"type": "string"}}, "required": ["story"], "additionalProperties": False}


def run_round(model: ri.TextModel, streams: int, constrained: int, max_tokens: int) -> dict[str, Any]:
    """One round: ``streams`` threads start together; per kind, tokens over wall time."""
    results: list[tuple[bool, int, float]] = [(False, 0, 0.0)] * streams
    barrier = threading.Barrier(streams)

    def one(i: int) -> None:
        schema = SCHEMA if i < constrained else None
        barrier.wait()
        started = time.perf_counter()
        stream = model.generate(f"Story {i} as JSON:\n", max_tokens=max_tokens, temperature=0.7, seed=i,
                                json_schema=schema, ignore_eos=schema is None)
        count = sum(1 for _ in stream)
        results[i] = (schema is not None, count, time.perf_counter() - started)

    before = model.engine_stats()  # type: ignore[attr-defined]
    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    wall = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall
    after = model.engine_stats()  # type: ignore[attr-defined]
    steps = dataclasses.asdict(after)
    out: dict[str, Any] = {"wall_s": wall, "engine": {k: v - dataclasses.asdict(before)[k] for k, v in steps.items()}}
    for kind, flag in (("free", False), ("constrained", True)):
        rows = [r for r in results if r[0] is flag]
        if rows:
            out[kind] = {"streams": len(rows), "tokens": sum(r[1] for r in rows),
                         "tokens_per_s_per_stream": sum(r[1] / r[2] for r in rows) / len(rows)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--constrained", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with ri.load_model(args.model, backend="llama_cpp", parallel_slots=args.streams, prefix_cache=False) as model:
        run_round(model, args.streams, args.constrained, 4)  # warm-up: the grammar tokenizer is built once
        best: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeat):
            for name, constrained in (("all_free", 0), ("mixed", args.constrained)):
                result = run_round(model, args.streams, constrained, args.max_tokens)
                if name not in best or result["free"]["tokens_per_s_per_stream"] > best[name]["free"]["tokens_per_s_per_stream"]:
                    best[name] = result
        report = {"model": model.info.name, "build": ri.build_info().gpu_backend, "streams": args.streams,
                  "constrained": args.constrained, "max_tokens": args.max_tokens, **best,
                  "free_stream_speed_mixed_over_all_free": best["mixed"]["free"]["tokens_per_s_per_stream"]
                  / best["all_free"]["free"]["tokens_per_s_per_stream"]}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
