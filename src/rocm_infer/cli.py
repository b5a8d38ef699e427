"""The ``rocm-infer`` command.

Generated text goes to stdout; status goes to stderr, so the output pipes
cleanly.  The library raises its own errors; only here do they become a
one-line message and a non-zero exit status.  List commands build one record
and render it as text or, with ``--json``, as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import click

from .commands.bench import bench
from .commands.chat import chat
from .commands.classify import classify
from .commands.generate import generate
from .commands.models import models
from .commands.options import HintingCommand, failures, log_option


class _Cli(click.Group):
    """Subcommands take ``-v`` and hint at our names for foreign options (``--max_tokens``
    is read as ``--max-tokens``); Ctrl-C exits 130 (the shell's convention for SIGINT)
    rather than click's ``Aborted!`` and 1; a closed pipe exits 141, without a traceback."""

    command_class = HintingCommand

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(err=True)
            raise click.exceptions.Exit(130) from None
        except BrokenPipeError:
            # the reader of our stdout left (`| head`): stop quietly, with the status a shell
            # gives a process killed by SIGPIPE; stdout goes to /dev/null so that the
            # interpreter's final flush does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(141) from None


def _render(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    width = max(len(k) for k in record)
    for key, value in record.items():
        click.echo(f"{key:<{width}}  {value}")


@click.group(cls=_Cli, params=[log_option()], context_settings={"token_normalize_func": lambda name: name.replace("_", "-")})
@click.version_option(package_name="rocm-infer")
def main() -> None:
    """Run GGUF models in-process through llama.cpp (ROCm/HIP first).

    Exit status: 0 done, 1 failed, 2 bad command line, 130 interrupted, 141 when the
    reader of a pipe leaves.
    """


main.add_command(generate)
main.add_command(chat)
main.add_command(classify)
main.add_command(models)
main.add_command(bench)


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

    with failures():
        _render(dataclasses.asdict(build_info()), as_json)


@main.command()
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True)
def info(model: str | None, as_json: bool) -> None:
    """Load MODEL (default: Gemma 3 270M) and describe it."""
    from . import load_model

    with failures(), load_model(model) as loaded:
        _render(dataclasses.asdict(loaded.info), as_json)


@main.command()
@click.argument("model_arg", metavar="[MODEL]", required=False)
@click.option("--model", "-m", default=None, help="Same as MODEL.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free port, printed on stderr).")
@click.option("--api-key", envvar="ROCM_INFER_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on /v1 (prefer the ROCM_INFER_API_KEY variable: argv is visible to other users).")
@click.option("--parallel", default=0, type=int, help="Sequences batched at once (default 16).")
@click.option("--ctx", "-c", default=0, type=int, help="KV cache cells shared by all requests (default: trained context, capped).")
@click.option("--backend", "-b", default=None, help="rocm, llama_cpp, ... (default: the first available).")
@click.option("--flash-attn", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--gpu-layers", default=-1, show_default=True, type=int)
@click.option("--threads", default=0, type=int, help="CPU threads (default: llama.cpp's choice, one per physical core).")
@click.option("--prefix-cache/--no-prefix-cache", default=True, show_default=True,
              help="Keep finished requests' KV cells to reuse shared prompt prefixes.")
@click.option("--served-model-name", default=None, help="The model id clients use (default: the GGUF file's stem).")
@click.option("--max-request-bytes", default=None, type=click.IntRange(1),
              help="Larger request bodies get 413 (default 32 MiB: past a whole 1M-token context as text).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info", show_default=True)
def serve(model_arg: str | None, model: str | None, host: str, port: int, api_key: str | None, parallel: int, ctx: int,
          backend: str | None, flash_attn: str, gpu_layers: int, threads: int, prefix_cache: bool, served_model_name: str | None,
          max_request_bytes: int | None, log_level: str) -> None:
    """Serve MODEL (default: Gemma 3 270M) over an OpenAI-compatible HTTP API."""
    if model_arg and model and model_arg != model:
        raise click.UsageError(f"two models given: {model_arg!r} and --model {model!r}")
    try:
        from .serve import ServeSettings
        from .serve import serve as run_server
        from .serve.body_limit import DEFAULT_MAX_REQUEST_BYTES
    except ImportError as exc:
        raise click.ClickException(f"serving needs the 'serve' extra (pip install 'rocm-infer[serve]'): {exc}") from exc
    from .types import LoadConfig

    with failures():
        load = LoadConfig(backend=backend, context_len=ctx, parallel_slots=parallel, flash_attn=flash_attn,  # type: ignore[arg-type]
                          gpu_layers=gpu_layers, n_threads=threads, prefix_cache=prefix_cache)
        settings = ServeSettings(model=model_arg or model, served_name=served_model_name, api_key=api_key or None,
                                 max_request_bytes=max_request_bytes or DEFAULT_MAX_REQUEST_BYTES, load=load)
        run_server(settings, host=host, port=port, log_level=log_level, say=lambda line: click.echo(line, err=True))


@main.command("doctor")
@click.option("--json", "as_json", is_flag=True)
def doctor_command(as_json: bool) -> None:
    """Check ROCm, Vulkan, the GPUs, the build and the tools; exit status 1 when the build
    has no GPU it can use (ROCm for a HIP build, a Vulkan GPU for a Vulkan build)."""
    from .doctor import doctor

    report = doctor()
    if as_json:
        click.echo(json.dumps({"amd_gpu_usable": report.amd_gpu_usable, "vulkan_gpu_usable": report.vulkan_gpu_usable,
                                "checks": [dataclasses.asdict(c) for c in report.checks]}, indent=2))
    else:
        for check in report.checks:
            click.echo(f"{'ok ' if check.ok else 'NO '} {check.name:<14} {check.detail}")
            if check.fix:
                click.echo(f"{'':<19}fix: {check.fix}")
        if report.gpu_backend == "vulkan":
            click.echo("Vulkan GPU usable: " + ("yes (the llama_cpp backend runs on it)" if report.vulkan_gpu_usable else "no"))
        else:
            click.echo("AMD GPU usable: " + ("yes" if report.amd_gpu_usable else "no (the rocm backend cannot run here)"))
    sys.exit(0 if report.amd_gpu_usable or report.vulkan_gpu_usable else 1)


if __name__ == "__main__":
    main()
