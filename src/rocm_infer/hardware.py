"""AMD GPU detection from sysfs and /dev, with no subprocess and no ROCm library.

Every probe takes the sysfs root and the /dev root as arguments, so tests can
point them at a temporary tree shaped like a real machine (no AMD GPU exists
on the machines this is developed on).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

AMD_VENDOR_ID = 0x1002


@dataclass(frozen=True)
class AmdGpu:
    card: str
    vram_total_bytes: int
    vram_used_bytes: int


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip(), 0)
    except (OSError, ValueError):
        return None


def find_amd_gpus(sysfs: Path = Path("/sys")) -> list[AmdGpu]:
    """AMD cards under ``class/drm/card*/device`` that report VRAM, largest first."""
    gpus = []
    for card in sorted((sysfs / "class" / "drm").glob("card[0-9]*")):
        device = card / "device"
        if _read_int(device / "vendor") != AMD_VENDOR_ID:
            continue
        total = _read_int(device / "mem_info_vram_total")
        if total is None:
            continue
        gpus.append(AmdGpu(card.name, total, _read_int(device / "mem_info_vram_used") or 0))
    return sorted(gpus, key=lambda g: -g.vram_total_bytes)


def kfd_problem(dev: Path = Path("/dev")) -> str | None:
    """Why /dev/kfd (the ROCm compute device) cannot be used, or None when it can."""
    kfd = dev / "kfd"
    if not kfd.exists():
        return f"{kfd} does not exist: the amdgpu kernel driver with ROCm support is not loaded"
    if not os.access(kfd, os.R_OK | os.W_OK):
        return f"{kfd} is not readable and writable by this user: add the user to the 'render' and 'video' groups"
    return None


def rocm_problem(sysfs: Path = Path("/sys"), dev: Path = Path("/dev")) -> str | None:
    """Why no AMD GPU is usable through ROCm here, or None when one is."""
    problem = kfd_problem(dev)
    if problem:
        return problem
    if not find_amd_gpus(sysfs):
        return f"no AMD GPU (vendor 0x1002 with VRAM) under {sysfs / 'class' / 'drm'}"
    return None
