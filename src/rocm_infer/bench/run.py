"""One benchmark run: in-process figures next to llama.cpp's on the same build, as JSON and a table."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import build_info, load_model
from ..models import resolve_model_path
from . import inprocess, reference


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


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(settings: BenchSettings) -> dict[str, object]:
    threads = settings.threads or len(os.sched_getaffinity(0))
    path = resolve_model_path(settings.model)
    # The references run before and after the in-process measurements and are averaged,
    # so a drift in machine speed during the run (seen here: ~10%) does not favour either side.
    def references() -> tuple[reference.LlamaBench, dict[int, float]]:
        return (
            reference.llama_bench(path, threads, settings.ttft_prompt_tokens, settings.gen_tokens, settings.flash_attn),
            reference.batched_bench(path, threads, settings.prompt_tokens, settings.gen_tokens, settings.streams, settings.flash_attn, settings.context_len),
        )

    ref_before, batched_before = references()
    # One sequence and a context just big enough, as llama-bench runs: the limit for one stream.
    with load_model(path, backend="llama_cpp", n_threads=threads, flash_attn=settings.flash_attn, parallel_slots=1,
                    context_len=settings.prompt_tokens + settings.gen_tokens + 64) as model:
        model.generate("warm up", max_tokens=4).text()
        single = inprocess.single_stream_decode(model, settings.prompt_tokens, settings.gen_tokens)
        ttft = inprocess.time_to_first_token(model, settings.ttft_prompt_tokens)
    # The serving configuration: many slots sharing one large unified KV cache.
    with load_model(path, backend="llama_cpp", n_threads=threads, flash_attn=settings.flash_attn, context_len=settings.context_len, parallel_slots=max(settings.streams)) as model:
        model.generate("warm up", max_tokens=4).text()
        single_serving = inprocess.single_stream_decode(model, settings.prompt_tokens, settings.gen_tokens)
        aggregates = [inprocess.aggregate_decode(model, n, settings.prompt_tokens, settings.gen_tokens) for n in settings.streams]
        classify = inprocess.classify_rate(model, settings.classify_prompts, settings.prompt_tokens)
        memory = model.metrics()
    ref_after, batched_after = references()
    ref = reference.LlamaBench(
        (ref_before.prompt_tokens_per_s + ref_after.prompt_tokens_per_s) / 2,
        (ref_before.decode_tokens_per_s + ref_after.decode_tokens_per_s) / 2,
    )
    batched = {n: (batched_before[n] + batched_after[n]) / 2 for n in batched_before}
    prefill_reference_s = settings.ttft_prompt_tokens / ref.prompt_tokens_per_s
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.node()}",
        "commit": _commit(),
        "build": asdict(build_info()),
        "settings": asdict(settings) | {"threads": threads, "model": str(path)},
        "llama_bench": asdict(ref),
        "llama_batched_bench_tg": batched,
        "inprocess": {
            "single_stream_decode_tokens_per_s": single,
            "single_stream_decode_in_serving_config_tokens_per_s": single_serving,
            "time_to_first_token_s": ttft,
            "aggregate": [asdict(a) for a in aggregates],
            "classify_prompts_per_s": classify,
            "active_memory_bytes": memory.active_memory_bytes if memory else None,
            "peak_memory_bytes": memory.peak_memory_bytes if memory else None,
        },
        "ratios": {
            "single_decode_vs_llama_bench_tg": single / ref.decode_tokens_per_s,
            "single_decode_serving_config_vs_llama_bench_tg": single_serving / ref.decode_tokens_per_s,
            "ttft_vs_llama_bench_prefill_time": ttft / prefill_reference_s,
            **{f"aggregate_{a.streams}_vs_batched_bench": a.tokens_per_s / batched[a.streams] for a in aggregates if a.streams in batched},
        },
    }


def write(result: dict[str, object], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")


def table(result: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    inproc = result["inprocess"]
    ref = result["llama_bench"]
    batched = result["llama_batched_bench_tg"]
    t = Table(title=f"rocm_infer in-process vs llama.cpp tools ({result['machine']}, commit {result['commit']})")
    for column in ("measurement", "in-process", "llama.cpp", "ratio"):
        t.add_column(column, justify="right" if column != "measurement" else "left")
    ratios = result["ratios"]
    t.add_row("single-stream decode tok/s (1 slot)", f"{inproc['single_stream_decode_tokens_per_s']:.1f}", f"{ref['decode_tokens_per_s']:.1f} (llama-bench tg)", f"{ratios['single_decode_vs_llama_bench_tg']:.2f}")
    t.add_row(f"single-stream decode tok/s ({max(result['settings']['streams'])} slots, {result['settings']['context_len']} cells)", f"{inproc['single_stream_decode_in_serving_config_tokens_per_s']:.1f}", f"{ref['decode_tokens_per_s']:.1f} (llama-bench tg)", f"{ratios['single_decode_serving_config_vs_llama_bench_tg']:.2f}")
    for agg in inproc["aggregate"]:
        n = agg["streams"]
        t.add_row(f"aggregate decode tok/s, {n} streams", f"{agg['tokens_per_s']:.1f}", f"{batched.get(n, float('nan')):.1f} (batched-bench)", f"{ratios.get(f'aggregate_{n}_vs_batched_bench', float('nan')):.2f}")
    settings = result["settings"]
    t.add_row(f"first token, {settings['ttft_prompt_tokens']}-token prompt (ms)", f"{inproc['time_to_first_token_s'] * 1000:.1f}", f"{settings['ttft_prompt_tokens'] / ref['prompt_tokens_per_s'] * 1000:.1f} (llama-bench pp{settings['ttft_prompt_tokens']})", f"{ratios['ttft_vs_llama_bench_prefill_time']:.2f}")
    t.add_row("classify prompts/s", f"{inproc['classify_prompts_per_s']:.1f}", "", "")
    last = inproc["aggregate"][-1]
    t.add_row(f"python share of a step, {last['streams']} streams", f"{last['python_fraction'] * 100:.1f}%", "", "")
    Console(stderr=True).print(t)
