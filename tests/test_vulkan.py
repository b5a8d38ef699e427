"""Vulkan devices: the iGPU rule for GGML_VK_VISIBLE_DEVICES and what `doctor` says, on
device lists shaped like real machines (no Vulkan GPU exists here), and the loader probe
on this machine, whatever it has."""

from rocm_infer.build import flash_attn_kernels
from rocm_infer.doctor import doctor
from rocm_infer.vulkan import VulkanDevice, choose_vulkan_mask, vulkan_coopmat, vulkan_devices, vulkan_masked_environment

GIB = 1 << 30
RAPHAEL = VulkanDevice(0, "AMD Radeon Graphics (RADV RAPHAEL_MENDOCINO)", "radv", "integrated GPU", 0x1002, 512 << 20)
XTX = VulkanDevice(1, "AMD Radeon RX 7900 XTX (RADV NAVI31)", "radv", "discrete GPU", 0x1002, 24 * GIB)
XTX_AMDVLK = VulkanDevice(1, "AMD Radeon RX 7900 XTX", "AMD open-source driver", "discrete GPU", 0x1002, 24 * GIB)
LAVAPIPE = VulkanDevice(2, "llvmpipe (LLVM 19.1.7, 256 bits)", "llvmpipe", "CPU", 0x10005, 31 * GIB)
VULKAN_BUILD = {"gpu_backend": "vulkan", "gpu_targets": "", "llama_cpp_commit": "0c1e570", "vulkan_coopmat": True}


def checks(report):
    return {c.name: c for c in report.checks}


def vulkan_doctor(tmp_path, devices, config=VULKAN_BUILD, environ=None):
    return doctor(tmp_path, tmp_path, environ=environ or {}, rocm_version=None, config=config, vulkan=devices)


def test_a_radeon_beside_an_igpu_is_the_only_visible_device():
    mask = choose_vulkan_mask({}, [RAPHAEL, XTX, LAVAPIPE])
    assert (mask.variable, mask.value) == ("GGML_VK_VISIBLE_DEVICES", "1")
    assert "RAPHAEL" in mask.reason  # says what it hid
    assert vulkan_masked_environment({"PATH": "/bin"}, [RAPHAEL, XTX])["GGML_VK_VISIBLE_DEVICES"] == "1"


def test_the_users_choice_one_gpu_and_a_cpu_device_need_no_mask():
    assert choose_vulkan_mask({"GGML_VK_VISIBLE_DEVICES": "0"}, [RAPHAEL, XTX]).variable is None
    assert vulkan_masked_environment({"GGML_VK_VISIBLE_DEVICES": "0"}, [RAPHAEL, XTX])["GGML_VK_VISIBLE_DEVICES"] == "0"
    assert choose_vulkan_mask({}, [XTX, LAVAPIPE]).variable is None  # ggml skips CPU devices itself
    assert choose_vulkan_mask({}, []).variable is None


def test_doctor_on_a_vulkan_build_lists_the_devices_and_approves_radv(tmp_path):
    report = vulkan_doctor(tmp_path, [RAPHAEL, XTX])
    by_name = checks(report)
    assert by_name["build"].ok and "built for 'vulkan'" in by_name["build"].detail
    assert "RX 7900 XTX (RADV NAVI31), radv, discrete GPU, 24576 MiB" in by_name["Vulkan devices"].detail
    assert by_name["Vulkan driver"].ok and "RADV" in by_name["Vulkan driver"].detail
    assert by_name["Vulkan mask"].detail.startswith("GGML_VK_VISIBLE_DEVICES=1")
    assert by_name["coopmat shaders"].ok
    assert "targets" not in by_name  # SPIR-V: nothing per card to check
    assert report.vulkan_gpu_usable and not report.amd_gpu_usable


def test_doctor_says_radv_is_the_driver_for_an_amd_card(tmp_path):
    driver = checks(vulkan_doctor(tmp_path, [XTX_AMDVLK]))["Vulkan driver"]
    assert not driver.ok
    assert "RADV" in driver.detail and "mesa-vulkan-drivers" in driver.fix


def test_doctor_says_when_the_build_has_no_coopmat_shaders(tmp_path):
    coopmat = checks(vulkan_doctor(tmp_path, [XTX], config={**VULKAN_BUILD, "vulkan_coopmat": False}))["coopmat shaders"]
    assert not coopmat.ok
    assert "NO cooperative-matrix shaders" in coopmat.detail and "GL_KHR_cooperative_matrix" in coopmat.fix


def test_doctor_on_a_vulkan_build_with_only_lavapipe_says_how_to_use_it(tmp_path):
    report = vulkan_doctor(tmp_path, [LAVAPIPE])
    devices = checks(report)["Vulkan devices"]
    assert not devices.ok and "llvmpipe" in devices.detail and "GGML_VK_VISIBLE_DEVICES" in devices.fix
    assert "Vulkan driver" not in checks(report)  # no AMD card
    assert not report.vulkan_gpu_usable


def test_doctor_on_a_hip_build_lists_vulkan_devices_for_information(tmp_path):
    report = vulkan_doctor(tmp_path, [XTX], config={"gpu_backend": "hip", "gpu_targets": "gfx1100"})
    devices = checks(report)["Vulkan devices"]
    assert devices.ok and "RX 7900 XTX" in devices.detail and "uses hip" in devices.detail
    assert not report.vulkan_gpu_usable


def test_coopmat_is_recorded_only_for_vulkan_builds():
    assert vulkan_coopmat(VULKAN_BUILD) is True
    assert vulkan_coopmat({"gpu_backend": "vulkan"}) is None
    assert vulkan_coopmat({"gpu_backend": "hip", "vulkan_coopmat": False}) is None


def test_the_loader_probe_on_this_machine_answers_without_raising():
    devices = vulkan_devices()  # empty where there is no libvulkan.so.1, as on the CPU CI machine
    assert [d.index for d in devices] == list(range(len(devices)))
    assert all(d.name and d.device_type for d in devices)


def test_build_info_names_a_vulkan_build_without_coopmat_shaders():
    assert "coopmat" in flash_attn_kernels(VULKAN_BUILD)
    assert flash_attn_kernels({**VULKAN_BUILD, "vulkan_coopmat": False}).startswith("scalar only")
