"""The bench's pictures (matplotlib, the ``bench`` extra): aggregate tokens/s against the
number of streams for every path, llama-batched-bench's limit among them and the serve
workload's HTTP clients, and time to first token per path.  Drawn from the documented rows (``report.document``), so a saved
``--json`` file can be plotted again later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError


def plot(doc: dict[str, Any], out: Path) -> None:
    """Write the figure to ``out``; its suffix (``.png``, ``.svg``, ``.pdf``) picks the format."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InvalidConfigError("--plot needs matplotlib: pip install 'rocm-infer[bench]'") from exc
    from .report import title

    modes = list(dict.fromkeys(r["flash_attn"] for r in doc["rows"]))
    fig, (streams_ax, ttft_ax) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for fa in modes:
        suffix = f", FA {fa}" if len(modes) > 1 else ""
        rows = [r for r in doc["rows"] if r["flash_attn"] == fa]
        for path in dict.fromkeys(r["path"] for r in rows):
            for prefix, over, kind, style in (("aggregate", "", "greedy", "-o"), ("aggregate", "", "sampled", "--s"),
                                               ("serve_aggregate", " over HTTP", "greedy", "-.x"), ("serve_aggregate", " over HTTP", "sampled", ":x")):
                points = sorted((int(r["id"].rsplit("_", 1)[1]), r["value"]) for r in rows
                                if r["path"] == path and r["id"].startswith(f"{prefix}_{kind}_"))
                if points:
                    streams_ax.plot(*zip(*points), style, label=f"{path}{over}, {kind}{suffix}")
        limit = sorted((int(n), v) for n, v in doc["references"][fa]["llama_batched_bench_tokens_per_s"].items())
        streams_ax.plot(*zip(*limit), ":^", color="grey", label=f"llama-batched-bench{suffix}")
    streams_ax.set(xscale="log", xlabel="concurrent streams (HTTP: chat clients)", ylabel="aggregate tokens/s", title="decode throughput")
    streams_ax.set_xticks(sorted({int(r["id"].rsplit("_", 1)[1]) for r in doc["rows"] if "aggregate_" in r["id"]}))
    streams_ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    streams_ax.grid(alpha=0.3)
    streams_ax.legend(fontsize="small")

    served = sorted({int(r["id"].rsplit("_", 1)[1]) for r in doc["rows"] if r["id"].startswith("serve_ttft_")})
    ids = ["ttft_short", "ttft_long"] + [f"serve_ttft_{n}" for n in served[:1]]  # the fewest clients: HTTP's own cost
    ttft = [r for r in doc["rows"] if r["id"] in ids]
    labels = list(dict.fromkeys(f"{r['path']}" + (f"\nFA {r['flash_attn']}" if len(modes) > 1 else "") for r in ttft))
    width = 0.8 / len(ids)
    for k, id_ in enumerate(ids):
        chosen = [r for r in ttft if r["id"] == id_]
        if chosen:
            offset = (k - (len(ids) - 1) / 2) * width
            ttft_ax.bar([i + offset for i in range(len(chosen))], [r["value"] for r in chosen], width=width, label=chosen[0]["workload"])
    ttft_ax.set_xticks(range(len(labels)), labels)
    ttft_ax.set(ylabel="ms", title="time to first token (lower is better)")
    ttft_ax.legend(fontsize="small")
    fig.suptitle(title(doc), fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
