"""What ``max_tokens`` costs the other requests: two workloads on the in-process engine.

- **A generous ceiling**: 16 streams each ask ``--ceiling`` tokens (a client that sets
  ``max_tokens`` high and a model that stops early) and are closed after ``--take``
  tokens; aggregate tokens/s.  An engine that reserves prompt + ``max_tokens`` at
  admission runs only as many at once as those reservations fit in the context.
- **A short request behind a long one**: one stream asks for the whole context; once its
  first token is out, a second asks for 8 tokens; seconds until the second has all 8.

Run it on two commits with one installed build (a worktree per commit, ``PYTHONPATH``
at its ``src``) to compare; it prints one JSON line.  A benchmark, not a test.

    python benchmarks/preemption.py --ctx 4096 --slots 16
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import rocm_infer as ri
from rocm_infer.build import package_commit


def generous_ceiling(model: ri.TextModel, streams: int, take: int, ceiling: int) -> float:
    """Tokens/s of ``streams`` requests each asking ``ceiling`` tokens, closed after ``take``."""
    counts = [0] * streams

    def read(index: int) -> None:
        stream = model.generate(f"Story number {index}: once upon a time there was a", max_tokens=ceiling, ignore_eos=True)
        with stream:  # closing it cancels the rest
            for _ in stream:
                counts[index] += 1
                if counts[index] == take:
                    break

    started = time.perf_counter()
    threads = [threading.Thread(target=read, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def short_behind_long(model: ri.TextModel) -> float:
    """Seconds for 8 tokens asked for once a request for the whole context has its first."""
    with model.generate("Story number 0: once upon a time there was a", max_tokens=10**6, ignore_eos=True) as long:
        next(iter(long))
        started = time.perf_counter()
        for _ in model.generate("Story number 1: once upon a time there was a", max_tokens=8, ignore_eos=True):
            pass
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a GGUF path (default: Gemma 3 270M)")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--take", type=int, default=128)
    parser.add_argument("--ceiling", type=int, default=1000)
    args = parser.parse_args()
    with ri.load_model(args.model, context_len=args.ctx, parallel_slots=args.slots) as model:
        model.generate("warm up", max_tokens=4).text()
        result = {
            "commit": package_commit(),
            "build": ri.build_info().gpu_backend,
            "generous_ceiling_tok_s": round(generous_ceiling(model, args.slots, args.take, args.ceiling), 1),
            "short_behind_long_s": round(short_behind_long(model), 3),
            "preemptions": getattr(model.engine_stats(), "preemptions", None),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
