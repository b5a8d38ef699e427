#!/usr/bin/env python3
"""Greedy tokens of a few fixed prompts from whichever rocm_infer build this Python imports,
so that two builds (the HIP build inside the ROCm chroot, running on its CPU device, and this
machine's CPU build) can be compared token for token by check_hip_build.sh.

    greedy_tokens.py --model PATH --json OUT      # record this build's tokens
    greedy_tokens.py --compare A.json B.json      # exit 1 unless every prompt matches
    greedy_tokens.py --model PATH --compare-near-tie A.json B.json
                                                  # the same, except that A may leave B where
                                                  # B's two candidates are a near-tie
                                                  # (tests/near_tie.py, judged by this build)
    greedy_tokens.py --check-build A.json gfx1101 # exit 1 unless A is a HIP build for the
                                                  # target whose rocm backend says why it
                                                  # cannot run (no GPU where A was recorded)

Prompts run one at a time: a prompt alone takes the same kernels in both builds, whereas
batched rows would add llama.cpp's batch-position near-ties (tests/near_tie.py) to the
comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):",
    "Water boils at a temperature of",
    "Once upon a time, in a small village,",
)
MAX_TOKENS = 32


def record(model_path: str, out: Path) -> None:
    import rocm_infer as ri

    info = ri.build_info()
    rocm = ri.get_backend("rocm")
    results = {"build": {"gpu_backend": info.gpu_backend, "gpu_targets": list(info.gpu_targets)},
               "rocm_backend": {"available": rocm.available(), "reason": rocm.unavailable_reason()},
               "tokens": {}}
    with ri.load_model(model_path, backend="llama_cpp", parallel_slots=1) as model:
        for prompt in PROMPTS:
            stream = model.generate(prompt, max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
            results["tokens"][prompt] = [token.id for token in stream]
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: results[k] for k in ("build", "rocm_backend")}))


def compare(first: Path, second: Path, near_tie_model: str | None = None) -> int:
    """Exit status 0 when every prompt's tokens are equal; with ``near_tie_model``, also when
    the first difference is where the second run's two candidates were within NEAR_TIE
    logits of each other (two devices' float sums may order a near-tie differently)."""
    a, b = (json.loads(p.read_text()) for p in (first, second))
    equal = tied = 0
    judge = None
    for prompt in PROMPTS:
        x, y = a["tokens"][prompt], b["tokens"][prompt]
        if x == y:
            equal += 1
            continue
        at = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
        print(f"{prompt!r}: differ from token {at}: {x[at:at + 4]} vs {y[at:at + 4]}")
        if near_tie_model is not None:
            judge = judge or _near_tie_judge(near_tie_model)
            try:
                judge(prompt, y, x)
                tied += 1
            except AssertionError as exc:
                print(f"{prompt!r}: {exc}")
    print(f"{a['build']['gpu_backend']} vs {b['build']['gpu_backend']}: "
          f"{equal}/{len(PROMPTS)} prompts equal over {MAX_TOKENS} tokens"
          + (f", {tied} differ after a near-tie" if near_tie_model is not None else ""))
    return 0 if equal + tied == len(PROMPTS) else 1


def _near_tie_judge(model_path: str):
    """tests/near_tie.py's rule, with this build's model scoring the candidates."""
    import rocm_infer as ri

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from near_tie import assert_same_until_near_tie

    model = ri.load_model(model_path, backend="llama_cpp", parallel_slots=1, prefix_cache=False)
    return lambda prompt, reference, other: assert_same_until_near_tie(model, prompt, reference, other)


def check_build(record_path: Path, target: str) -> int:
    record = json.loads(record_path.read_text())
    build, rocm = record["build"], record["rocm_backend"]
    print(f"build_info: {build} | rocm backend: {rocm}")
    if build["gpu_backend"] != "hip" or target not in build["gpu_targets"]:
        print(f"build_info() does not say hip {target}")
        return 1
    if rocm["available"] or not rocm["reason"]:
        print("the rocm backend should be unavailable without a GPU, with a reason")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    parser.add_argument("--compare-near-tie", nargs=2, type=Path, metavar=("A", "B"))
    parser.add_argument("--check-build", nargs=2, metavar=("A", "TARGET"))
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.compare_near_tie:
        if not args.model:
            parser.error("--compare-near-tie needs --model (the model that judges a near-tie)")
        return compare(*args.compare_near_tie, near_tie_model=args.model)
    if args.check_build:
        return check_build(Path(args.check_build[0]), args.check_build[1])
    if not (args.model and args.json):
        parser.error("--model and --json, --compare A B, or --check-build A TARGET")
    record(args.model, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
