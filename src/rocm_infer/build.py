"""Where the native build lies inside the package, and what it was compiled for.

CMake installs the libraries in ``rocm_infer/lib``, the tools in
``rocm_infer/bin`` and a ``build_config.json`` recording the GPU backend and
targets; ``build_info()`` joins that record with what the loaded libllama says
about itself, so the answer describes the library actually in this process.
"""

from __future__ import annotations

import json
from pathlib import Path

from .types import BuildInfo
from .vulkan import vulkan_coopmat

PACKAGE_DIR = Path(__file__).resolve().parent
LIB_DIR = PACKAGE_DIR / "lib"
HOST_LIBRARY = "librocm_infer_host.so"  # the engine's native host code: csrc/host_sampler.c, csrc/decode_run.c
BIN_DIR = PACKAGE_DIR / "bin"
BUILD_CONFIG = PACKAGE_DIR / "build_config.json"

# Flash-attention kernels each ggml GPU backend compiles, for the record in build_info().
_FA_KERNELS = {
    "hip": "WMMA (fattn-mma-f16, RDNA 3/4) + tile/vec",
    "cuda": "MMA (fattn-mma-f16) + tile/vec",
    "vulkan": "coopmat (KHR_cooperative_matrix) + scalar",
    "cpu": "CPU",
}
_VULKAN_WITHOUT_COOPMAT = "scalar only (glslc lacked GL_KHR_cooperative_matrix: no coopmat shaders)"


def library_present() -> bool:
    return (LIB_DIR / "libllama.so").is_file()


def tool_path(name: str) -> Path:
    """A llama.cpp tool built with this package (llama-server, llama-bench, ...)."""
    return BIN_DIR / name


def build_config() -> dict[str, object]:
    if not BUILD_CONFIG.is_file():
        return {}
    return json.loads(BUILD_CONFIG.read_text())


def flash_attn_kernels(config: dict[str, object]) -> str:
    backend = str(config.get("gpu_backend", "unknown"))
    if vulkan_coopmat(config) is False:
        return _VULKAN_WITHOUT_COOPMAT
    return _FA_KERNELS.get(backend, "unknown")


def package_commit() -> str:
    """The rocm_infer commit this code is: ``git describe`` of the checkout it runs from
    (``PYTHONPATH=src``), else the commit CMake recorded when the package was built, else
    ``unknown`` (an sdist built outside git)."""
    import subprocess

    checkout = PACKAGE_DIR.parent.parent
    if (checkout / ".git").exists():
        try:
            return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True, text=True,
                                  check=True, cwd=checkout).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    return str(build_config().get("rocm_infer_commit", "unknown"))


def build_info() -> BuildInfo:
    """What the native libraries in this process were compiled for."""
    from .native.bindings import lib

    llama = lib()
    config = build_config()
    backend = str(config.get("gpu_backend", "unknown"))
    targets = tuple(t for t in str(config.get("gpu_targets", "")).replace(",", ";").split(";") if t)
    return BuildInfo(
        gpu_backend=backend,
        gpu_targets=targets,
        flash_attn_kernels=flash_attn_kernels(config),
        llama_cpp_commit=str(config.get("llama_cpp_commit", "unknown")),
        library_path=str(LIB_DIR / "libllama.so"),
        bin_path=str(BIN_DIR),
        supports_gpu_offload=bool(llama.llama_supports_gpu_offload()),
        system_info=(llama.llama_print_system_info() or b"").decode("utf-8", "replace").strip(),
    )
