"""scripts/amd_acceptance.sh: its plan (``--dry-run``) holds the whole matrix, and a short
run on this machine's CPU build writes the markdown report from real bench output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import rocm_infer as ri

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "amd_acceptance.sh"


def acceptance(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "ROCM_MODEL_DIR"} | (env or {})
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environment, timeout=900)


def test_dry_run_prints_the_full_matrix_and_runs_nothing(tmp_path):
    proc = acceptance("--dry-run", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stderr
    plan = proc.stdout
    benches = [line for line in plan.splitlines() if " bench " in line]
    # HIP: 3 models x 3 overrides; Vulkan: 3 models, override unset (it means nothing there)
    assert len(benches) == 12
    assert all("--flash-attn both" in line for line in benches)
    for shape in ("qwen3-8b", "gemma3-4b", "llama-3.1-8b"):
        assert f"{shape} Q4_K_M shape (stand-in)" in plan
        assert sum(shape in line for line in benches) == 4
    hip = [line for line in benches if "venv-hip" in line]
    assert len(hip) == 9 and all("--backends rocm,llama_server" in line for line in hip)
    for override in ("env -u HSA_OVERRIDE_GFX_VERSION", "HSA_OVERRIDE_GFX_VERSION=11.0.0", "HSA_OVERRIDE_GFX_VERSION=11.0.1"):
        assert sum(override in line for line in hip) == 3
    vulkan = [line for line in benches if "venv-vulkan" in line]
    assert len(vulkan) == 3 and all("--backends llama_cpp,llama_server" in line and "-u HSA_OVERRIDE" in line for line in vulkan)
    assert "AMDGPU_TARGETS='gfx1100;gfx1101'" in plan and "ROCM_INFER_GPU=vulkan" in plan
    assert "rocm-infer doctor" in plan and "report.md" in plan
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_dry_run_takes_the_models_found_in_rocm_model_dir(tmp_path):
    (tmp_path / "Qwen3-8B-Q4_K_M.gguf").symlink_to(ri.default_model_path())
    proc = acceptance("--dry-run", "--out", str(tmp_path / "out"), env={"ROCM_MODEL_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert f"model: Qwen3-8B-Q4_K_M = {tmp_path / 'Qwen3-8B-Q4_K_M.gguf'}" in proc.stdout
    assert "qwen3-8b Q4_K_M shape (stand-in)" not in proc.stdout
    assert "gemma3-4b Q4_K_M shape (stand-in)" in proc.stdout


def test_a_short_cpu_run_writes_the_report(tmp_path):
    out = tmp_path / "out"
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = acceptance("--builds", "current", "--model", str(ri.default_model_path()), "--out", str(out),
                      "--bench-args", "--quick --streams 1 --gen-tokens 4 --prompt-tokens 8 --ttft-long 16 "
                      "--classify-prompts 2 --prefix-tokens 0 --serve-clients 0 --backends llama_cpp", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| model | build | HSA override | FA | path | prefill tok/s")
    rows = table[1:]
    assert len(rows) == 2  # flash attention on and off, in-process
    assert all(row.startswith(f"| {ri.default_model_path().stem} | current | unset |") for row in rows)
    assert {row.split(" | ")[3] for row in rows} == {"on", "off"}
    assert "tg " in rows[0] and "failed" not in report
    assert "## Plots" in report and (out / "plots").is_dir() and any((out / "plots").iterdir())
    assert "## rocm-infer doctor" in report
