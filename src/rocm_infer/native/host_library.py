"""The engine's native host code, ``librocm_infer_host`` (built beside libllama from
``csrc/``): the host sampler and the decode runs, loaded once with their C types.

libllama is loaded first, through the bindings (``bindings.lib``): this library links
it, and the bindings must be the first to load it (``bindings`` says why).
"""

from __future__ import annotations

import ctypes

from ..build import HOST_LIBRARY, LIB_DIR
from ..errors import BackendUnavailableError
from .bindings import lib


class RunArgs(ctypes.Structure):
    """``rocm_infer_run_t`` of ``csrc/decode_run.c``, field for field."""

    _fields_ = [
        ("n_rows", ctypes.c_int32),
        ("max_steps", ctypes.c_int32),
        ("max_seconds", ctypes.c_double),
        ("n_vocab", ctypes.c_int64),
        ("seq_ids", ctypes.c_void_p),
        ("first_tokens", ctypes.c_void_p),
        ("first_pos", ctypes.c_void_p),
        ("ends_row", ctypes.c_void_p),
        ("eog", ctypes.c_void_p),
        ("suppressed", ctypes.c_void_p),
        ("n_suppressed", ctypes.c_int64),
        ("n_host", ctypes.c_int32),
        ("host_rows", ctypes.c_void_p),
        ("temperature", ctypes.c_void_p),
        ("top_k", ctypes.c_void_p),
        ("top_p", ctypes.c_void_p),
        ("min_p", ctypes.c_void_p),
        ("uniforms", ctypes.c_void_p),
        ("host_tokens", ctypes.c_void_p),
        ("n_device", ctypes.c_int32),
        ("device_rows", ctypes.c_void_p),
        ("scratch", ctypes.c_void_p),
        ("n_threads", ctypes.c_int32),
        ("interrupt", ctypes.c_void_p),
        ("tokens", ctypes.c_void_p),
        ("steps", ctypes.c_int32),
        ("decode_seconds", ctypes.c_double),
        ("sample_seconds", ctypes.c_double),
    ]


_library: ctypes.CDLL | None = None


def check_run_layout(library: ctypes.CDLL, path: object) -> None:
    """``RunArgs`` must be the struct the library was compiled with: a checkout whose
    Python and ``csrc/`` moved apart (sources edited or pulled, the library not rebuilt)
    would otherwise have the C read and write past the struct.  Compared by size, which
    every added, removed or retyped field so far has changed."""
    try:
        size_of = library.rocm_infer_run_size
    except AttributeError:
        built = None
    else:
        size_of.restype, size_of.argtypes = ctypes.c_size_t, []
        built = size_of()
    if built != ctypes.sizeof(RunArgs):
        raise BackendUnavailableError(f"the engine's native host code {path} was built from other sources than this package's "
                                      f"Python (its run struct: {built or 'unknown'} bytes, expected {ctypes.sizeof(RunArgs)}); "
                                      "rebuild it with `pip install -r requirements.txt`")


def host_library() -> ctypes.CDLL:
    """The library, its functions typed (ctypes releases the GIL for their calls)."""
    global _library
    if _library is None:
        lib()
        path = LIB_DIR / HOST_LIBRARY
        try:
            library = ctypes.CDLL(str(path))
        except OSError as exc:
            raise BackendUnavailableError(f"the engine's native host code {path} could not be loaded ({exc}); "
                                          "reinstall the package with `pip install -r requirements.txt` so that CMake builds it") from exc
        library.rocm_infer_sample_rows.restype = None
        library.rocm_infer_sample_rows.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64] + [ctypes.c_void_p] * 8 + [ctypes.c_int32]
        library.rocm_infer_decode_run.restype = ctypes.c_int32
        library.rocm_infer_decode_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(RunArgs)]
        check_run_layout(library, path)
        _library = library
    return _library
