"""GPU memory as ggml's backend devices report it, for ``active_memory()`` and ``peak_memory()``.

llama-cpp-python binds libllama only, so the few ggml device calls are bound here with
ctypes, on the very libggml files that ``bindings.lib()`` loaded (the same handles: the
dynamic loader returns an already-loaded library).  ggml answers per device (free and
total, the driver's view: hipMemGetInfo / cudaMemGetInfo), not per process, so the
process's share is the growth since the libraries were loaded; another process allocating
on the same card at the same time is counted too, which the docstrings below say.  The
per-request ``GenerateMetrics.active_memory_bytes`` is a different figure on purpose: the
engine's own count (weights plus context state), available on every build.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..build import LIB_DIR
from .bindings import lib

GPU_DEVICE_TYPES = (1, 2)  # ggml_backend_dev_type: GPU, IGPU (0 is the CPU, 3 accelerators)


@dataclass(frozen=True)
class DeviceMemory:
    name: str
    description: str
    free_bytes: int
    total_bytes: int

    @property
    def used_bytes(self) -> int:
        return self.total_bytes - self.free_bytes


class _Ggml:
    """The handful of ggml-backend device functions, typed once."""

    def __init__(self) -> None:
        lib()  # libllama first: it loads libggml with the GPU mask applied
        ggml = ctypes.CDLL(str(LIB_DIR / "libggml.so"))
        base = ctypes.CDLL(str(LIB_DIR / "libggml-base.so"))
        self.count = ggml.ggml_backend_dev_count
        self.count.restype = ctypes.c_size_t
        self.get = ggml.ggml_backend_dev_get
        self.get.argtypes, self.get.restype = [ctypes.c_size_t], ctypes.c_void_p
        self.type = base.ggml_backend_dev_type
        self.type.argtypes, self.type.restype = [ctypes.c_void_p], ctypes.c_int
        self.name = base.ggml_backend_dev_name
        self.description = base.ggml_backend_dev_description
        for text_call in (self.name, self.description):
            text_call.argtypes, text_call.restype = [ctypes.c_void_p], ctypes.c_char_p
        self.memory = base.ggml_backend_dev_memory
        self.memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
        self.memory.restype = None


_ggml: _Ggml | None = None
_ggml_lock = threading.Lock()


def gpu_device_memory() -> list[DeviceMemory]:
    """Free and total memory of each GPU device ggml sees in this process (after masking)."""
    global _ggml
    with _ggml_lock:
        if _ggml is None:
            _ggml = _Ggml()
        ggml = _ggml
    devices = []
    for index in range(ggml.count()):
        device = ggml.get(index)
        if ggml.type(device) not in GPU_DEVICE_TYPES:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        ggml.memory(device, ctypes.byref(free), ctypes.byref(total))
        devices.append(DeviceMemory(ggml.name(device).decode(), (ggml.description(device) or b"").decode(),
                                    free.value, total.value))
    return devices


def gpu_used_bytes() -> int | None:
    """Memory in use on all GPU devices together; None on a build without GPU devices."""
    devices = gpu_device_memory()
    return sum(d.used_bytes for d in devices) if devices else None


class MemoryTracker:
    """Active memory is what the GPUs hold now beyond what they held at the first reading;
    the peak is the largest active figure any reading has seen.  Readings are taken when a
    model or context is created (llama.cpp allocates weights, KV cache and compute buffers
    then, not per step) and whenever the figures are asked for."""

    def __init__(self, read: Callable[[], int | None]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._baseline = read()
        self._peak = 0

    def sample(self) -> int | None:
        used = self._read()
        if used is None or self._baseline is None:
            return None
        with self._lock:
            active = max(0, used - self._baseline)
            self._peak = max(self._peak, active)
            return active

    def peak(self) -> int | None:
        return None if self.sample() is None else self._peak

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = 0
        self.sample()


_tracker: MemoryTracker | None = None
_tracker_lock = threading.Lock()


def tracker() -> MemoryTracker:
    """The process's tracker; its baseline is the first reading (before the first model)."""
    global _tracker
    with _tracker_lock:
        if _tracker is None:
            _tracker = MemoryTracker(gpu_used_bytes)
        return _tracker


def active_memory() -> int | None:
    """GPU memory this process has allocated through llama.cpp (bytes), or None on a build
    without a GPU device.  Device-wide: another process allocating meanwhile counts too."""
    return tracker().sample()


def peak_memory() -> int | None:
    """The largest ``active_memory()`` seen since the start or ``reset_peak_memory()``."""
    return tracker().peak()


def reset_peak_memory() -> None:
    tracker().reset_peak()
