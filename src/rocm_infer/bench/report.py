"""What ``rocm-infer bench`` tells its reader: one row per figure, with its reference.

``document(result)`` is what ``--json`` prints and ``--out`` writes: the stable keys
below (``schema`` changes when one of them does).  ``table(document)`` renders the same
rows for a terminal.

Top level (``schema`` 1): ``schema``, ``when`` (UTC, ISO 8601), ``machine``, ``commit``
(rocm_infer, ``git describe``), ``llama_cpp_commit``, ``gpu_backend`` (the build: cpu,
hip, cuda, vulkan), ``hsa_override_gfx_version`` (null when unset), ``model``
(``path``, ``name``), ``settings`` (the run's options), ``references`` (by flash-attention
mode: llama-bench's ``prompt_tokens_per_s`` by prompt length and ``decode_tokens_per_s``,
llama-batched-bench's ``llama_batched_bench_tokens_per_s`` by stream count; JSON object
keys are strings) and ``rows``.

Each row: ``id`` (stable: ``single_stream_decode``, ``ttft_short``, ``ttft_long``,
``aggregate_greedy_N``, ``aggregate_sampled_N``, ``classify``, ``prefix_second_request_ttft``,
``prefix_chat_last_turn_ttft``, ``prefix_few_shot_classify``, ``prefix_shared_system_prompt``,
``prefix_shared_system_prompt_computed`` (in-process only), ``serve_aggregate_greedy_N``,
``serve_aggregate_sampled_N`` (N streaming chat clients over HTTP: ``rocm-infer serve`` on the
in-process path, with the library's ``achat`` as the reference), ``serve_ttft_N``,
``model_memory``, ``vram_used``),
``workload`` (in words), ``path`` (``in-process`` or ``llama-server``), ``backend``,
``flash_attn``, ``value``, ``unit`` (``tok/s``, ``ms``, ``prompts/s``, ``MiB``, ``tokens``), ``higher_is_better``, ``reference`` (null where there is none),
``reference_name``, ``ratio`` (value / reference), ``vs_server`` (an in-process row's
value / the llama-server row's; null otherwise).  A ratio above 1 is better when
``higher_is_better``, below 1 otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA = 1
PATHS = {"llama_cpp": "in-process", "rocm": "in-process", "llama_server": "llama-server"}
ROW_KEYS = ("id", "workload", "path", "backend", "flash_attn", "value", "unit", "higher_is_better", "reference",
            "reference_name", "ratio", "vs_server")
MIB = 1 << 20


def _row(id_: str, workload: str, value: float | None, unit: str, higher: bool, reference: float | None = None,
         reference_name: str | None = None) -> dict[str, Any]:
    ratio = value / reference if value is not None and reference else None
    return {"id": id_, "workload": workload, "value": value, "unit": unit, "higher_is_better": higher,
            "reference": reference, "reference_name": reference_name if reference else None, "ratio": ratio}


def _backend_rows(figures: dict[str, Any], refs: dict[str, Any], settings: dict[str, Any]) -> list[dict[str, Any]]:
    bench, batched = refs["llama_bench"], refs["llama_batched_bench_tokens_per_s"]
    gen, short, long = settings["gen_tokens"], settings["ttft_short_tokens"], settings["ttft_long_tokens"]
    pp = bench["prompt_tokens_per_s"]
    rows = [
        _row("single_stream_decode", "decode, 1 stream", figures["single_stream_decode_tokens_per_s"], "tok/s", True,
             bench["decode_tokens_per_s"], f"llama-bench tg{gen}"),
        _row("ttft_short", f"first token, {short}-token prompt", figures["ttft_short_s"] * 1000, "ms", False,
             short / pp[short] * 1000, f"llama-bench pp{short} time"),
        _row("ttft_long", f"first token, {long}-token prompt", figures["ttft_long_s"] * 1000, "ms", False,
             long / pp[long] * 1000, f"llama-bench pp{long} time"),
    ]
    for kind in ("greedy", "sampled"):
        for n, rate in figures[f"aggregate_{kind}_tokens_per_s"].items():
            name = "llama-batched-bench" + (", greedy (it cannot sample)" if kind == "sampled" else "")
            streams = "1 stream" if n == 1 else f"{n} streams"
            rows.append(_row(f"aggregate_{kind}_{n}", f"total decode, {streams}, {kind}", rate, "tok/s", True, batched[n], name))
    rows.append(_row("classify", f"classify {settings['classify_prompts']} prompts", figures["classify_prompts_per_s"], "prompts/s", True))
    if "prefix" in figures:
        p, n = figures["prefix"], settings["prefix_tokens"]
        shared, chat, few_shot, system = p["shared_prefix_ttft"], p["multi_turn_chat"], p["few_shot_classify"], p["shared_system_prompt"]
        rows += [
            _row("prefix_second_request_ttft", f"first token after a shared {n}-token prefix", shared["second_s"] * 1000, "ms", False,
                 shared["first_s"] * 1000, "same prompt length, nothing cached"),
            _row("prefix_chat_last_turn_ttft", "first token of a 4-turn chat's last turn", chat["last_turn_s"] * 1000, "ms", False,
                 chat["first_turn_s"] * 1000, "its first turn"),
            _row("prefix_few_shot_classify", f"classify {settings['classify_prompts']} prompts after one instruction prefix",
                 few_shot["prompts_per_s"], "prompts/s", True),
            _row("prefix_shared_system_prompt", f"{system['requests']:.0f} requests together after one system prompt", system["wall_s"] * 1000, "ms", False),
        ]
        if "prompt_tokens_computed" in system:  # in-process only: the engine's counters
            rows.append(_row("prefix_shared_system_prompt_computed", "  of their prompt tokens, computed", system["prompt_tokens_computed"],
                             "tokens", False, system["prompt_tokens"], "all their prompt tokens"))
    rows += _serve_rows(figures.get("serve", {}))
    if figures.get("model_memory_bytes"):  # in-process only: llama-server does not say
        rows.append(_row("model_memory", "model memory (weights + context)", figures["model_memory_bytes"] / MIB, "MiB", False))
    if figures.get("vram_used_bytes") is not None:
        rows.append(_row("vram_used", "VRAM used while loaded (whole card)", figures["vram_used_bytes"] / MIB, "MiB", False))
    return rows


def _serve_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The serve workload's rows: aggregate tokens/s per sampling and client count, and the
    greedy rounds' median time to first token; references are the library's same rounds."""
    server = figures.get("serve") or figures.get("llama_server")
    if not server:
        return []
    library = figures.get("library", {})
    reference_name = "in-process achat, no HTTP"
    rows = []
    for kind, rounds in server.items():
        for n, r in rounds.items():
            ref = library.get(kind, {}).get(n, {}).get("aggregate_tokens_per_s")
            sampling = kind if kind == "greedy" else f"{kind} (llama-server's defaults)"
            rows.append(_row(f"serve_aggregate_{kind}_{n}", f"HTTP, {n} streaming chat client{'s' if n > 1 else ''}, {sampling}",
                             r["aggregate_tokens_per_s"], "tok/s", True, ref, reference_name))
    for n, r in server.get("greedy", {}).items():
        ref = library.get("greedy", {}).get(n, {}).get("ttft_median_s")
        rows.append(_row(f"serve_ttft_{n}", f"HTTP, first token, {n} chat client{'s' if n > 1 else ''} (median)",
                         r["ttft_median_s"] * 1000 if r["ttft_median_s"] is not None else None, "ms", False,
                         ref * 1000 if ref is not None else None, reference_name))
    return rows


def document(result: dict[str, Any]) -> dict[str, Any]:
    """The raw figures of ``run.run`` as the documented, stable JSON."""
    rows: list[dict[str, Any]] = []
    for flash_attn, mode in result["modes"].items():
        mode_rows = []
        for backend, figures in mode["backends"].items():
            for row in _backend_rows(figures, mode["references"], result["settings"]):
                mode_rows.append({**row, "path": PATHS.get(backend, backend), "backend": backend, "flash_attn": flash_attn})
        server = {r["id"]: r["value"] for r in mode_rows if r["path"] == "llama-server"}
        for row in mode_rows:
            theirs = server.get(row["id"]) if row["path"] == "in-process" else None
            row["vs_server"] = row["value"] / theirs if theirs and row["value"] is not None else None
        order = list(dict.fromkeys(r["id"] for r in mode_rows))  # each workload's rows together
        mode_rows.sort(key=lambda r: order.index(r["id"]))
        rows += [{key: row[key] for key in ROW_KEYS} for row in mode_rows]
    head = {k: result[k] for k in ("when", "machine", "commit", "llama_cpp_commit", "gpu_backend", "hsa_override_gfx_version", "model", "settings")}
    return {"schema": SCHEMA, **head, "references": {fa: m["references"] for fa, m in result["modes"].items()}, "rows": rows}


def title(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    override = f", HSA_OVERRIDE_GFX_VERSION={doc['hsa_override_gfx_version']}" if doc["hsa_override_gfx_version"] else ""
    return (f"{doc['model']['name']} · rocm_infer {doc['commit']} · llama.cpp {doc['llama_cpp_commit']} ({doc['gpu_backend']} build{override})\n"
            f"{doc['machine']}, {s['threads']} threads, {doc['when']}")


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if unit == "MiB" or value >= 100 else f"{value:.1f}"


def table(doc: dict[str, Any]) -> Any:
    """A rich Table of the rows: each figure, its reference, the ratio, and in-process
    against llama-server."""
    from rich.table import Table

    several_modes = len({r["flash_attn"] for r in doc["rows"]}) > 1
    t = Table(title=title(doc), title_justify="left")
    t.add_column("workload")
    if several_modes:
        t.add_column("flash attn")
    t.add_column("path")
    t.add_column("value", justify="right")
    t.add_column("unit")
    t.add_column("reference")
    t.add_column("ratio", justify="right")
    t.add_column("in-process / server", justify="right")
    for r in doc["rows"]:
        reference = f"{_number(r['reference'], r['unit'])} {r['reference_name']}" if r["reference"] else "–"
        better = "" if r["ratio"] is None else (" ↑" if r["higher_is_better"] else " ↓")
        cells = [r["workload"], *([r["flash_attn"]] if several_modes else []), r["path"], _number(r["value"], r["unit"]), r["unit"],
                 reference, f"{r['ratio']:.2f}x{better}" if r["ratio"] is not None else "–",
                 f"{r['vs_server']:.2f}x" if r["vs_server"] is not None else ""]
        t.add_row(*cells)
    t.caption = ("ratio = value / reference (↑ higher is better, ↓ lower is better); references are llama.cpp's own tools "
                 "on the same build; HTTP rows: in-process is rocm-infer serve, its reference the library's achat; "
                 "prefix cache off except in the prefix rows")
    return t


def write(result: dict[str, Any], out: Path) -> None:
    """A bench's JSON to a file, its folder made when missing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
