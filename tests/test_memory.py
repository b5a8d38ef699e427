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


def test_the_default_context_is_sized_from_the_vram_free_before_the_weights_load(tmp_path, monkeypatch, gemma_path):
    """A HIP build sizes the default context by free VRAM less the weights.  Read after the
    weights are on the card, free VRAM has already lost them and they would be taken off
    twice (about half the context on a 16 GB card with a 5 GB model).  Here the card is a
    sysfs tree whose used VRAM grows by the weights' size when llama.cpp loads them."""
    from rocm_infer.hardware import find_amd_gpus
    from rocm_infer.models import size_context
    from rocm_infer.native import model as native_model

    device = tmp_path / "class" / "drm" / "card1" / "device"
    device.mkdir(parents=True)
    (device / "vendor").write_text("0x1002\n")
    used = device / "mem_info_vram_used"
    used.write_text("0\n")
    loaded: list[int] = []

    class OnTheCard(native_model.LlamaModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loaded.append(int(native_model.lib().llama_model_size(self.ptr)))
            used.write_text(f"{loaded[-1]}\n")  # the weights now occupy the card

    weights = 260 << 20  # about the Gemma 3 270M file; the exact size comes from llama.cpp below
    kv_per_token = 18 * 1 * (256 + 256) * 2
    total = int((weights + 8192 * kv_per_token) / 0.9)  # room for ~8k cells: less than the trained 32k
    (device / "mem_info_vram_total").write_text(f"{total}\n")
    monkeypatch.setattr(native_model, "find_amd_gpus", lambda: find_amd_gpus(tmp_path))
    monkeypatch.setattr(native_model, "build_config", lambda: {"gpu_backend": "hip"})
    monkeypatch.setattr(native_model, "LlamaModel", OnTheCard)
    with ri.load_model(gemma_path, backend="llama_cpp", parallel_slots=1, device_sampling="off", overlap_decode="off") as sized:
        info = sized.info
        expected, _ = size_context(0, info.context_train, sized._kv_per_token(), loaded[0], total, 4096)
        twice, _ = size_context(0, info.context_train, sized._kv_per_token(), loaded[0], total - loaded[0], 4096)
    assert twice < expected < info.context_train  # the case under test: the order changes the answer
    assert info.context_len == expected and "free VRAM" in info.context_reason
