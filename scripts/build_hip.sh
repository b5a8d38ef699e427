#!/usr/bin/env bash
# Build rocm_infer with llama.cpp's HIP backend for RDNA 3 (default gfx1101, RX 7800 XT).
#
#   scripts/build_hip.sh [--dry-run] [--no-device-check] [--configure-only DIR]
#
# Checks ROCm first (hipconfig, version >= 6.1, hipBLAS/rocBLAS, access to /dev/kfd) and
# says exactly what is missing and how to get it, instead of failing deep inside CMake.
# --dry-run prints the environment and the command it would run, and runs nothing.
# --no-device-check skips the /dev/kfd check: compiling needs no GPU (used by the chroot check).
# --configure-only DIR runs only the package's CMake configure for HIP into DIR (a Ninja
#   build dir), with the same options as the install; the quick chroot check then compiles
#   a few objects there.
#
# Flash attention: no build option is passed for it.  The pinned llama.cpp compiles its own
# WMMA flash-attention kernels (fattn-mma-f16.cuh, AMD_WMMA_AVAILABLE) into every gfx11 build;
# the GGML_HIP_ROCWMMA_FATTN option that older guides pass no longer exists.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIN_ROCM="6.1"
TARGETS="${AMDGPU_TARGETS:-gfx1101}"
DRY_RUN=0
DEVICE_CHECK=1
CONFIGURE_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --no-device-check) DEVICE_CHECK=0 ;;
    --configure-only)
      CONFIGURE_DIR="${2:-}"; shift
      [ -n "$CONFIGURE_DIR" ] || { echo "build_hip.sh: --configure-only needs a directory" >&2; exit 2; } ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "build_hip.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

problems=()
HIPCONFIG="$(command -v hipconfig || true)"
[ -z "$HIPCONFIG" ] && [ -x /opt/rocm/bin/hipconfig ] && HIPCONFIG=/opt/rocm/bin/hipconfig
ROCM_VERSION="unknown"
if [ -z "$HIPCONFIG" ]; then
  problems+=("hipconfig not found: install ROCm >= $MIN_ROCM (https://rocm.docs.amd.com, or Debian/Ubuntu: apt install hipcc libamdhip64-dev) and put /opt/rocm/bin on PATH")
else
  ROCM_VERSION="$("$HIPCONFIG" --version 2>/dev/null | head -n1 | grep -oE '^[0-9]+\.[0-9]+' || echo unknown)"
  if [ "$ROCM_VERSION" = "unknown" ] || [ "$(printf '%s\n%s\n' "$MIN_ROCM" "$ROCM_VERSION" | sort -V | head -n1)" != "$MIN_ROCM" ]; then
    problems+=("ROCm/HIP version '$ROCM_VERSION' is older than $MIN_ROCM (or unreadable from 'hipconfig --version'): upgrade ROCm")
  fi
  HIP_ROOT="$("$HIPCONFIG" -R 2>/dev/null || echo /opt/rocm)"
  for lib in hipblas rocblas; do
    if ! compgen -G "$HIP_ROOT/lib*/lib$lib.so*" >/dev/null && ! compgen -G "/usr/lib/*/lib$lib.so*" >/dev/null; then
      problems+=("lib$lib not found: install it (apt install lib${lib}-dev, or the ROCm '$lib' package)")
    fi
  done
fi
if [ "$DEVICE_CHECK" = 1 ]; then
  if [ ! -e /dev/kfd ]; then
    problems+=("/dev/kfd does not exist: the amdgpu driver with ROCm support is not loaded (no AMD GPU, or a container without --device=/dev/kfd); use --no-device-check to compile anyway")
  elif [ ! -r /dev/kfd ] || [ ! -w /dev/kfd ]; then
    problems+=("/dev/kfd is not accessible to $(id -un): sudo usermod -aG render,video $(id -un), then log in again")
  fi
fi

ENVIRONMENT=(ROCM_INFER_GPU=hip "AMDGPU_TARGETS=$TARGETS")
COMMAND=(python -m pip install -r requirements.txt)
if [ -n "$CONFIGURE_DIR" ]; then
  COMMAND=(cmake -S "$ROOT" -B "$CONFIGURE_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release)
fi

if [ "$DRY_RUN" = 1 ]; then
  echo "# ROCm: ${HIPCONFIG:-not found} (version $ROCM_VERSION)"
  for p in "${problems[@]}"; do echo "# would fail: $p"; done
  echo "# CMake configures llama.cpp with: -DGGML_HIP=ON -DGPU_TARGETS=$TARGETS -DCMAKE_HIP_COMPILER=\$(hipconfig -l)/clang++ (see CMakeLists.txt)"
  echo "cd $ROOT && ${ENVIRONMENT[*]} ${COMMAND[*]}"
  exit 0
fi

if [ ${#problems[@]} -gt 0 ]; then
  echo "build_hip.sh: cannot build the HIP backend here:" >&2
  for p in "${problems[@]}"; do echo "  - $p" >&2; done
  echo "Nothing was built. For a CPU build run: pip install -r requirements.txt" >&2
  exit 1
fi

cd "$ROOT"
echo "build_hip.sh: ROCm $ROCM_VERSION, targets $TARGETS" >&2
exec env "${ENVIRONMENT[@]}" "${COMMAND[@]}"
