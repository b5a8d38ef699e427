"""The AMD acceptance report: one markdown file from the runs of ``scripts/amd_acceptance.sh``.

The script records each bench run as one tab-separated line of ``runs.tsv`` (build,
model label, ``HSA_OVERRIDE_GFX_VERSION`` or ``unset``, the JSON path, the plot path,
the exit status), so a run that failed (an override the card refuses) is a row of the
report too.  The table is the seed's: prefill and decode tokens/s, time to first token,
aggregate tokens/s at several streams and VRAM, per model, build, override, flash
attention mode and path, each with llama.cpp's own figure on the same build next to it.

Usage: ``python -m rocm_infer.bench.acceptance OUT_DIR > OUT_DIR/report.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLUMNS = ("model", "build", "HSA override", "FA", "path", "prefill tok/s (long prompt / first token)", "decode tok/s (1 stream)",
           "first token ms (short / long)", "aggregate tok/s (streams: value)", "VRAM MiB", "vs llama.cpp tools")


@dataclass(frozen=True)
class Run:
    build: str
    model: str
    override: str
    json_path: Path
    plot_path: Path
    status: int


def read_runs(out_dir: Path) -> list[Run]:
    runs = []
    for line in (out_dir / "runs.tsv").read_text().splitlines():
        if line.strip():
            build, model, override, json_path, plot_path, status = line.split("\t")
            runs.append(Run(build, model, override, Path(json_path), Path(plot_path), int(status)))
    return runs


def _value(rows: dict[str, dict[str, Any]], id_: str) -> float | None:
    row = rows.get(id_)
    return row["value"] if row else None


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def table_rows(run: Run, doc: dict[str, Any]) -> list[list[str]]:
    """One line per flash-attention mode and path of one bench document."""
    lines = []
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in doc["rows"]:
        groups.setdefault((row["flash_attn"], row["path"]), {})[row["id"]] = row
    long_tokens = doc["settings"]["ttft_long_tokens"]
    for (fa, path), rows in groups.items():
        long = _value(rows, "ttft_long")
        prefill = long_tokens / long * 1000 if long else None
        aggregates = sorted((int(i.rsplit("_", 1)[1]), r["value"]) for i, r in rows.items() if i.startswith("aggregate_greedy_"))
        ratios = [f"{label} {rows[i]['ratio']:.2f}x" for i, label in (("single_stream_decode", "tg"), ("ttft_long", "ttft"))
                  if i in rows and rows[i]["ratio"] is not None]
        biggest = f"aggregate_greedy_{aggregates[-1][0]}" if aggregates else None
        if biggest in rows and rows[biggest]["ratio"] is not None:
            ratios.append(f"{aggregates[-1][0]} streams {rows[biggest]['ratio']:.2f}x")
        lines.append([run.model, run.build, run.override, fa, path, _fmt(prefill), _fmt(_value(rows, "single_stream_decode")),
                      f"{_fmt(_value(rows, 'ttft_short'))} / {_fmt(long)}", ", ".join(f"{n}: {_fmt(v)}" for n, v in aggregates),
                      _fmt(_value(rows, "vram_used")), "; ".join(ratios)])
    return lines


def markdown(out_dir: Path, doctor: str | None = None) -> str:
    runs = read_runs(out_dir)
    docs = {run: json.loads(run.json_path.read_text()) for run in runs if run.status == 0 and run.json_path.is_file()}
    first = next(iter(docs.values()), None)
    lines = ["# AMD acceptance run", ""]
    if first:
        lines += [f"rocm_infer {first['commit']}, llama.cpp {first['llama_cpp_commit']}, {first['machine']}, {first['when']}.", ""]
    lines += ["Each figure is `rocm-infer bench` on that build; the last column is the ratio to llama.cpp's own tools "
              "(llama-bench, llama-batched-bench) on the same build and card. Models marked *stand-in* are random "
              "weights in the named model's shape (llama architecture), for timing only.", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for run in runs:
        if run in docs:
            lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(run, docs[run])]
        else:
            cells = [run.model, run.build, run.override] + [f"failed (exit {run.status})"] + ["–"] * (len(COLUMNS) - 4)
            lines.append("| " + " | ".join(cells) + " |")
    plots = [run for run in runs if run.plot_path.is_file()]
    if plots:
        lines += ["", "## Plots", ""]
        for run in plots:
            lines += [f"### {run.model}, {run.build} build, HSA_OVERRIDE_GFX_VERSION {run.override}", "",
                      f"![{run.model} {run.build} {run.override}]({run.plot_path.relative_to(out_dir)})", ""]
    if doctor:
        lines += ["", "## rocm-infer doctor", "", "```", doctor.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="the folder with runs.tsv (and doctor.txt)")
    args = parser.parse_args(argv)
    doctor = args.out_dir / "doctor.txt"
    sys.stdout.write(markdown(args.out_dir, doctor.read_text() if doctor.is_file() else None))


if __name__ == "__main__":
    main()
