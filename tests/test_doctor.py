"""`doctor` on machine-shaped trees, and on this machine (no AMD GPU, CPU build)."""

import json
import subprocess

import pytest
from test_hardware import card, kfd_node

from rocm_infer.doctor import doctor
from rocm_infer.hardware import choose_gpu_mask, rocm_problem, vram_info

HIP_GFX1101 = {"gpu_backend": "hip", "gpu_targets": "gfx1101", "llama_cpp_commit": "0c1e570"}


def machine(tmp_path, gfx_version=110001):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "kfd").write_text("")
    sysfs = tmp_path / "sys"
    card(sysfs, "card0", "0x1002", 512 << 20)
    card(sysfs, "card1", "0x1002", 16 << 30)
    kfd_node(sysfs, 1, 100306, 4, 512 << 20)
    kfd_node(sysfs, 2, gfx_version, 120, 16 << 30)
    return sysfs, tmp_path / "dev"


def checks(report):
    return {c.name: c for c in report.checks}


def test_rx_7800_xt_with_igpu_on_a_gfx1101_build_is_usable_and_masked(tmp_path):
    sysfs, dev = machine(tmp_path)
    report = doctor(sysfs, dev, environ={"HSA_OVERRIDE_GFX_VERSION": "11.0.1"}, rocm_version="7.2.4", config=HIP_GFX1101)
    by_name = checks(report)
    assert by_name["device mask"].detail.startswith("HIP_VISIBLE_DEVICES=1")
    assert "11.0.1" in by_name["HSA override"].detail
    # the iGPU (gfx1036) is not a build target, but it is masked: only the dGPU must be covered
    assert by_name["targets"].ok and by_name["AMD GPUs"].ok and by_name["/dev/kfd"].ok
    assert report.amd_gpu_usable


def test_a_gfx1100_card_on_a_gfx1101_build_says_what_to_rebuild_with(tmp_path):
    sysfs, dev = machine(tmp_path, gfx_version=110000)
    target = checks(doctor(sysfs, dev, environ={}, rocm_version="6.4", config=HIP_GFX1101))["targets"]
    assert not target.ok
    assert "AMDGPU_TARGETS='gfx1100;gfx1101'" in target.fix and "HSA_OVERRIDE_GFX_VERSION" in target.fix


def test_a_user_mask_is_kept_and_reported(tmp_path):
    sysfs, dev = machine(tmp_path)
    mask = checks(doctor(sysfs, dev, environ={"HIP_VISIBLE_DEVICES": "0"}, rocm_version="7.2", config=HIP_GFX1101))["device mask"]
    assert "set by the user and is kept" in mask.detail


def test_no_gpu_no_rocm(tmp_path):
    report = doctor(tmp_path, tmp_path, environ={}, rocm_version=None, config={"gpu_backend": "cpu"})
    by_name = checks(report)
    assert not report.amd_gpu_usable
    assert not by_name["AMD GPUs"].ok and by_name["AMD GPUs"].fix
    assert not by_name["ROCm"].ok and "ROCm >= 6.1" in by_name["ROCm"].fix
    assert "build_hip.sh" in by_name["build"].fix


def test_cli_doctor_on_this_machine_says_there_is_no_amd_gpu():
    proc = subprocess.run(["rocm-infer", "doctor"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "no AMD GPU found" in proc.stdout and "built for 'cpu'" in proc.stdout
    as_json = json.loads(subprocess.run(["rocm-infer", "doctor", "--json"], capture_output=True, text=True).stdout)
    assert as_json["amd_gpu_usable"] is False


def build_machine(root, shape):
    """A sysfs and /dev tree shaped like one of the machines the product meets."""
    sysfs, dev = root / "sys", root / "dev"
    dev.mkdir()
    if shape in ("rx7800xt", "rx7800xt+raphael", "two-discrete", "unreadable"):
        (dev / "kfd").write_text("")
    if shape == "rx7800xt":
        card(sysfs, "card0", "0x1002", 16 << 30)
        kfd_node(sysfs, 1, 110001, 120, 16 << 30)
    elif shape == "rx7800xt+raphael":
        card(sysfs, "card0", "0x1002", 512 << 20)
        card(sysfs, "card1", "0x1002", 16 << 30)
        kfd_node(sysfs, 1, 100306, 4, 512 << 20)
        kfd_node(sysfs, 2, 110001, 120, 16 << 30)
    elif shape == "two-discrete":
        card(sysfs, "card0", "0x1002", 16 << 30)
        card(sysfs, "card1", "0x1002", 24 << 30)
        kfd_node(sysfs, 1, 110001, 120, 16 << 30)
        kfd_node(sysfs, 2, 110000, 192, 24 << 30)  # an RX 7900 XTX (gfx1100)
    elif shape == "nvidia-only":
        card(sysfs, "card0", "0x10de", None)
    elif shape == "unreadable":
        # Directories where files should be (reading one fails, as for a file root cannot
        # be denied): the card and the KFD node are skipped, nothing raises.
        (sysfs / "class" / "drm" / "card0" / "device" / "vendor").mkdir(parents=True)
        (sysfs / "class" / "kfd" / "kfd" / "topology" / "nodes" / "1" / "properties").mkdir(parents=True)
    return sysfs, dev


@pytest.mark.parametrize(
    ("shape", "cards", "mask", "rocm_usable"),
    [
        ("rx7800xt", ["card0"], None, True),
        ("rx7800xt+raphael", ["card1", "card0"], "1", True),  # the dGPU (HIP device 1) only
        ("two-discrete", ["card1", "card0"], "1", True),  # the 24 GB RX 7900 XTX
        ("nvidia-only", [], None, False),
        ("no-gpu", [], None, False),
        ("unreadable", [], None, False),
    ],
)
def test_machine_shapes(tmp_path, shape, cards, mask, rocm_usable):
    sysfs, dev = build_machine(tmp_path, shape)
    assert [gpu.card for gpu in vram_info(sysfs)] == cards
    decision = choose_gpu_mask({}, sysfs)
    assert decision.value == mask
    assert (rocm_problem(sysfs, dev) is None) == rocm_usable  # what the rocm backend's available() asks
    report = doctor(sysfs, dev, environ={}, rocm_version="7.2.4", config={**HIP_GFX1101, "gpu_targets": "gfx1100;gfx1101"})
    mask_check = checks(report)["device mask"]
    assert mask_check.detail.startswith(f"HIP_VISIBLE_DEVICES={mask}") if mask else "no masking needed" in mask_check.detail
    assert checks(report)["AMD GPUs"].ok == bool(cards)
    assert all(check.fix for check in report.checks if not check.ok)
    kept = doctor(sysfs, dev, environ={"HIP_VISIBLE_DEVICES": "0"}, rocm_version="7.2.4", config=HIP_GFX1101)
    assert "set by the user and is kept" in checks(kept)["device mask"].detail
