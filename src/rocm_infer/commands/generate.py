"""``rocm-infer generate``: one prompt, its continuation streamed to stdout.

Text goes to stdout as it is made; timings (``--verbose``) go to stderr so a pipe gets
the text alone; ``--json`` prints one object (text, finish reason, metrics) at the end
instead.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from .options import HintingCommand, failures, generate_config, input_text, load_config, load_options, sampling_options


def metrics_record(metrics: Any, load_s: float | None = None) -> dict[str, Any]:
    """A request's metrics with its rates, as ``--json`` prints them and ``--verbose`` reads them."""
    record: dict[str, Any] = {
        "prompt_tokens": metrics.prompt_tokens,
        "generated_tokens": metrics.generated_tokens,
        "time_to_first_token_s": metrics.time_to_first_token_s,
        "prefill_s": metrics.prefill_s,
        "decode_s": metrics.decode_s,
        "total_s": metrics.total_s,
        "prefill_tokens_per_s": metrics.prefill_tokens_per_s,
        "decode_tokens_per_s": metrics.decode_tokens_per_s,
    }
    if load_s is not None:
        record["load_s"] = load_s
    return record


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s" if seconds >= 1 else f"{seconds * 1000:.1f}ms"


def verbose_lines(record: dict[str, Any]) -> list[str]:
    """The figures ``ollama run --verbose`` prints after an answer, in its words."""
    lines = []
    if "load_s" in record:
        lines.append(f"load duration:        {_duration(record['load_s'])}")
    lines += [
        f"total duration:       {_duration(record['total_s'])}",
        f"prompt eval count:    {record['prompt_tokens']} token(s)",
        f"prompt eval duration: {_duration(record['prefill_s'])}",
        f"prompt eval rate:     {record['prefill_tokens_per_s']:.2f} tokens/s",
        f"eval count:           {record['generated_tokens']} token(s)",
        f"eval duration:        {_duration(record['decode_s'])}",
        f"eval rate:            {record['decode_tokens_per_s']:.2f} tokens/s",
    ]
    return lines


@click.command(cls=HintingCommand)
@click.argument("prompt_arg", metavar="PROMPT", required=False)
@click.option("--prompt", "-p", default=None, help="Same as PROMPT (llama.cpp's spelling).")
@click.option("--model", "-m", default=None, help="GGUF path or name in ROCM_MODEL_DIR (default: Gemma 3 270M, a base model).")
@load_options
@sampling_options(max_tokens=128, temperature=0.0)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (text, finish_reason, metrics) instead of streaming.")
@click.option("--verbose", is_flag=True, help="Print timings and tokens/s to stderr afterwards (as ollama run --verbose).")
def generate(prompt_arg: str | None, prompt: str | None, model: str | None, as_json: bool, verbose: bool, **options: Any) -> None:
    """Continue PROMPT ('-' reads it from stdin), streaming the text to stdout."""
    from .. import load_model

    if prompt_arg is not None and prompt is not None and prompt_arg != prompt:
        raise click.UsageError(f"two prompts given: {prompt_arg!r} and --prompt {prompt!r}")
    given = prompt_arg if prompt_arg is not None else prompt
    if given is None:
        raise click.UsageError("Missing argument 'PROMPT' (or -p PROMPT; '-' reads it from stdin).")
    sampling = generate_config(options)
    load = load_config(**options)
    text = input_text(given)
    with failures():
        started = time.perf_counter()
        with load_model(model, config=load) as loaded:
            load_s = time.perf_counter() - started
            with loaded.generate(text, config=sampling) as stream:
                pieces = []
                for token in stream:
                    pieces.append(token.text)
                    if not as_json:
                        click.echo(token.text, nl=False)
                        sys.stdout.flush()
            record = metrics_record(stream.metrics, load_s)
            if as_json:
                click.echo(json.dumps({"text": "".join(pieces), "finish_reason": stream.finish_reason, "model": loaded.info.name,
                                       "backend": loaded.info.backend, "metrics": record}, indent=2))
            else:
                click.echo()
            if verbose:
                for line in verbose_lines(record):
                    click.echo(line, err=True)
