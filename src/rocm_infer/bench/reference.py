"""llama.cpp's own limits on the same build: llama-bench and llama-batched-bench.

Both tools are the ones CMake installed next to the libraries, so they run the
kernels the in-process engine runs; their figures are the ceiling it is
measured against.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..build import tool_path
from ..errors import EngineError


def _run(cmd: list[str]) -> str:
    """A tool's stdout; its failure is an ``EngineError`` quoting the end of its stderr."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        tail = "; ".join((getattr(exc, "stderr", "") or "").strip().splitlines()[-3:])
        raise EngineError(f"{Path(cmd[0]).name} failed: {tail or exc}") from exc


@dataclass(frozen=True)
class LlamaBench:
    prompt_tokens_per_s: dict[int, float]  # by prompt length
    decode_tokens_per_s: float


def llama_bench(model: Path, threads: int, prompt_tokens: list[int], gen_tokens: int, flash_attn: str, repetitions: int = 3) -> LlamaBench:
    cmd = [
        str(tool_path("llama-bench")), "-m", str(model), "-p", ",".join(map(str, prompt_tokens)), "-n", str(gen_tokens),
        "-t", str(threads), "-fa", flash_attn, "-r", str(repetitions), "-o", "json",
    ]
    rows = json.loads(_run(cmd))
    pp = {int(r["n_prompt"]): float(r["avg_ts"]) for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0}
    tg = next(float(r["avg_ts"]) for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0)
    return LlamaBench(pp, tg)


def batched_bench(model: Path, threads: int, prompt_tokens: int, gen_tokens: int, streams: list[int], flash_attn: str, n_ctx: int) -> dict[int, float]:
    """Aggregate generation tokens/s (llama.cpp's S_TG) per number of parallel sequences."""
    cmd = [
        str(tool_path("llama-batched-bench")), "-m", str(model), "-c", str(n_ctx), "-b", "512", "-ub", "512",
        "-npp", str(prompt_tokens), "-ntg", str(gen_tokens), "-npl", ",".join(map(str, streams)),
        "-t", str(threads), "-fa", flash_attn, "-kvu", "--output-format", "jsonl",
    ]
    out = _run(cmd)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {int(r["pl"]): float(r["speed_tg"]) for r in rows}
