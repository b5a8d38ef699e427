"""The rocm backend's availability from sysfs trees shaped like real machines."""

from pathlib import Path

from rocm_infer.hardware import find_amd_gpus, kfd_problem, rocm_problem


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
