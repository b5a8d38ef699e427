"""``rocm-infer classify``: the most likely next token of many prompts, as JSON lines.

Prompts come one per line from a file (``-f``, ``-`` for stdin) or as arguments; blank
lines are skipped; each answer is one JSON object per line, in the order of the prompts,
holding its prompt (``jq`` reads it).  Prefill only: nothing is generated.
"""

from __future__ import annotations

import json
from typing import Any

import click

from .options import HintingCommand, failures, load_config, load_options


@click.command(cls=HintingCommand)
@click.argument("prompts", nargs=-1)
@click.option("--file", "-f", "source", type=click.File("r"), default=None, help="Prompts, one per line ('-': stdin).")
@click.option("--model", "-m", default=None, help="GGUF path or name in ROCM_MODEL_DIR (default: Gemma 3 270M).")
@click.option("--parallel", default=0, type=int, help="Prompts evaluated together (default 16).")
@load_options
def classify(prompts: tuple[str, ...], source: Any, model: str | None, parallel: int, **options: Any) -> None:
    """Print the next-token choice for each of PROMPTS (or each line of --file) as JSON lines."""
    from .. import load_model

    texts = list(prompts) + ([line.rstrip("\n") for line in source if line.strip()] if source else [])
    if not texts:
        raise click.UsageError("no prompts: give them as arguments or one per line with --file FILE ('-' for stdin)")
    load = load_config(parallel_slots=parallel, **options)
    with failures(), load_model(model, config=load) as loaded:
        for text, result in zip(texts, loaded.classify(texts)):
            click.echo(json.dumps({"prompt": text, "token": result.token, "text": result.text}))
