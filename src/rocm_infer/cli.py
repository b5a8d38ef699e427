"""The ``rocm-infer`` command.

Generated text goes to stdout; status goes to stderr, so the output pipes
cleanly.  The library raises its own errors; only here do they become a
one-line message and a non-zero exit status.  List commands build one record
and render it as text or, with ``--json``, as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import click

from . import errors


def _fail(exc: errors.RocmInferError) -> None:
    raise click.ClickException(f"{type(exc).__name__}: {exc}")


def _render(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    width = max(len(k) for k in record)
    for key, value in record.items():
        click.echo(f"{key:<{width}}  {value}")


@click.group()
@click.version_option(package_name="rocm-infer")
def main() -> None:
    """Run GGUF models in-process through llama.cpp (ROCm/HIP first)."""


@main.command()
@click.argument("prompt")
@click.option("--model", "-m", default=None, help="GGUF path or name in ROCM_MODEL_DIR (default: Gemma 3 270M).")
@click.option("--backend", "-b", default=None, help="rocm, llama_cpp, ... (default: the first available).")
@click.option("--max-tokens", "-n", default=128, show_default=True, type=int)
@click.option("--temperature", "-t", default=0.0, show_default=True, type=float)
@click.option("--seed", default=None, type=int)
@click.option("--chat", is_flag=True, help="Wrap the prompt in the model's chat template as a user turn.")
@click.option("--stats", is_flag=True, help="Print this request's metrics to stderr.")
def generate(prompt: str, model: str | None, backend: str | None, max_tokens: int, temperature: float, seed: int | None, chat: bool, stats: bool) -> None:
    """Generate text from PROMPT, streaming it to stdout."""
    from . import load_model

    try:
        with load_model(model, backend=backend) as loaded:
            options = dict(max_tokens=max_tokens, temperature=temperature, seed=seed)
            stream = loaded.chat([{"role": "user", "content": prompt}], **options) if chat else loaded.generate(prompt, **options)
            with stream:
                for token in stream:
                    click.echo(token.text, nl=False)
                    sys.stdout.flush()
            click.echo()
            if stats and stream.metrics:
                m = stream.metrics
                click.echo(
                    f"{m.prompt_tokens} prompt + {m.generated_tokens} generated tokens; first token {m.time_to_first_token_s * 1000:.0f} ms; "
                    f"decode {m.decode_tokens_per_s:.1f} tok/s ({loaded.info.backend}, {loaded.info.name})",
                    err=True,
                )
    except errors.RocmInferError as exc:
        _fail(exc)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def backends(as_json: bool) -> None:
    """List the backends and whether each can run here."""
    from . import get_backend, list_backends

    record = {}
    for name in list_backends():
        reason = get_backend(name).unavailable_reason()
        record[name] = {"available": reason is None, "reason": reason} if as_json else ("available" if reason is None else f"unavailable: {reason}")
    _render(record, as_json)


@main.command("build-info")
@click.option("--json", "as_json", is_flag=True)
def build_info_command(as_json: bool) -> None:
    """What the native libraries were compiled for."""
    from . import build_info

    try:
        _render(dataclasses.asdict(build_info()), as_json)
    except errors.RocmInferError as exc:
        _fail(exc)


@main.command()
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True)
def info(model: str | None, as_json: bool) -> None:
    """Load MODEL (default: Gemma 3 270M) and describe it."""
    from . import load_model

    try:
        with load_model(model) as loaded:
            _render(dataclasses.asdict(loaded.info), as_json)
    except errors.RocmInferError as exc:
        _fail(exc)


@main.command()
@click.option("--model", "-m", default=None, help="GGUF path (default: Gemma 3 270M).")
@click.option("--threads", "-t", default=0, type=int, help="CPU threads for every contender (default: all usable CPUs).")
@click.option("--gen-tokens", default=64, show_default=True, type=int)
@click.option("--prompt-tokens", default=16, show_default=True, type=int)
@click.option("--streams", default="1,4,16", show_default=True, help="Concurrent stream counts.")
@click.option("--flash-attn", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--backends", default="llama_cpp,llama_server", show_default=True)
@click.option("--out", type=click.Path(), default="benchmarks/out/bench.json", show_default=True)
def bench(model: str | None, threads: int, gen_tokens: int, prompt_tokens: int, streams: str, flash_attn: str, backends: str, out: str) -> None:
    """Measure the backends side by side with llama-bench and llama-batched-bench (same build)."""
    from pathlib import Path

    from .bench.run import BenchSettings, run, table, write

    settings = BenchSettings(model=model, threads=threads, gen_tokens=gen_tokens, prompt_tokens=prompt_tokens,
                             streams=[int(s) for s in streams.split(",")], flash_attn=flash_attn, backends=backends.split(","))
    try:
        result = run(settings)
    except errors.RocmInferError as exc:
        _fail(exc)
    write(result, Path(out))
    table(result)
    click.echo(json.dumps(result["ratios"], indent=2))


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.0f} M" if n >= 1e6 else str(n)


@main.command()
@click.argument("folder", required=False)
@click.option("--json", "as_json", is_flag=True)
def models(folder: str | None, as_json: bool) -> None:
    """List the GGUF models in FOLDER (default: ROCM_MODEL_DIR), from their headers."""
    from rich.console import Console
    from rich.table import Table

    from .discovery import discover

    try:
        entries = discover(folder)
    except errors.RocmInferError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(e) for e in entries], indent=2))
        return
    table = Table("name", "architecture", "params", "quant", "size", "context", "chat", "problem")
    for e in entries:
        params = _count(e.parameter_count) if e.parameter_count else "-"
        parts = f" ({e.split_count} parts)" if e.split_count > 1 else ""
        table.add_row(e.name, e.architecture or "-", params, e.quantization or "-",
                      f"{e.file_size_bytes / (1 << 20):,.0f} MiB{parts}", str(e.context_length or "-"),
                      "yes" if e.has_chat_template else "no", e.problem or "")
    Console().print(table)


@main.command()
@click.argument("model", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0: any free port, printed on stderr).")
@click.option("--api-key", envvar="ROCM_INFER_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on /v1 (prefer the ROCM_INFER_API_KEY variable: argv is visible to other users).")
@click.option("--parallel", default=0, type=int, help="Sequences batched at once (default 16).")
@click.option("--ctx", default=0, type=int, help="KV cache cells shared by all requests (default: trained context, capped).")
@click.option("--backend", "-b", default=None, help="rocm, llama_cpp, ... (default: the first available).")
@click.option("--flash-attn", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--gpu-layers", default=-1, show_default=True, type=int)
@click.option("--prefix-cache/--no-prefix-cache", default=True, show_default=True,
              help="Keep finished requests' KV cells to reuse shared prompt prefixes.")
@click.option("--served-model-name", default=None, help="The model id clients use (default: the GGUF file's stem).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info", show_default=True)
def serve(model: str | None, host: str, port: int, api_key: str | None, parallel: int, ctx: int, backend: str | None,
          flash_attn: str, gpu_layers: int, prefix_cache: bool, served_model_name: str | None, log_level: str) -> None:
    """Serve MODEL (default: Gemma 3 270M) over an OpenAI-compatible HTTP API."""
    try:
        from .serve import ServeSettings
        from .serve import serve as run_server
    except ImportError as exc:
        raise click.ClickException(f"serving needs the 'serve' extra (pip install 'rocm-infer[serve]'): {exc}") from exc
    from .types import LoadConfig

    try:
        load = LoadConfig(backend=backend, context_len=ctx, parallel_slots=parallel, flash_attn=flash_attn,  # type: ignore[arg-type]
                          gpu_layers=gpu_layers, prefix_cache=prefix_cache)
        settings = ServeSettings(model=model, served_name=served_model_name, api_key=api_key or None, load=load)
        run_server(settings, host=host, port=port, log_level=log_level, say=lambda line: click.echo(line, err=True))
    except errors.RocmInferError as exc:
        _fail(exc)


@main.command("doctor")
@click.option("--json", "as_json", is_flag=True)
def doctor_command(as_json: bool) -> None:
    """Check ROCm, the GPUs, the build and the tools; exit status 1 when no AMD GPU is usable."""
    from .doctor import doctor

    report = doctor()
    if as_json:
        click.echo(json.dumps({"amd_gpu_usable": report.amd_gpu_usable, "checks": [dataclasses.asdict(c) for c in report.checks]}, indent=2))
    else:
        for check in report.checks:
            click.echo(f"{'ok ' if check.ok else 'NO '} {check.name:<14} {check.detail}")
            if check.fix:
                click.echo(f"{'':<19}fix: {check.fix}")
        click.echo("AMD GPU usable: " + ("yes" if report.amd_gpu_usable else "no (the rocm backend cannot run here)"))
    sys.exit(0 if report.amd_gpu_usable else 1)


if __name__ == "__main__":
    main()
