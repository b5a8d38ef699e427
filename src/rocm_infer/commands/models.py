"""``rocm-infer models``: the GGUF files a user can name, read from their headers.

With a FOLDER, what is in it; without one, the default model and then, when it is set,
``ROCM_MODEL_DIR`` (the folder that bare model names are found in).  One list of
records, rendered as a table or, with ``--json``, as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import click

from .options import HintingCommand, failures


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.0f} M" if n >= 1e6 else str(n)


def listed_models(folder: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """The records to show, and a note for the user (None when there is nothing to add)."""
    from ..discovery import discover, read_entry
    from ..models import default_model_path

    if folder is not None:
        return [dataclasses.asdict(e) | {"source": folder} for e in discover(folder)], None
    default = default_model_path()
    records = [dataclasses.asdict(read_entry([default], default.stem)) | {"source": "default model (a base model)"}]
    model_dir = os.environ.get("ROCM_MODEL_DIR")
    if not model_dir:
        return records, "set ROCM_MODEL_DIR (or give a FOLDER) to list your own GGUF files"
    return records + [dataclasses.asdict(e) | {"source": "ROCM_MODEL_DIR"} for e in discover(model_dir)], None


@click.command(cls=HintingCommand)
@click.argument("folder", required=False)
@click.option("--json", "as_json", is_flag=True)
def models(folder: str | None, as_json: bool) -> None:
    """List the GGUF models in FOLDER (default: the default model and ROCM_MODEL_DIR)."""
    with failures():
        records, note = listed_models(folder)
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "architecture", "params", "quant", "size", "context", "chat", "from", "problem")
    for r in records:
        parts = f" ({r['split_count']} parts)" if r["split_count"] > 1 else ""
        table.add_row(r["name"], r["architecture"] or "-", _count(r["parameter_count"]) if r["parameter_count"] else "-",
                      r["quantization"] or "-", f"{r['file_size_bytes'] / (1 << 20):,.0f} MiB{parts}", str(r["context_length"] or "-"),
                      "yes" if r["has_chat_template"] else "no", r["source"], r["problem"] or "")
    console = Console()
    if not console.is_terminal:  # a file or a pipe: wide enough that no cell is cut
        console = Console(width=200)
    console.print(table)
    if note:
        click.echo(note, err=True)
