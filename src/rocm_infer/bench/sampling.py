"""The fast-step comparison: sampling settings by stream counts, every contender on one build.

Where a decode step takes a few milliseconds (a GPU, or the random-weight stand-in
from ``scripts/make_random_model.py`` on a CPU), choosing the tokens and the loop
around ``llama_decode`` decide throughput.  This runs the same token-id prompts,
``ignore_eos`` so every stream makes exactly ``gen_tokens``, through:

- the in-process engine (``device_sampling`` as given: auto, on or off);
- llama-server, without and with ``--backend-sampling``;
- llama-batched-bench (greedy only: it has no sampling) and llama-bench tg, the limits.

Rates are llama-batched-bench's S_TG window (``workloads.aggregate_decode``).  It writes
JSON and prints a markdown table; it asserts nothing.  Usage:
``python -m rocm_infer.bench.sampling --model M.gguf --streams 1,4,16,64 --out out.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any

from .. import build_info, load_model
from ..models import resolve_model_path
from . import reference, workloads
from ..build import package_commit
from ..cpu_threads import default_threads
from .report import write

SAMPLINGS: dict[str, dict[str, Any]] = {
    "greedy": {},
    "top_k": {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 1},
    "top_p": {"temperature": 0.8, "top_p": 0.95, "seed": 1},
}
# name -> (backend, load options on top of the common ones)
CONTENDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "in_process": ("llama_cpp", {}),
    "in_process_host": ("llama_cpp", {"device_sampling": "off"}),
    "in_process_device": ("llama_cpp", {"device_sampling": "on"}),
    "in_process_no_overlap": ("llama_cpp", {"overlap_decode": "off"}),  # what overlap buys on a GPU
    "in_process_stepwise": ("llama_cpp", {"decode_runs": False}),  # what native runs buy
    "server": ("llama_server", {"device_sampling": "off"}),
    "server_backend_sampling": ("llama_server", {"device_sampling": "on"}),
}


def measure(contender: str, path: Path, prompts: list[list[int]], streams: list[int], gen_tokens: int, common: dict[str, Any]) -> dict[str, Any]:
    backend, extra = CONTENDERS[contender]
    options = dict(common, **extra)
    context = max(streams) * (len(prompts[0]) + gen_tokens + 8)
    figures: dict[str, Any] = {"aggregate_tokens_per_s": {}, "host_share_of_step": {}, "sampling_share_of_step": {}, "phase_ms_per_step": {},
                               "run_step_share": {}}
    with load_model(path, backend=backend, parallel_slots=max(streams), context_len=max(context, 1024), **options) as model:
        model.generate(prompts[0], max_tokens=4).text()
        for name, sampling in SAMPLINGS.items():
            rates: dict[int, float] = {}
            for n in streams:
                before = model.engine_stats() if hasattr(model, "engine_stats") else None
                rates[n] = workloads.aggregate_decode(model, prompts[:n], gen_tokens, **sampling)
                if before is not None and n == max(streams):
                    after = model.engine_stats()
                    step, decode = after.step_s - before.step_s, after.decode_s - before.decode_s
                    figures["host_share_of_step"][name] = (step - decode) / step
                    figures["sampling_share_of_step"][name] = (after.sample_s - before.sample_s) / step
                    figures["run_step_share"][name] = (after.run_steps - before.run_steps) / max(1, after.steps - before.steps)
                    figures["phase_ms_per_step"][name] = {
                        phase: 1000 * (getattr(after, f"{phase}_s") - getattr(before, f"{phase}_s")) / max(1, after.steps - before.steps)
                        for phase in ("step", "plan", "fill", "decode", "sample", "emit")
                    }
                print(f"  {contender} {name} {n} streams: {rates[n]:.1f} tok/s", file=sys.stderr, flush=True)
            figures["aggregate_tokens_per_s"][name] = rates
        if backend == "llama_cpp":
            figures["single_stream_greedy_tokens_per_s"] = workloads.single_stream_decode(model, prompts[:3], gen_tokens)
    return figures


def run(model: str | None, streams: list[int], gen_tokens: int, prompt_tokens: int, threads: int, contenders: list[str], flash_attn: str) -> dict[str, Any]:
    threads = threads or default_threads()
    path = resolve_model_path(model)
    with workloads.tokenizer(path) as tokenize:
        prompts = workloads.synthetic_prompts(tokenize, prompt_tokens, max(streams), 1000)
    context = max(streams) * (prompt_tokens + gen_tokens + 8)
    batched = reference.batched_bench(path, threads, prompt_tokens, gen_tokens, streams, flash_attn, max(context, 1024))
    tg = reference.llama_bench(path, threads, [prompt_tokens], gen_tokens, flash_attn).decode_tokens_per_s
    common = {"n_threads": threads, "flash_attn": flash_attn, "prefix_cache": False}  # decoding as such
    results = {name: measure(name, path, prompts, streams, gen_tokens, common) for name in contenders}
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "commit": package_commit(),
        "build": build_info().gpu_backend,
        "model": str(path),
        "streams": streams,
        "gen_tokens": gen_tokens,
        "prompt_tokens": prompt_tokens,
        "threads": threads,
        "flash_attn": flash_attn,
        "llama_batched_bench_tg": batched,
        "llama_bench_tg": tg,
        "contenders": results,
    }


def markdown(result: dict[str, Any]) -> str:
    """One row per contender and sampling setting; each cell tok/s and the ratio to
    llama-batched-bench (greedy) at that stream count; the last three columns are at the
    most streams (in-process only): the host's share of a step (all but ``llama_decode``),
    the part of it that chose tokens (native code inside runs; on the CPU build the argmax
    or top-p over every row's logits), and the share of steps taken inside native runs.
    The host share less the sampling is the engine's own loop (planning, batch fill,
    handing out tokens), mostly Python."""
    streams, batched = result["streams"], result["llama_batched_bench_tg"]
    head = "| contender | sampling | " + " | ".join(f"{n} streams" for n in streams) + " | host share | of it sampling | native steps |"
    lines = [
        f"{Path(result['model']).name}, {result['build']} build, commit {result['commit']}, {result['machine']}, "
        f"{result['gen_tokens']} tokens per stream, prefix cache off, llama-bench tg {result['llama_bench_tg']:.0f} tok/s",
        "",
        head,
        "|" + "---|" * (len(streams) + 5),
        "| llama-batched-bench | greedy | " + " | ".join(f"{batched[n]:.0f}" for n in streams) + " | – | – | – |",
    ]
    for name, figures in result["contenders"].items():
        for sampling, rates in figures["aggregate_tokens_per_s"].items():
            cells = " | ".join(f"{rates[n]:.0f} ({rates[n] / batched[n]:.2f}x)" for n in streams)
            shares = [figures.get(key, {}).get(sampling) for key in ("host_share_of_step", "sampling_share_of_step", "run_step_share")]
            lines.append(f"| {name} | {sampling} | {cells} | " + " | ".join(f"{v * 100:.1f}%" if v is not None else "–" for v in shares) + " |")
    for name, figures in result["contenders"].items():
        if "single_stream_greedy_tokens_per_s" in figures:
            rate = figures["single_stream_greedy_tokens_per_s"]
            lines.append(f"\n{name}: one stream greedy {rate:.0f} tok/s = {rate / result['llama_bench_tg']:.2f}x llama-bench tg")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--streams", default="1,4,16,64")
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--flash-attn", default="auto")
    parser.add_argument("--contenders", default="in_process,server,server_backend_sampling")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.model, [int(s) for s in args.streams.split(",")], args.gen_tokens, args.prompt_tokens, args.threads,
                 args.contenders.split(","), args.flash_attn)
    table = markdown(result)
    print(table)
    if args.out:
        write(result, args.out)
        args.out.with_suffix(".md").write_text(table)


if __name__ == "__main__":
    main()
