"""The default thread count follows llama.cpp's ``common_cpu_get_num_math``: physical
cores, without hybrid efficiency cores.  Topologies are temporary sysfs trees (no such
CPUs here); the last test checks this machine against llama-bench's own default."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import rocm_infer as ri
from rocm_infer.build import tool_path
from rocm_infer.cpu_threads import default_threads, math_cores


def write_topology(root: Path, siblings: list[str], atoms: str | None = None) -> Path:
    cpu = root / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True)
    (cpu / "online").write_text(f"0-{len(siblings) - 1}\n")
    for i, mask in enumerate(siblings):
        (cpu / f"cpu{i}" / "topology").mkdir(parents=True)
        (cpu / f"cpu{i}" / "topology" / "thread_siblings").write_text(mask + "\n")
    if atoms is not None:
        pmu = root / "bus" / "event_source" / "devices" / "cpu_atom"
        pmu.mkdir(parents=True)
        (pmu / "cpus").write_text(atoms + "\n")
    return root


def test_hyperthread_siblings_count_as_one_core(tmp_path):
    # 4 cores with 2 threads each: CPUs i and i+4 share a core
    masks = [f"{(1 << i) | (1 << (i + 4)):02x}" for i in range(4)] * 2
    assert math_cores(write_topology(tmp_path, masks)) == 4


def test_hybrid_cpu_counts_performance_cores_only(tmp_path):
    # 2 P-cores with hyperthreads (CPUs 0-3) and 4 E-cores (CPUs 4-7)
    masks = ["03", "03", "0c", "0c", "10", "20", "40", "80"]
    assert math_cores(write_topology(tmp_path, masks, atoms="4-7")) == 2


def test_missing_sysfs_falls_back_like_llama_cpp(tmp_path):
    assert math_cores(tmp_path) is None
    logical = os.cpu_count() or 4
    assert default_threads(tmp_path) == max(1, min(logical if logical <= 4 else logical // 2, len(os.sched_getaffinity(0))))


def test_default_matches_llama_bench_here():
    rows = json.loads(subprocess.run([str(tool_path("llama-bench")), "-m", str(ri.default_model_path()), "-p", "0", "-n", "1",
                                      "-r", "1", "-o", "json"], capture_output=True, text=True, check=True).stdout)
    assert default_threads() == min(rows[0]["n_threads"], len(os.sched_getaffinity(0)))
