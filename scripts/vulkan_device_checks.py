#!/usr/bin/env python3
"""Run a Vulkan build of rocm_infer on a Vulkan device (Mesa's lavapipe in the check's chroot)
and check the device path end to end; check_vulkan_build.sh runs it inside its chroot.

    vulkan_device_checks.py --model PATH --json OUT

Checks, each printed as one line, any failure ending the run with exit status 1:
build_info() says vulkan, with coopmat shaders (and doctor agrees); gpu_layers=-1 offloads
every layer (llama.cpp's load log); ggml's device memory query grows while the model is
loaded, and the memory is released at close (see below for a CPU device);
greedy tokens sampled in the decode graph equal the host-sampled ones (up to a near-tie,
tests/near_tie.py); llama-server from the same build generates the same tokens.  OUT holds
the host-sampled greedy tokens in greedy_tokens.py's format, for the comparison with the
CPU build that runs outside the chroot.

lavapipe is a CPU-type Vulkan device, which ggml skips unless it is named, so
GGML_VK_VISIBLE_DEVICES defaults to 0 here (set before rocm_infer loads ggml).  Its memory
is the host's, and its budget figures move with what other processes on the machine
allocate, and it does not rise when the process frees its buffers (measured: 1,665 MiB
used before and after a close that took the process's RSS from 542 to 234 MiB), so on a
CPU device the release at close is checked on the process's RSS; on a GPU, on ggml's
figure just before and just after the close.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("GGML_VK_VISIBLE_DEVICES", "0")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]

import rocm_infer as ri  # noqa: E402  (after the device mask)
from greedy_tokens import MAX_TOKENS, PROMPTS  # noqa: E402
from near_tie import assert_same_until_near_tie  # noqa: E402
from rocm_infer.vulkan import vulkan_devices  # noqa: E402

OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


class _Lines(logging.Handler):
    """llama.cpp's log lines as rocm_infer forwards them (logger ``rocm_infer.llama``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class CheckFailed(Exception):
    pass


def check(ok: bool, what: str) -> None:
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        raise CheckFailed(what)


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_device() -> bool:
    """Whether ggml's Vulkan device 0 is a CPU device (lavapipe)."""
    devices = vulkan_devices()
    visible = int(os.environ["GGML_VK_VISIBLE_DEVICES"].split(",")[0])
    return visible < len(devices) and devices[visible].device_type == "CPU"


def greedy(model: ri.TextModel, prompt: str) -> list[int]:
    stream = model.generate(prompt, max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    return [token.id for token in stream]


def run(model_path: str, out: Path) -> None:
    log = _Lines()
    llama_logger = logging.getLogger("rocm_infer.llama")
    llama_logger.addHandler(log)
    llama_logger.setLevel(logging.DEBUG)

    info = ri.build_info()
    check(info.gpu_backend == "vulkan" and info.supports_gpu_offload and "scalar only" not in info.flash_attn_kernels,
          f"build_info: backend {info.gpu_backend}, GPU offload {info.supports_gpu_offload}, kernels {info.flash_attn_kernels}")
    report = {c.name: c for c in ri.doctor().checks}
    for name in ("build", "Vulkan devices", "Vulkan mask", "coopmat shaders"):
        print(f"     doctor: {name}: {report[name].detail if name in report else '(not listed)'}")
    check("coopmat shaders" in report and report["coopmat shaders"].ok, "doctor: the build has cooperative-matrix shaders")
    before = ri.active_memory()
    check(before is not None, f"a Vulkan device is listed by ggml (active memory before loading: {before})")
    devices = [line for line in log.lines if line.startswith("ggml_vulkan: 0 =")]
    print("     " + (devices[0] if devices else "(ggml_vulkan printed no device line)"))

    options = dict(backend="llama_cpp", gpu_layers=-1, parallel_slots=1, prefix_cache=False)
    with ri.load_model(model_path, device_sampling="off", **options) as host:
        offloaded = [m.groups() for m in map(OFFLOADED.search, log.lines) if m]
        check(bool(offloaded) and offloaded[-1][0] == offloaded[-1][1],
              f"every layer on the Vulkan device: {'/'.join(offloaded[-1]) if offloaded else 'no offload line in the log'}")
        loaded = ri.active_memory() or 0
        check(loaded > 0 and (ri.peak_memory() or 0) >= loaded,
              f"device memory while loaded: active {loaded >> 20} MiB, peak {(ri.peak_memory() or 0) >> 20} MiB")
        host_tokens = {prompt: greedy(host, prompt) for prompt in PROMPTS}
        with ri.load_model(model_path, device_sampling="on", **options) as device:
            for prompt in PROMPTS:
                assert_same_until_near_tie(host, prompt, host_tokens[prompt], greedy(device, prompt))
            sampled = device.engine_stats().device_sampled
        check(sampled > 0, f"device-sampled greedy equals host-sampled greedy ({sampled} rows sampled on the device)")
        with ri.load_model(model_path, backend="llama_server", gpu_layers=-1, parallel_slots=1) as server:
            served = greedy(server, PROMPTS[0])
        assert_same_until_near_tie(host, PROMPTS[0], host_tokens[PROMPTS[0]], served)
        check(True, f"llama-server on the Vulkan build generates the in-process tokens ({'equal' if served == host_tokens[PROMPTS[0]] else 'equal up to a near-tie'})")
        before_close, rss_before = ri.active_memory() or 0, _rss()
    after, rss_after = ri.active_memory() or 0, _rss()
    figures = (f"ggml's query {before_close >> 20} MiB active just before, {after >> 20} MiB just after; "
               f"process RSS {rss_before >> 20} -> {rss_after >> 20} MiB")
    if _cpu_device():
        check(rss_before - rss_after >= Path(model_path).stat().st_size // 2,
              f"device memory released at close, seen in the process's RSS (a CPU device's memory is the host's): {figures}")
    else:
        check(before_close - after >= loaded // 2, f"device memory falls back after close: {figures}")

    record = {"build": {"gpu_backend": info.gpu_backend, "gpu_targets": list(info.gpu_targets)},
              "device": devices[0] if devices else None, "tokens": host_tokens}
    out.write_text(json.dumps(record, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    try:
        run(args.model, args.json)
    except (CheckFailed, AssertionError) as exc:
        print(f"vulkan_device_checks: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
