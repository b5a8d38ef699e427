"""active_memory()/peak_memory(): growth of GPU device memory since the first reading."""

from __future__ import annotations

import rocm_infer as ri
from rocm_infer.build import build_config
from rocm_infer.native.devices import MemoryTracker, gpu_device_memory


def test_tracker_counts_growth_since_the_first_reading():
    readings = [1_000, 1_500, 3_000, 1_200, 1_100, 1_100, 1_100]
    tracker = MemoryTracker(lambda: readings.pop(0))
    assert tracker.sample() == 500
    assert tracker.sample() == 2_000
    assert tracker.sample() == 200
    assert tracker.peak() == 2_000  # reads 1_100 on the way
    tracker.reset_peak()  # reads 1_100
    assert tracker.peak() == 100


def test_tracker_without_gpu_devices_says_none():
    tracker = MemoryTracker(lambda: None)
    assert tracker.sample() is None and tracker.peak() is None


def test_memory_figures_on_this_build(model):
    """The CPU build has no GPU device, so there is nothing to report; a GPU build holds most
    of the weights once a model is loaded (llama.cpp keeps the token embeddings in host
    memory, so not all of them)."""
    if build_config().get("gpu_backend") == "cpu":
        assert gpu_device_memory() == []
        assert ri.active_memory() is None and ri.peak_memory() is None
    else:
        assert ri.peak_memory() >= model.info.size_bytes // 2
