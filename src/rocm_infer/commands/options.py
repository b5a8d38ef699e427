"""Options shared by the commands, and how their values and failures become exit codes.

One spelling per idea across every command: ``-m`` model, ``-b`` backend, ``-c`` context,
``-n`` max tokens, ``-t`` temperature (never threads: threads are ``--threads`` only),
``-p`` prompt, ``-s`` system prompt, ``-f`` file, ``-o`` output file.

Exit codes a shell can rely on: 0 done, 1 the work failed (a ``RocmInferError``), 2 the
command line was wrong (click's usage errors and invalid option values), 130 interrupted,
141 the reader of a pipe left.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from .. import errors

F = TypeVar("F", bound=Callable[..., Any])

# Names users bring from llama-cpp-python, llama.cpp's tools and Ollama, mapped to ours
# (normalized: no leading dashes, "_" as "-").  click's own "did you mean" covers typos.
FOREIGN_NAMES = {
    "n-ctx": "--ctx", "ctx-size": "--ctx", "context-len": "--ctx", "context-length": "--ctx", "num-ctx": "--ctx",
    "n-gpu-layers": "--gpu-layers", "ngl": "--gpu-layers", "num-gpu": "--gpu-layers",
    "n-batch": "--batch-size", "batch": "--batch-size",
    "n-threads": "--threads", "threads-batch": "--threads", "num-thread": "--threads",
    "n-predict": "--max-tokens", "num-predict": "--max-tokens", "max-new-tokens": "--max-tokens",
    "repetition-penalty": "--repeat-penalty", "fa": "--flash-attn",
    "n-parallel": "--parallel", "np": "--parallel",
}


def normalized(name: str) -> str:
    return name.lstrip("-").replace("_", "-").lower()


def _configure_logs(ctx: click.Context, param: click.Parameter, value: int) -> None:
    from .logs import configure

    configure(value)


def log_option() -> click.Option:
    """``-v``: llama.cpp's log and rocm_infer's info lines on stderr (``-vv``: debug)."""
    return click.Option(["-v", "log_verbosity"], count=True, expose_value=False, is_eager=True, callback=_configure_logs,
                        help="Show llama.cpp's log on stderr (-vv: debug; or ROCM_INFER_LOG=debug).")


class HintingCommand(click.Command):
    """A command that takes ``-v`` for its log, and whose unknown-option error names our
    spelling of a foreign option (``--n_ctx`` -> ``--ctx``); the exit status stays 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(log_option())

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        known = {name for param in self.params for name in getattr(param, "opts", [])}
        # llama.cpp's single-dash long names (-ngl 99, -np 4, -fa on) would otherwise parse as
        # short options with glued values ("-n" with "gl"): a misleading value error
        for arg in args[: args.index("--")] if "--" in args else args:
            if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2 and arg.split("=")[0] not in known:
                ours = FOREIGN_NAMES.get(normalized(arg.split("=")[0]))
                if ours in known:
                    error = click.NoSuchOption(arg, ctx=ctx)
                    error.possibilities = [ours]  # (its constructor keeps only close spellings)
                    raise error
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            ours = FOREIGN_NAMES.get(normalized(exc.option_name.split("=")[0]))
            if ours in known:
                exc.possibilities = [ours]
            raise


def input_text(value: str) -> str:
    """``-`` reads standard input (the shell convention), anything else is the text itself."""
    return sys.stdin.read() if value == "-" else value


def load_options(func: F) -> F:
    """How the model is loaded: the same flags on every command that loads one."""
    for option in reversed([
        click.option("--backend", "-b", default=None, help="rocm, llama_cpp, llama_server or openai (default: the first available)."),
        click.option("--ctx", "-c", "context_len", default=0, type=int, help="KV cache cells (default: the trained context, capped at 4096)."),
        click.option("--gpu-layers", default=-1, show_default=True, type=int, help="Layers on the GPU (-1: all)."),
        click.option("--threads", default=0, type=int, help="CPU threads (default: llama.cpp's choice, one per physical core)."),
        click.option("--flash-attn", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True),
        click.option("--batch-size", default=512, show_default=True, type=int, help="Prompt tokens per decode call."),
    ]):
        func = option(func)
    return func


def sampling_options(max_tokens: int, temperature: float) -> Callable[[F], F]:
    """How tokens are chosen, with this command's defaults for length and temperature."""

    def decorate(func: F) -> F:
        for option in reversed([
            click.option("--max-tokens", "-n", default=max_tokens, show_default=True, type=int),
            click.option("--temperature", "--temp", "-t", default=temperature, show_default=True, type=float, help="0: greedy."),
            click.option("--top-k", default=0, type=int, help="Keep the k most likely tokens (0: off)."),
            click.option("--top-p", default=0.0, type=float, help="Nucleus sampling (0: off)."),
            click.option("--min-p", default=0.0, type=float, help="Drop tokens below min-p times the best (0: off)."),
            click.option("--repeat-penalty", default=1.0, show_default=True, type=float),
            click.option("--presence-penalty", default=0.0, type=float, help="Lower each token seen in the last 64 once (0: off)."),
            click.option("--frequency-penalty", default=0.0, type=float, help="Lower each token seen in the last 64 per time seen (0: off)."),
            click.option("--seed", default=None, type=int, help="Repeatable sampling."),
            click.option("--stop", multiple=True, help="Stop before this text (repeatable)."),
        ]):
            func = option(func)
        return func

    return decorate


def load_config(backend: str | None, context_len: int, gpu_layers: int, threads: int, flash_attn: str, batch_size: int,
                **extra: Any) -> Any:
    from ..types import LoadConfig

    with usage_errors():
        return LoadConfig(backend=backend, context_len=context_len, gpu_layers=gpu_layers, n_threads=threads,
                          flash_attn=flash_attn, batch_size=batch_size, **extra)  # type: ignore[arg-type]


SAMPLING_OPTIONS = ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "presence_penalty",
                    "frequency_penalty", "seed", "stop")


def generate_config(options: dict[str, Any]) -> Any:
    """The ``sampling_options`` taken out of a command's options, as a ``GenerateConfig``."""
    from ..types import GenerateConfig

    with usage_errors():
        return GenerateConfig(**{name: options.pop(name) for name in SAMPLING_OPTIONS})


@contextmanager
def usage_errors() -> Iterator[None]:
    """An option value the library refuses is a usage error (exit 2), checked before any load."""
    try:
        yield
    except errors.InvalidConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@contextmanager
def failures() -> Iterator[None]:
    """The library's errors become one line and exit status 1."""
    try:
        yield
    except errors.RocmInferError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
