"""One benchmark run: in-process and llama-server next to llama.cpp's tools, one build, one run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import build_info, load_model
from ..models import resolve_model_path
from . import reference, workloads


@dataclass
class BenchSettings:
    model: str | None = None
    threads: int = 0
    prompt_tokens: int = 16
    gen_tokens: int = 64
    ttft_prompt_tokens: int = 8
    streams: list[int] = field(default_factory=lambda: [1, 4, 16])
    classify_prompts: int = 64
    flash_attn: str = "auto"
    context_len: int = 4096
    backends: list[str] = field(default_factory=lambda: ["llama_cpp", "llama_server"])


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _measure(name: str, path: Path, prompts: dict[str, Any], settings: BenchSettings, common: dict[str, Any]) -> dict[str, Any]:
    """One backend's figures.  Models are loaded one at a time: two llama.cpp contexts in
    one process each keep an OpenMP pool whose spinning threads would slow the other."""
    # One sequence and a context just big enough, as llama-bench runs: the limit for one stream.
    with load_model(path, backend=name, parallel_slots=1, context_len=settings.prompt_tokens + settings.gen_tokens + 64, **common) as single:
        single.generate("warm up", max_tokens=4).text()
        result: dict[str, Any] = {
            "single_stream_decode_tokens_per_s": workloads.single_stream_decode(single, prompts["single"], settings.gen_tokens),
        }
    # The serving configuration: many slots sharing one large KV cache.
    with load_model(path, backend=name, context_len=settings.context_len, parallel_slots=max(settings.streams), **common) as model:
        model.generate("warm up", max_tokens=4).text()
        result["single_stream_decode_in_serving_config_tokens_per_s"] = workloads.single_stream_decode(model, prompts["single"], settings.gen_tokens)
        result["time_to_first_token_s"] = workloads.time_to_first_token(model, prompts["ttft"])
        result["aggregate_tokens_per_s"] = {}
        stats_before = model.engine_stats() if hasattr(model, "engine_stats") else None
        for n in settings.streams:
            result["aggregate_tokens_per_s"][n] = workloads.aggregate_decode(model, prompts["streams"][:n], settings.gen_tokens)
        if stats_before is not None:
            after = model.engine_stats()
            step_s, decode_s = after.step_s - stats_before.step_s, after.decode_s - stats_before.decode_s
            result["python_share_of_step"] = (step_s - decode_s) / step_s
        result["classify_prompts_per_s"] = workloads.classify_rate(model, prompts["classify"])
        metrics = model.metrics()
        result["active_memory_bytes"] = metrics.active_memory_bytes if metrics else None
        result["peak_memory_bytes"] = metrics.peak_memory_bytes if metrics else None
    return result


def _prompts(path: Path, settings: BenchSettings) -> dict[str, Any]:
    """Token-id prompts, made once with the model's tokenizer and given to every contender."""
    with load_model(path, backend="llama_cpp", parallel_slots=1, context_len=512) as model:
        tokenize = model.tokenize  # type: ignore[attr-defined]  (the in-process model)
        return {
            "single": workloads.synthetic_prompts(tokenize, settings.prompt_tokens, 3, 0),
            "ttft": workloads.synthetic_prompts(tokenize, settings.ttft_prompt_tokens, 5, 100),
            "streams": workloads.synthetic_prompts(tokenize, settings.prompt_tokens, max(settings.streams), 1000),
            "classify": workloads.synthetic_prompts(tokenize, settings.prompt_tokens, settings.classify_prompts, 5000),
        }


def run(settings: BenchSettings) -> dict[str, Any]:
    threads = settings.threads or len(os.sched_getaffinity(0))
    path = resolve_model_path(settings.model)
    # prefix cache off on both sides: these rows measure decoding and prefill as such
    # (the prefix cache has its own workloads: bench.prefix)
    common = dict(n_threads=threads, flash_attn=settings.flash_attn, prefix_cache=False)

    # The references run before and after the backends and are averaged, so a drift in
    # machine speed during the run (seen here: ~10%) favours no contender.
    def references() -> tuple[reference.LlamaBench, dict[int, float]]:
        return (
            reference.llama_bench(path, threads, settings.ttft_prompt_tokens, settings.gen_tokens, settings.flash_attn),
            reference.batched_bench(path, threads, settings.prompt_tokens, settings.gen_tokens, settings.streams, settings.flash_attn, settings.context_len),
        )

    prompts = _prompts(path, settings)
    ref_before, batched_before = references()
    backends = {name: _measure(name, path, prompts, settings, common) for name in settings.backends}
    ref_after, batched_after = references()
    ref = reference.LlamaBench(
        (ref_before.prompt_tokens_per_s + ref_after.prompt_tokens_per_s) / 2,
        (ref_before.decode_tokens_per_s + ref_after.decode_tokens_per_s) / 2,
    )
    batched = {n: (batched_before[n] + batched_after[n]) / 2 for n in batched_before}
    prefill_reference_s = settings.ttft_prompt_tokens / ref.prompt_tokens_per_s
    ratios: dict[str, float] = {}
    for name, figures in backends.items():
        ratios[f"{name}_single_decode_vs_llama_bench_tg"] = figures["single_stream_decode_tokens_per_s"] / ref.decode_tokens_per_s
        ratios[f"{name}_ttft_vs_llama_bench_prefill_time"] = figures["time_to_first_token_s"] / prefill_reference_s
        for n, rate in figures["aggregate_tokens_per_s"].items():
            ratios[f"{name}_aggregate_{n}_vs_batched_bench"] = rate / batched[n]
    if {"llama_cpp", "llama_server"} <= backends.keys():
        inproc, server = backends["llama_cpp"], backends["llama_server"]
        ratios["ttft_in_process_vs_server"] = inproc["time_to_first_token_s"] / server["time_to_first_token_s"]
        for n in settings.streams:
            ratios[f"aggregate_{n}_in_process_vs_server"] = inproc["aggregate_tokens_per_s"][n] / server["aggregate_tokens_per_s"][n]
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "commit": git_commit(),
        "build": asdict(build_info()),
        "settings": asdict(settings) | {"threads": threads, "model": str(path)},
        "llama_bench": asdict(ref),
        "llama_batched_bench_tg": batched,
        "backends": backends,
        "ratios": ratios,
    }


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")


def table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    names = list(result["backends"])
    ref, batched, settings = result["llama_bench"], result["llama_batched_bench_tg"], result["settings"]
    t = Table(title=f"{result['machine']}, commit {result['commit']}, {settings['threads']} threads, prefix cache off")
    t.add_column("measurement")
    for name in names:
        t.add_column(name, justify="right")
    t.add_column("llama.cpp tool", justify="right")
    b = result["backends"]
    t.add_row("decode tok/s, 1 stream, 1 slot", *[f"{b[n]['single_stream_decode_tokens_per_s']:.1f}" for n in names], f"{ref['decode_tokens_per_s']:.1f} (llama-bench)")
    t.add_row(f"decode tok/s, 1 stream, {max(settings['streams'])} slots", *[f"{b[n]['single_stream_decode_in_serving_config_tokens_per_s']:.1f}" for n in names], "")
    for s in settings["streams"]:
        t.add_row(f"aggregate tok/s, {s} streams", *[f"{b[n]['aggregate_tokens_per_s'][s]:.1f}" for n in names], f"{batched[s]:.1f} (batched-bench)")
    t.add_row(f"first token ms, {settings['ttft_prompt_tokens']}-token prompt", *[f"{b[n]['time_to_first_token_s'] * 1000:.1f}" for n in names], f"{settings['ttft_prompt_tokens'] / ref['prompt_tokens_per_s'] * 1000:.1f} (pp{settings['ttft_prompt_tokens']})")
    t.add_row(f"classify prompts/s ({settings['classify_prompts']})", *[f"{b[n]['classify_prompts_per_s']:.1f}" for n in names], "")
    t.add_row("python share of an engine step", *[f"{b[n]['python_share_of_step'] * 100:.1f}%" if "python_share_of_step" in b[n] else "" for n in names], "")
    Console(stderr=True).print(t)
