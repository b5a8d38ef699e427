"""The one native build: what it is, where it lies, and that only it is loaded."""

import ctypes
import os
import subprocess
from pathlib import Path

import pytest

import rocm_infer as ri
from rocm_infer.build import BIN_DIR, LIB_DIR, build_config

ROOT = Path(__file__).resolve().parent.parent


def test_build_info_reports_the_packaged_build():
    """What the build was configured for (a CPU build here, HIP on a Radeon, CUDA on an H100)."""
    info = ri.build_info()
    assert info.gpu_backend == build_config()["gpu_backend"]
    assert info.llama_cpp_commit.startswith("0c1e570")
    assert Path(info.library_path).parent == LIB_DIR
    assert Path(info.library_path).is_file()
    assert info.supports_gpu_offload is (info.gpu_backend != "cpu")
    assert "CPU" in info.system_info  # the CPU backend is in every build, next to any GPU one


def test_exactly_one_libllama_is_loaded_and_it_is_ours(model):
    maps = Path(f"/proc/{os.getpid()}/maps").read_text().splitlines()
    libllamas = {line.split()[-1] for line in maps if "libllama.so" in line}
    assert len(libllamas) == 1
    assert Path(libllamas.pop()).resolve().parent == LIB_DIR.resolve()


def test_tools_are_installed_and_resolve_their_libraries_without_ld_library_path():
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    for tool in ("llama-server", "llama-bench", "llama-batched-bench"):
        path = BIN_DIR / tool
        assert os.access(path, os.X_OK), path
        ldd = subprocess.run(["ldd", str(path)], capture_output=True, text=True, env=env, check=True).stdout
        assert "not found" not in ldd
        resolved = dict(line.split(" => ") for line in ldd.splitlines() if " => " in line)
        ours = {name.strip(): where.split(" (")[0] for name, where in resolved.items() if name.strip().startswith(("libllama", "libggml"))}
        assert "libllama.so.0" in ours or tool != "llama-server"
        assert all(Path(where).resolve().parent == LIB_DIR.resolve() for where in ours.values()), ours


def test_the_host_library_is_installed_beside_libllama_and_shares_ggml_openmp_runtime():
    """The engine samples in librocm_infer_host; its OpenMP threads are the pool
    ggml's CPU backend decodes with only when both link one runtime."""
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}

    def linked(library: str) -> dict[str, str]:
        ldd = subprocess.run(["ldd", str(LIB_DIR / library)], capture_output=True, text=True, env=env, check=True).stdout
        assert "not found" not in ldd
        return {name.strip(): where.split(" (")[0] for name, where in (line.split(" => ") for line in ldd.splitlines() if " => " in line)}

    ours, ggml = linked("librocm_infer_host.so"), linked("libggml-cpu.so")
    openmp = {name for name in ggml if name.startswith(("libgomp", "libomp", "libiomp"))}
    assert all(ours.get(name) == ggml[name] for name in openmp), (ours, ggml)


def test_the_host_library_is_refused_when_built_from_other_sources():
    """The C run struct and its ctypes mirror are checked against each other at load: a
    library without the check, or with another layout, is a typed error naming the fix."""
    from rocm_infer.native.host_library import check_run_layout, host_library

    check_run_layout(host_library(), "the built library")  # this build's own: no error
    older = ctypes.CDLL(str(LIB_DIR / "libggml-base.so"))  # a library without the size export
    with pytest.raises(ri.BackendUnavailableError, match="rebuild it"):
        check_run_layout(older, "an older build")


def test_no_vendored_source_model_or_binary_is_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert not [f for f in tracked if f.startswith("vendor/")]
    assert not [f for f in tracked if f.endswith((".gguf", ".so", ".whl", ".tar.gz"))]
