"""One benchmark run: in-process and llama-server next to llama.cpp's own tools, one build.

For each flash-attention mode asked for, llama.cpp's tools give the limits (llama-bench:
prefill and one-stream decode; llama-batched-bench: aggregate decode at each stream
count), then each backend runs the same token-id prompts (``workloads``), one model load
at a time: two llama.cpp contexts in one process each keep an OpenMP pool whose
spinning threads would slow the other.  The serve workload (``serve``) puts the same
model behind HTTP: ``rocm-infer serve`` for an in-process backend, with the library's own
``achat`` as its reference, and llama-server for that backend, one server at a time.
``report.rows`` turns the raw figures into the rows users read.  It asserts nothing.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import build_info, load_model, vram_info
from ..build import package_commit
from ..cpu_threads import default_threads
from ..errors import EngineError
from ..models import resolve_model_path
from . import prefix, reference, serve, workloads
from .report import PATHS

SAMPLED = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 1}
SERVE_LABELS = {"serve": "rocm-infer serve", "llama_server": "llama-server", "library": "library achat"}


@dataclass
class BenchSettings:
    model: str | None = None
    threads: int = 0
    backends: list[str] = field(default_factory=lambda: ["llama_cpp", "llama_server"])
    flash_attn: list[str] = field(default_factory=lambda: ["auto"])
    streams: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    prompt_tokens: int = 16
    gen_tokens: int = 64
    ttft_short_tokens: int = 8
    ttft_long_tokens: int = 512
    classify_prompts: int = 64
    prefix_tokens: int = 1500  # 0: no prefix-cache workload
    serve_clients: list[int] = field(default_factory=lambda: [1, 16])  # []: no serve workload
    repetitions: int = 3  # llama-bench's
    references_twice: bool = True  # before and after the backends, averaged

    @classmethod
    def quick(cls, **overrides: Any) -> BenchSettings:
        """About a minute with Gemma 3 270M on a quiet 2-core CPU.  The serve workload keeps
        one client count (4): starting each server costs more than its rounds."""
        return replace(cls(streams=[1, 4, 16], gen_tokens=32, ttft_long_tokens=256, classify_prompts=32, prefix_tokens=256,
                           serve_clients=[4], repetitions=2, references_twice=False), **overrides)


def serve_contenders(backend: str) -> tuple[str, ...]:
    """The serve workload's servers for one backend: an in-process one behind ``rocm-infer
    serve``, with ``library`` (its ``achat``, no HTTP) as the reference; llama-server itself."""
    return {"in-process": ("serve", "library"), "llama-server": ("llama_server",)}.get(PATHS.get(backend, ""), ())


def step_count(settings: BenchSettings) -> int:
    """Progress steps of ``run``: one per call of its ``tick``."""
    per_backend = 4 + 2 * len(settings.streams) + (1 if settings.prefix_tokens else 0)
    serving = sum(len(serve_contenders(b)) for b in settings.backends) * (1 + len(serve.SAMPLING) * len(settings.serve_clients))
    references = 2 * (2 if settings.references_twice else 1)
    return len(settings.flash_attn) * (references + len(settings.backends) * per_backend + (serving if settings.serve_clients else 0)) + 1


def _vram_used() -> int | None:
    """Bytes in use on the AMD cards (sysfs, device-wide: the llama-server child counts too)."""
    cards = vram_info()
    return sum(c.vram_used_bytes for c in cards) if cards else None


def _measure(backend: str, path: Path, prompts: dict[str, Any], settings: BenchSettings, flash_attn: str,
             tick: Callable[[str], None]) -> dict[str, Any]:
    common: dict[str, Any] = dict(backend=backend, n_threads=settings.threads, flash_attn=flash_attn)
    figures: dict[str, Any] = {}
    tick(f"{backend}: one stream")
    # one sequence and a context just big enough, as llama-bench runs: the one-stream limit
    with load_model(path, parallel_slots=1, prefix_cache=False, context_len=settings.prompt_tokens + settings.gen_tokens + 64, **common) as single:
        single.generate("warm up", max_tokens=4).text()
        figures["single_stream_decode_tokens_per_s"] = workloads.single_stream_decode(single, prompts["single"], settings.gen_tokens)
    # the serving configuration: many slots sharing one KV cache; prefix cache off, so
    # these rows measure prefill and decoding as such
    context = max(4096, max(settings.streams) * (settings.prompt_tokens + settings.gen_tokens + 8), settings.ttft_long_tokens + 64)
    vram_before = _vram_used()
    with load_model(path, parallel_slots=max(settings.streams), prefix_cache=False, context_len=context, **common) as model:
        model.generate("warm up", max_tokens=4).text()
        tick(f"{backend}: first token, short prompt")
        figures["ttft_short_s"] = workloads.time_to_first_token(model, prompts["ttft_short"])
        tick(f"{backend}: first token, long prompt")
        figures["ttft_long_s"] = workloads.time_to_first_token(model, prompts["ttft_long"])
        for kind, options in (("greedy", {}), ("sampled", SAMPLED)):
            rates = figures[f"aggregate_{kind}_tokens_per_s"] = {}
            for n in settings.streams:
                tick(f"{backend}: {n} streams, {kind}")
                rates[n] = workloads.aggregate_decode(model, prompts["streams"][:n], settings.gen_tokens, **options)
        tick(f"{backend}: classify")
        figures["classify_prompts_per_s"] = workloads.classify_rate(model, prompts["classify"])
        metrics = model.metrics()
        figures["model_memory_bytes"] = metrics.peak_memory_bytes if metrics else None
        after = _vram_used()
        figures["vram_used_bytes"] = after - vram_before if after is not None and vram_before is not None else None
    if settings.prefix_tokens:
        tick(f"{backend}: prefix cache")
        with load_model(path, parallel_slots=prefix.SYSTEM_REQUESTS, prefix_cache=True, context_len=max(8192, 4 * (settings.prefix_tokens + 64)),
                        **common) as cached:
            figures["prefix"] = prefix.workloads(cached, prompts["prefix"], settings.classify_prompts)
    if settings.serve_clients:
        figures["serve"] = _serve(backend, path, settings, flash_attn, tick)
    return figures


def _serve(backend: str, path: Path, settings: BenchSettings, flash_attn: str, tick: Callable[[str], None]) -> dict[str, Any]:
    """Each server alone on the machine (two at once would double the model's memory on a
    card), every client count and sampling; a failed client fails the run: its round's
    figures would not be the workload asked for."""
    slots = max(settings.serve_clients)
    in_process = PATHS.get(backend) == "in-process"
    config = serve.ServeConfig(path, slots=slots, context=max(4096, slots * (128 + settings.gen_tokens)), threads=settings.threads,
                               flash_attn=flash_attn, backend=backend if in_process else None)
    figures: dict[str, Any] = {}
    for name in serve_contenders(backend):
        label = SERVE_LABELS[name]
        tick(f"starting {label}")
        with serve.contender(name, config) as runner:
            for sampling in serve.SAMPLING:
                for n in settings.serve_clients:
                    tick(f"{label}: {n} chat clients, {sampling}")
                    result = runner(n, sampling, settings.gen_tokens)
                    if result.errors:
                        raise EngineError(f"serve workload, {name}, {n} clients: a client failed: {result.errors[0]}")
                    figures.setdefault(name, {}).setdefault(sampling, {})[n] = asdict(result)
    return figures


def _prompts(path: Path, settings: BenchSettings) -> dict[str, Any]:
    """Token-id prompts, made once with the model's tokenizer and given to every contender."""
    with workloads.tokenizer(path) as tokenize:
        return {
            "single": workloads.synthetic_prompts(tokenize, settings.prompt_tokens, 3, 0),
            "ttft_short": workloads.synthetic_prompts(tokenize, settings.ttft_short_tokens, 5, 100),
            "ttft_long": workloads.synthetic_prompts(tokenize, settings.ttft_long_tokens, 3, 200),
            "streams": workloads.synthetic_prompts(tokenize, settings.prompt_tokens, max(settings.streams), 1000),
            "classify": workloads.synthetic_prompts(tokenize, settings.prompt_tokens, settings.classify_prompts, 5000),
            "prefix": prefix.make_prompts(tokenize, settings.prefix_tokens) if settings.prefix_tokens else None,
        }


def _references(path: Path, settings: BenchSettings, flash_attn: str, tick: Callable[[str], None]) -> dict[str, Any]:
    """llama.cpp's limits; with ``references_twice`` measured before and after the backends
    and averaged by the caller, so a drift in machine speed favours no contender."""
    tick(f"llama-bench (flash attention {flash_attn})")
    bench = reference.llama_bench(path, settings.threads, [settings.ttft_short_tokens, settings.ttft_long_tokens],
                                  settings.gen_tokens, flash_attn, settings.repetitions)
    tick(f"llama-batched-bench (flash attention {flash_attn})")
    context = max(4096, max(settings.streams) * (settings.prompt_tokens + settings.gen_tokens + 8))
    batched = reference.batched_bench(path, settings.threads, settings.prompt_tokens, settings.gen_tokens, settings.streams,
                                      flash_attn, context)
    return {"llama_bench": bench, "batched": batched}


def _mean(first: dict[str, Any], second: dict[str, Any] | None) -> dict[str, Any]:
    if second is None:
        return {"llama_bench": asdict(first["llama_bench"]), "llama_batched_bench_tokens_per_s": first["batched"]}
    a, b = first["llama_bench"], second["llama_bench"]
    return {
        "llama_bench": {
            "prompt_tokens_per_s": {n: (a.prompt_tokens_per_s[n] + b.prompt_tokens_per_s[n]) / 2 for n in a.prompt_tokens_per_s},
            "decode_tokens_per_s": (a.decode_tokens_per_s + b.decode_tokens_per_s) / 2,
        },
        "llama_batched_bench_tokens_per_s": {n: (first["batched"][n] + second["batched"][n]) / 2 for n in first["batched"]},
    }


def run(settings: BenchSettings, tick: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Raw figures for every flash-attention mode and backend; ``tick`` is called before
    each step (``step_count`` of them) with what it measures."""
    settings = replace(settings, threads=settings.threads or default_threads())
    path = resolve_model_path(settings.model)
    tick("tokenizing the prompts")
    prompts = _prompts(path, settings)
    modes: dict[str, Any] = {}
    for flash_attn in settings.flash_attn:
        before = _references(path, settings, flash_attn, tick)
        backends = {name: _measure(name, path, prompts, settings, flash_attn, tick) for name in settings.backends}
        after = _references(path, settings, flash_attn, tick) if settings.references_twice else None
        modes[flash_attn] = {"references": _mean(before, after), "backends": backends}
    info = build_info()
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "commit": package_commit(),
        "llama_cpp_commit": info.llama_cpp_commit[:7],
        "gpu_backend": info.gpu_backend,
        "hsa_override_gfx_version": os.environ.get("HSA_OVERRIDE_GFX_VERSION"),
        "model": {"path": str(path), "name": path.name},
        "settings": asdict(settings) | {"model": str(path)},
        "modes": modes,
    }
