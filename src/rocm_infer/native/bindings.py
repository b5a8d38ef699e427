"""Load llama-cpp-python's ctypes bindings against *this package's* libllama.

llama-cpp-python reads ``LLAMA_CPP_LIB_PATH`` once, when ``llama_cpp.llama_cpp``
is first imported, so it must be set before that import and nobody may have
imported the bindings with other libraries first: two libllama copies in one
process would split ggml's global state.  ``lib()`` does this once and hands
out the bindings module; every native wrapper goes through it.

The llama.cpp log is process-global in C; it is routed to the
``rocm_infer.llama`` logger and the last lines are kept so that a failed load
can say *why* (llama.cpp reports load errors only through its log).
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

from ..build import LIB_DIR, build_config, library_present
from ..errors import BackendUnavailableError
from ..hardware import masked_environment
from ..vulkan import vulkan_masked_environment

_log = logging.getLogger("rocm_infer.llama")
# Silent unless the application configures logging (the library convention): without it,
# Python's last-resort handler would print llama.cpp's load-time warnings on every load.
_log.addHandler(logging.NullHandler())
_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR, 5: logging.DEBUG}


class LlamaLog:
    """Keeps the recent llama.cpp log lines (a ring buffer) and forwards them to logging.

    llama.cpp calls the callback from whichever thread logs, in pieces that do not
    always end in a newline, so pieces are joined until a newline arrives.
    """

    def __init__(self, keep: int = 200) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._total = 0
        self._partial = ""
        self._lock = threading.Lock()

    def __call__(self, level: int, text: bytes | None, _user: object) -> None:
        piece = (text or b"").decode("utf-8", errors="replace")
        with self._lock:
            self._partial += piece
            if not self._partial.endswith("\n"):
                return
            lines, self._partial = self._partial.splitlines(), ""
            self._lines.extend(lines)
            self._total += len(lines)
        for line in lines:
            _log.log(_LEVELS.get(level, logging.DEBUG), "%s", line)

    def mark(self) -> int:
        """A position in the log, to read what was logged after it with ``since``."""
        with self._lock:
            return self._total

    def since(self, mark: int) -> list[str]:
        with self._lock:
            count = min(self._total - mark, len(self._lines))
            return list(self._lines)[len(self._lines) - count :] if count > 0 else []


class _Native:
    """The process-wide handle on the bindings: loaded once, under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._module: ModuleType | None = None
        self.log = LlamaLog()
        self._callback: object = None  # the ctypes callback must outlive every log call

    def load(self) -> ModuleType:
        with self._lock:
            if self._module is None:
                self._module = self._import()
            return self._module

    def _import(self) -> ModuleType:
        if not library_present():
            raise BackendUnavailableError(
                f"rocm_infer's native libraries are missing from {LIB_DIR}; "
                "install the package with `pip install -r requirements.txt` so that CMake builds them"
            )
        already = sys.modules.get("llama_cpp.llama_cpp")
        if already is not None and Path(already._base_path).resolve() != LIB_DIR.resolve():
            raise BackendUnavailableError(
                f"llama_cpp was imported before rocm_infer with its libraries from {already._base_path}; "
                "import rocm_infer first so that the in-process path and llama-server run the same libllama"
            )
        if build_config().get("gpu_backend") == "hip":  # before the HIP runtime starts, or never
            os.environ.update(masked_environment(dict(os.environ)))
        if build_config().get("gpu_backend") == "vulkan":  # before ggml's Vulkan backend starts
            os.environ.update(vulkan_masked_environment(os.environ))
        os.environ["LLAMA_CPP_LIB_PATH"] = str(LIB_DIR)
        try:
            import llama_cpp.llama_cpp as module
        except (OSError, RuntimeError, FileNotFoundError) as exc:
            raise BackendUnavailableError(f"could not load libllama from {LIB_DIR}: {exc}") from exc
        self._callback = module.llama_log_callback(self.log)
        module.llama_log_set(self._callback, ctypes.c_void_p(0))
        module.llama_backend_init()
        return module


_native = _Native()


def lib() -> ModuleType:
    """The ``llama_cpp.llama_cpp`` bindings, bound to this package's libllama."""
    return _native.load()


def llama_log() -> LlamaLog:
    return _native.log


def preload_on_gpu_builds() -> None:
    """Load libllama, and with it the GPU runtime, at ``import rocm_infer`` on a GPU build.

    Why: on an H200 with the CUDA build (Python 3.12, numpy 2.5) a process that imported
    numpy before libllama crashed inside ``llama_model_load_from_file`` (segfault), while
    the same load with libllama loaded first ran; the rest of this package imports numpy,
    so the library goes first.  The root cause is not established (no GPU was at hand
    to bisect it further): a process that imported numpy before rocm_infer gets a warning.
    """
    if build_config().get("gpu_backend") not in ("cuda", "hip", "vulkan"):
        return
    if "numpy" in sys.modules:
        _log.warning("numpy was imported before rocm_infer; on a CUDA build that order crashed the "
                     "model load on an H200: import rocm_infer first")
    try:
        lib()
    except BackendUnavailableError:
        pass  # said again, with the fix, when a model is loaded
