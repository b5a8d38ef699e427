"""The rocm backend's availability from sysfs trees shaped like real machines."""

import sys
from pathlib import Path

import pytest

from rocm_infer.hardware import (
    amdsmi_vram,
    choose_gpu_mask,
    find_amd_gpus,
    gfx_name,
    kfd_gpus,
    kfd_problem,
    masked_environment,
    rocm_problem,
    vram_info,
)
from rocm_infer.models import kv_bytes_per_token, size_context


def card(sysfs: Path, name: str, vendor: str, vram: int | None) -> None:
    device = sysfs / "class" / "drm" / name / "device"
    device.mkdir(parents=True)
    (device / "vendor").write_text(vendor + "\n")
    if vram is not None:
        (device / "mem_info_vram_total").write_text(f"{vram}\n")
        (device / "mem_info_vram_used").write_text("1024\n")


def test_rx_7800_xt_with_an_igpu_lists_the_dgpu_first(tmp_path):
    card(tmp_path, "card0", "0x1002", 512 << 20)  # Raphael iGPU
    card(tmp_path, "card1", "0x1002", 16 << 30)  # RX 7800 XT
    card(tmp_path, "card2", "0x10de", None)  # an NVIDIA card is ignored
    gpus = find_amd_gpus(tmp_path)
    assert [g.card for g in gpus] == ["card1", "card0"]
    assert gpus[0].vram_total_bytes == 16 << 30 and gpus[0].vram_used_bytes == 1024


def test_no_kfd_says_the_driver_is_missing(tmp_path):
    assert "does not exist" in kfd_problem(tmp_path)
    assert "does not exist" in rocm_problem(tmp_path, tmp_path)


def test_kfd_present_but_no_amd_card(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "kfd").write_text("")
    card(tmp_path / "sys", "card0", "0x10de", None)
    assert kfd_problem(dev) is None
    assert "no AMD GPU" in rocm_problem(tmp_path / "sys", dev)
    card(tmp_path / "sys", "card1", "0x1002", 16 << 30)
    assert rocm_problem(tmp_path / "sys", dev) is None


def kfd_node(sysfs: Path, node: int, gfx_version: int, simds: int, vram: int, heap_type: int = 1) -> None:
    base = sysfs / "class" / "kfd" / "kfd" / "topology" / "nodes" / str(node)
    (base / "mem_banks" / "0").mkdir(parents=True)
    (base / "properties").write_text(f"cpu_cores_count {0 if simds else 16}\nsimd_count {simds}\ngfx_target_version {gfx_version}\n")
    (base / "mem_banks" / "0" / "properties").write_text(f"heap_type {heap_type}\nsize_in_bytes {vram}\n")


def test_gfx_names():
    assert gfx_name(110001) == "gfx1101" and gfx_name(100306) == "gfx1036" and gfx_name(90010) == "gfx90a"


def test_rx_7800_xt_plus_raphael_igpu_masks_to_the_dgpu(tmp_path):
    kfd_node(tmp_path, 0, 0, 0, 64 << 30, heap_type=0)  # the CPU node
    kfd_node(tmp_path, 1, 100306, 4, 512 << 20)  # iGPU enumerates first
    kfd_node(tmp_path, 2, 110001, 120, 16 << 30)
    assert [(g.index, g.gfx_target) for g in kfd_gpus(tmp_path)] == [(0, "gfx1036"), (1, "gfx1101")]
    decision = choose_gpu_mask({}, tmp_path)
    assert (decision.variable, decision.value) == ("HIP_VISIBLE_DEVICES", "1")
    assert "gfx1036" in decision.reason
    assert masked_environment({"PATH": "/bin"}, tmp_path) == {"PATH": "/bin", "HIP_VISIBLE_DEVICES": "1"}


def test_two_discrete_cards_pick_the_larger(tmp_path):
    kfd_node(tmp_path, 1, 110001, 120, 16 << 30)
    kfd_node(tmp_path, 2, 110000, 192, 24 << 30)
    assert choose_gpu_mask({}, tmp_path).value == "1"


def test_a_user_set_mask_is_kept(tmp_path):
    kfd_node(tmp_path, 1, 100306, 4, 512 << 20)
    kfd_node(tmp_path, 2, 110001, 120, 16 << 30)
    for variable in ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"):
        env = {variable: "0"}
        assert choose_gpu_mask(env, tmp_path).variable is None
        assert masked_environment(env, tmp_path) == env


def test_one_gpu_or_none_needs_no_mask(tmp_path):
    assert choose_gpu_mask({}, tmp_path).variable is None  # no GPU at all (or NVIDIA only)
    kfd_node(tmp_path, 1, 110001, 120, 16 << 30)
    decision = choose_gpu_mask({}, tmp_path)
    assert decision.variable is None and "gfx1101" in decision.reason


def test_vram_info_reports_free_memory(tmp_path):
    card(tmp_path, "card1", "0x1002", 16 << 30)
    (info,) = vram_info(tmp_path)
    assert info.vram_free_bytes == (16 << 30) - 1024


GIB = 1 << 30


@pytest.mark.parametrize(
    ("requested", "trained", "kv_per_token", "weights", "free", "expected", "why"),
    [
        (2048, 32768, 18432, 250 << 20, None, 2048, "as requested"),
        (15, 32768, 18432, 250 << 20, None, 256, "rounded up to 256"),  # llama.cpp's padding, and a batch for every slot
        (1000, 32768, 18432, 250 << 20, None, 1024, "rounded up to 1024"),
        (0, 32768, 18432, 250 << 20, None, 4096, "capped at 4096"),  # CPU build: no VRAM figure
        (0, 2048, 18432, 250 << 20, None, 2048, "capped at 4096"),
        (0, 0, 18432, 250 << 20, None, 4096, "no trained context"),
        # Llama-3.1-8B Q4_K_M on an RX 7800 XT with 15 GiB free: 128 KiB/token (32 layers x 8 kv heads x 256 x f16)
        (0, 131072, 131072, int(4.6 * GIB), 15 * GIB, 72704, "what free VRAM"),
        # Qwen 3 8B-like shape on the same card: 144 KiB/token (36 layers x 8 x 256 x f16)
        (0, 40960, 147456, 5 * GIB, 15 * GIB, 40960, "fits in free VRAM"),
        # Gemma 3 270M: everything fits
        (0, 32768, 18432, 250 << 20, 15 * GIB, 32768, "fits in free VRAM"),
        # a card whose free VRAM barely holds the weights
        (0, 8192, 131072, int(7.5 * GIB), 8 * GIB, 256, "barely holds"),
    ],
)
def test_context_sizing_table(requested, trained, kv_per_token, weights, free, expected, why):
    n, reason = size_context(requested, trained, kv_per_token, weights, free, cap=4096)
    assert n == expected and why in reason


def test_kv_bytes_per_token():
    assert kv_bytes_per_token(32, 8, 128, 128) == 131072


class FakeAmdsmi:
    """Stands in for ROCm's amdsmi, which cannot start without the amdgpu driver (none here)."""

    def __init__(self, fail_init: bool = False) -> None:
        self.fail_init, self.shut_down = fail_init, False

    def amdsmi_init(self) -> None:
        if self.fail_init:
            raise RuntimeError("AMDSMI_STATUS_DRIVER_NOT_LOADED")

    def amdsmi_get_processor_handles(self) -> list[str]:
        return ["dgpu"]

    def amdsmi_get_gpu_vram_usage(self, handle: str) -> dict[str, int]:
        return {"vram_total": 16368, "vram_used": 512}

    def amdsmi_get_gpu_device_bdf(self, handle: str) -> str:
        return "0000:03:00.0"

    def amdsmi_shut_down(self) -> None:
        self.shut_down = True


def test_amdsmi_figures_are_bytes_per_pci_bus(monkeypatch):
    fake = FakeAmdsmi()
    monkeypatch.setitem(sys.modules, "amdsmi", fake)
    assert amdsmi_vram() == {"0000:03:00.0": (16368 << 20, 512 << 20)}
    assert fake.shut_down


def test_amdsmi_that_cannot_start_falls_back_to_sysfs(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", FakeAmdsmi(fail_init=True))
    assert amdsmi_vram() is None
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # not installed: import fails
    assert amdsmi_vram() is None
