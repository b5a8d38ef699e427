"""Vulkan devices as the Vulkan loader lists them, and which one ggml's Vulkan backend uses.

ggml numbers ``GGML_VK_VISIBLE_DEVICES`` by the loader's physical-device order and reads
it once, when its Vulkan backend starts, so the choice has to be made before libggml
loads, from the loader itself.  The probe asks ``libvulkan.so.1`` through ctypes for
five calls (create an instance, list devices, their properties with the driver's name,
their memory heaps, destroy the instance): the Python Vulkan binding (``vulkan`` on PyPI)
would bring thousands of generated functions and fail to import where no loader exists,
which is every CPU-only machine this package also runs on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Mapping
from dataclasses import dataclass

from .hardware import AMD_VENDOR_ID, MaskDecision

VISIBLE_DEVICES = "GGML_VK_VISIBLE_DEVICES"
DEVICE_TYPES = {0: "other", 1: "integrated GPU", 2: "discrete GPU", 3: "virtual GPU", 4: "CPU"}
GPU_TYPES = ("integrated GPU", "discrete GPU")


@dataclass(frozen=True)
class VulkanDevice:
    """One physical device; ``index`` is its place in the loader's list (what
    GGML_VK_VISIBLE_DEVICES counts), ``memory_bytes`` its device-local heaps together."""

    index: int
    name: str
    driver: str
    device_type: str
    vendor_id: int
    memory_bytes: int

    @property
    def is_amd(self) -> bool:
        return self.vendor_id == AMD_VENDOR_ID

    @property
    def is_radv(self) -> bool:
        return "radv" in self.driver.lower()


def vulkan_coopmat(config: Mapping[str, object]) -> bool | None:
    """Whether a Vulkan build compiled cooperative-matrix shaders (None: not a Vulkan build,
    or one recorded before the build record said)."""
    if config.get("gpu_backend") != "vulkan" or "vulkan_coopmat" not in config:
        return None
    return bool(config["vulkan_coopmat"])


def choose_vulkan_mask(environ: Mapping[str, str], devices: list[VulkanDevice]) -> MaskDecision:
    """The iGPU rule, as for ROCm: ggml's Vulkan backend uses every discrete and integrated
    GPU and splits the layers across them, so with a Ryzen iGPU beside a Radeon part of
    the model would run on the iGPU; only the GPU with the most device-local memory is
    made visible.  A value the user set is kept."""
    if environ.get(VISIBLE_DEVICES):
        return MaskDecision(None, None, f"{VISIBLE_DEVICES}={environ[VISIBLE_DEVICES]} was set by the user and is kept")
    gpus = [d for d in devices if d.device_type in GPU_TYPES]
    if len(gpus) <= 1:
        return MaskDecision(None, None, "no masking needed: " + (f"one Vulkan GPU ({gpus[0].name})" if gpus else "no Vulkan GPU"))
    chosen = max(gpus, key=lambda d: d.memory_bytes)
    others = ", ".join(f"{d.index}: {d.name} {d.memory_bytes >> 20} MiB" for d in gpus if d is not chosen)
    return MaskDecision(
        VISIBLE_DEVICES, str(chosen.index),
        f"Vulkan device {chosen.index} ({chosen.name}, {chosen.memory_bytes >> 20} MiB) has the most memory; hidden: {others}",
    )


def vulkan_masked_environment(environ: Mapping[str, str], devices: list[VulkanDevice] | None = None) -> dict[str, str]:
    """A copy of ``environ`` with the Vulkan mask applied (for this process before ggml's
    Vulkan backend starts, and for a llama-server child)."""
    if devices is None:  # the loader is asked only when the user has not chosen
        devices = [] if environ.get(VISIBLE_DEVICES) else vulkan_devices()
    decision = choose_vulkan_mask(environ, devices)
    masked = dict(environ)
    if decision.variable and decision.value is not None:
        masked[decision.variable] = decision.value
    return masked


# ---- the probe: libvulkan.so.1 through ctypes -------------------------------------------
_STRUCTURE_TYPE_APPLICATION_INFO = 0
_STRUCTURE_TYPE_INSTANCE_CREATE_INFO = 1
_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2 = 1000059001
_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES = 1000196000
_API_VERSION_1_2 = (1 << 22) | (2 << 12)
_MEMORY_HEAP_DEVICE_LOCAL = 0x1


class _ApplicationInfo(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("pApplicationName", ctypes.c_char_p),
                ("applicationVersion", ctypes.c_uint32), ("pEngineName", ctypes.c_char_p),
                ("engineVersion", ctypes.c_uint32), ("apiVersion", ctypes.c_uint32)]


class _InstanceCreateInfo(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("flags", ctypes.c_uint32),
                ("pApplicationInfo", ctypes.POINTER(_ApplicationInfo)), ("enabledLayerCount", ctypes.c_uint32),
                ("ppEnabledLayerNames", ctypes.c_void_p), ("enabledExtensionCount", ctypes.c_uint32),
                ("ppEnabledExtensionNames", ctypes.c_void_p)]


class _DeviceProperties(ctypes.Structure):
    """VkPhysicalDeviceProperties up to the name; ``_rest`` covers the limits and sparse
    properties (824 bytes in all), which are not read."""

    _fields_ = [("apiVersion", ctypes.c_uint32), ("driverVersion", ctypes.c_uint32), ("vendorID", ctypes.c_uint32),
                ("deviceID", ctypes.c_uint32), ("deviceType", ctypes.c_int), ("deviceName", ctypes.c_char * 256),
                ("pipelineCacheUUID", ctypes.c_uint8 * 16), ("_rest", ctypes.c_uint64 * 66)]


class _DriverProperties(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("driverID", ctypes.c_int),
                ("driverName", ctypes.c_char * 256), ("driverInfo", ctypes.c_char * 256),
                ("conformanceVersion", ctypes.c_uint8 * 4)]


class _DeviceProperties2(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("properties", _DeviceProperties)]


class _MemoryHeap(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint64), ("flags", ctypes.c_uint32)]


class _MemoryProperties(ctypes.Structure):
    _fields_ = [("memoryTypeCount", ctypes.c_uint32), ("memoryTypes", ctypes.c_uint32 * 64),
                ("memoryHeapCount", ctypes.c_uint32), ("memoryHeaps", _MemoryHeap * 16)]


def _loader() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("vulkan") or "libvulkan.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def vulkan_devices() -> list[VulkanDevice]:
    """Every physical device the Vulkan loader lists, in its order; empty where there is
    no loader, no driver, or the instance cannot be created (nothing here raises)."""
    vk = _loader()
    if vk is None:
        return []
    app = _ApplicationInfo(_STRUCTURE_TYPE_APPLICATION_INFO, None, b"rocm-infer", 0, b"rocm-infer", 0, _API_VERSION_1_2)
    create = _InstanceCreateInfo(_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, None, 0, ctypes.pointer(app), 0, None, 0, None)
    instance = ctypes.c_void_p()
    if vk.vkCreateInstance(ctypes.byref(create), None, ctypes.byref(instance)) != 0:
        return []
    try:
        count = ctypes.c_uint32(0)
        vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None)
        handles = (ctypes.c_void_p * count.value)()
        if count.value == 0 or vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), handles) < 0:
            return []
        return [_describe(vk, index, handles[index]) for index in range(count.value)]
    finally:
        vk.vkDestroyInstance(instance, None)


def _describe(vk: ctypes.CDLL, index: int, handle: int) -> VulkanDevice:
    driver = _DriverProperties(_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES, None)
    props = _DeviceProperties2(_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, ctypes.cast(ctypes.pointer(driver), ctypes.c_void_p))
    vk.vkGetPhysicalDeviceProperties2(ctypes.c_void_p(handle), ctypes.byref(props))
    memory = _MemoryProperties()
    vk.vkGetPhysicalDeviceMemoryProperties(ctypes.c_void_p(handle), ctypes.byref(memory))
    local = sum(heap.size for heap in memory.memoryHeaps[: memory.memoryHeapCount] if heap.flags & _MEMORY_HEAP_DEVICE_LOCAL)
    p = props.properties
    return VulkanDevice(index, p.deviceName.decode(errors="replace"), driver.driverName.decode(errors="replace"),
                        DEVICE_TYPES.get(p.deviceType, "other"), p.vendorID, local)
