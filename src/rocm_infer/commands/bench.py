"""``rocm-infer bench``: the backends side by side against llama.cpp's own tools.

The table goes to stdout (``--json``: the documented JSON instead, see
``bench/report.py``); progress goes to stderr.  Nothing is written unless asked:
``--out FILE`` for the JSON, ``--plot FILE.png|svg`` for the picture.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from .options import HintingCommand, failures

FLASH_MODES = {"auto": ["auto"], "on": ["on"], "off": ["off"], "both": ["on", "off"]}
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _counts(text: str, what: str = "stream counts") -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError as exc:
        raise click.BadParameter(f"expected numbers separated by commas, got {text!r}") from exc
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"{what} must be >= 1, got {text!r}")
    return counts


@click.command(cls=HintingCommand)
@click.argument("model_arg", metavar="[MODEL]", required=False)
@click.option("--model", "-m", default=None, help="Same as MODEL: a GGUF path or a name in ROCM_MODEL_DIR (default: Gemma 3 270M).")
@click.option("--quick", is_flag=True, help="Fewer and shorter workloads: about a minute on the default model.")
@click.option("--json", "as_json", is_flag=True, help="Print the documented JSON on stdout instead of the table.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the JSON to this file.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Draw tokens/s against streams and first-token times to FILE.png or .svg (needs the 'bench' extra).")
@click.option("--backends", default="llama_cpp,llama_server", show_default=True, help="Contenders, comma-separated.")
@click.option("--flash-attn", type=click.Choice(sorted(FLASH_MODES)), default="auto", show_default=True, help="'both': on, then off.")
@click.option("--threads", default=0, type=int, help="CPU threads for every contender (default: llama.cpp's choice).")
@click.option("--streams", default=None, help="Concurrent stream counts [1,4,16,64; quick: 1,4,16].")
@click.option("--gen-tokens", default=None, type=int, help="Tokens each stream generates [64; quick: 32].")
@click.option("--prompt-tokens", default=None, type=int, help="Prompt length of the decode workloads [16].")
@click.option("--ttft-short", default=None, type=int, help="Short prompt for time to first token [8].")
@click.option("--ttft-long", default=None, type=int, help="Long prompt for time to first token [512; quick: 256].")
@click.option("--classify-prompts", default=None, type=int, help="Prompts in the classify workload [64; quick: 32].")
@click.option("--prefix-tokens", default=None, type=int, help="Shared prefix of the prefix-cache workload, 0 to skip it [1500; quick: 256].")
@click.option("--serve-clients", default=None,
              help="Concurrent streaming chat clients of the serve workload (rocm-infer serve and llama-server over HTTP), 0 to skip it [1,16; quick: 4].")
def bench(model_arg: str | None, model: str | None, quick: bool, as_json: bool, out: Path | None, plot: Path | None, backends: str,
          flash_attn: str, threads: int, streams: str | None, serve_clients: str | None, **lengths: int | None) -> None:
    """Measure in-process and llama-server on MODEL next to llama-bench and llama-batched-bench (same build)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..bench.report import document, table, write
    from ..bench.run import BenchSettings, run, serve_contenders, step_count
    from ..bench.servers import serve_extra_missing

    if model_arg and model and model_arg != model:
        raise click.UsageError(f"two models given: {model_arg!r} and --model {model!r}")
    if plot is not None and plot.suffix.lower() not in PLOT_SUFFIXES:
        raise click.BadParameter(f"the file name must end in {', '.join(PLOT_SUFFIXES)}", param_hint="--plot")
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise click.UsageError("--plot needs matplotlib: pip install 'rocm-infer[bench]'")
    names = {"ttft_short": "ttft_short_tokens", "ttft_long": "ttft_long_tokens"}
    overrides: dict[str, Any] = {names.get(k, k): v for k, v in lengths.items() if v is not None}
    if any(v < (0 if k == "prefix_tokens" else 1) for k, v in overrides.items()):
        raise click.UsageError("token and prompt counts must be >= 1 (--prefix-tokens >= 0)")
    if streams is not None:
        overrides["streams"] = _counts(streams)
    if serve_clients is not None:
        overrides["serve_clients"] = [] if serve_clients.strip() == "0" else _counts(serve_clients, "client counts")
    overrides |= {"model": model_arg or model, "threads": threads, "backends": backends.split(","), "flash_attn": FLASH_MODES[flash_attn]}
    settings = BenchSettings.quick(**overrides) if quick else BenchSettings(**overrides)
    serving = settings.serve_clients and any("serve" in serve_contenders(b) for b in settings.backends)
    if serving and (why := serve_extra_missing()):
        if serve_clients is not None:
            raise click.UsageError(f"{why} (or --serve-clients 0)")
        settings = replace(settings, serve_clients=[])  # a default workload the installation cannot run: said, not failed
        click.echo(f"skipping the serve workload: {why}", err=True)

    with failures():
        with Progress(TextColumn("{task.description:<46}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("starting", total=step_count(settings))
            steps = 0

            def tick(what: str) -> None:
                nonlocal steps
                progress.update(task, completed=steps, description=what)
                steps += 1

            result = run(settings, tick)
        doc = document(result)
        if plot is not None:
            from ..bench.plot import plot as draw

            draw(doc, plot)
    if out is not None:
        write(doc, out)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: wide enough that no row wraps
            console = Console(width=160)
        console.print(table(doc))
    for path in (p for p in (out, plot) if p is not None):
        click.echo(f"wrote {path}", err=True)
