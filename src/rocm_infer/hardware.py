"""AMD GPU detection from sysfs and /dev, with no subprocess and no ROCm library.

Every probe takes the sysfs root and the /dev root as arguments, so tests can
point them at a temporary tree shaped like a real machine (no AMD GPU exists
on the machines this is developed on).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

AMD_VENDOR_ID = 0x1002


@dataclass(frozen=True)
class AmdGpu:
    card: str
    vram_total_bytes: int
    vram_used_bytes: int
    pci_bus: str = ""  # "0000:03:00.0": the name of the PCI device card*/device points to

    @property
    def vram_free_bytes(self) -> int:
        return max(0, self.vram_total_bytes - self.vram_used_bytes)


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
        gpus.append(AmdGpu(card.name, total, _read_int(device / "mem_info_vram_used") or 0, device.resolve().name))
    return sorted(gpus, key=lambda g: -g.vram_total_bytes)


def vram_info(sysfs: Path = Path("/sys")) -> list[AmdGpu]:
    """Per AMD card: VRAM total, used and free (no subprocess per read).  From ROCm's amdsmi
    when it is installed and initialises (real /sys only), else from the same sysfs files
    amdsmi itself reads."""
    gpus = find_amd_gpus(sysfs)
    figures = amdsmi_vram() if sysfs == Path("/sys") else None
    if not figures:
        return gpus
    return [replace(g, vram_total_bytes=figures[g.pci_bus][0], vram_used_bytes=figures[g.pci_bus][1])
            if g.pci_bus in figures else g for g in gpus]


def amdsmi_vram() -> dict[str, tuple[int, int]] | None:
    """(total, used) bytes per PCI bus id from amdsmi, or None when it is not installed or
    cannot start (no driver, no ROCm): then sysfs is the answer."""
    try:
        import amdsmi
    except ImportError:
        return None
    try:
        amdsmi.amdsmi_init()
    except Exception:  # noqa: BLE001 - amdsmi raises its own error types, all meaning "not here"
        return None
    try:
        figures = {}
        for handle in amdsmi.amdsmi_get_processor_handles():
            usage = amdsmi.amdsmi_get_gpu_vram_usage(handle)  # MiB
            figures[amdsmi.amdsmi_get_gpu_device_bdf(handle).lower()] = (usage["vram_total"] << 20, usage["vram_used"] << 20)
        return figures
    except Exception:  # noqa: BLE001 - a partial answer is no answer
        return None
    finally:
        amdsmi.amdsmi_shut_down()


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


# ---- ROCm device order and masking -------------------------------------------------
USER_DEVICE_VARIABLES = ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")


@dataclass(frozen=True)
class KfdGpu:
    """A GPU agent as ROCm enumerates it: HIP device ``index`` is its rank among the KFD
    topology's GPU nodes (CPU nodes have no SIMDs)."""

    index: int
    node: str
    gfx_target: str
    vram_bytes: int


@dataclass(frozen=True)
class MaskDecision:
    variable: str | None
    value: str | None
    reason: str


def gfx_name(version: int) -> str:
    """KFD's ``gfx_target_version`` (e.g. 110001) as a target name (gfx1101)."""
    major, minor, step = version // 10000, (version // 100) % 100, version % 100
    return f"gfx{major}{minor}{step:x}"


def _properties(path: Path) -> dict[str, int]:
    values = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                values[key] = int(value)
    except OSError:
        pass
    return values


def kfd_gpus(sysfs: Path = Path("/sys")) -> list[KfdGpu]:
    nodes_dir = sysfs / "class" / "kfd" / "kfd" / "topology" / "nodes"
    nodes = sorted((p for p in nodes_dir.glob("*") if p.name.isdigit()), key=lambda p: int(p.name))
    gpus = []
    for node in nodes:
        props = _properties(node / "properties")
        if props.get("simd_count", 0) <= 0:
            continue
        vram = sum(
            bank.get("size_in_bytes", 0)
            for bank in (_properties(p / "properties") for p in (node / "mem_banks").glob("*"))
            if bank.get("heap_type") in (1, 2)  # device-local heaps, not system memory
        )
        gpus.append(KfdGpu(len(gpus), node.name, gfx_name(props.get("gfx_target_version", 0)), vram))
    return gpus


def choose_gpu_mask(environ: dict[str, str], sysfs: Path = Path("/sys")) -> MaskDecision:
    """Which devices HIP should see.  A Ryzen iGPU enumerates as a second gfx11 device and
    llama.cpp crashes when weights land on it, so with several GPUs only the one with the
    most VRAM (the discrete card) is made visible.  A value the user set is kept."""
    for variable in USER_DEVICE_VARIABLES:
        if environ.get(variable):
            return MaskDecision(None, None, f"{variable}={environ[variable]} was set by the user and is kept")
    gpus = kfd_gpus(sysfs)
    if len(gpus) <= 1:
        return MaskDecision(None, None, "no masking needed: " + (f"one GPU ({gpus[0].gfx_target})" if gpus else "no ROCm GPU"))
    chosen = max(gpus, key=lambda g: g.vram_bytes)
    others = ", ".join(f"{g.index}: {g.gfx_target} {g.vram_bytes >> 20} MiB" for g in gpus if g is not chosen)
    return MaskDecision(
        "HIP_VISIBLE_DEVICES", str(chosen.index),
        f"device {chosen.index} ({chosen.gfx_target}, {chosen.vram_bytes >> 20} MiB) has the most VRAM; hidden: {others}",
    )


def masked_environment(environ: dict[str, str], sysfs: Path = Path("/sys")) -> dict[str, str]:
    """A copy of ``environ`` with the mask applied (for the llama-server child, and for
    this process before the HIP runtime starts)."""
    decision = choose_gpu_mask(environ, sysfs)
    masked = dict(environ)
    if decision.variable and decision.value is not None:
        masked[decision.variable] = decision.value
    return masked
