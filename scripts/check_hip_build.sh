#!/usr/bin/env bash
# Compile rocm_infer's HIP build for gfx1101 in a Debian chroot with ROCm and prove that the
# RDNA 3 WMMA flash-attention kernels are in it.  No AMD GPU is needed (none runs a kernel).
#
#   scripts/check_hip_build.sh [--quick] [--rocm 7.2|6.4] [--cache-dir DIR] [--fresh]
#
#   --quick      configure the package's CMake for HIP and compile three representative
#                translation units (one fattn-mma-f16 instance, the MMQ Q4_K instance,
#                ggml-cuda.cu); under half a minute once the chroot exists, where the
#                full build takes ~20 min on 2 cores.
#   (default)    build the whole package inside the chroot through scripts/build_hip.sh,
#                check the installed libggml-hip.so, import it, and compare its greedy
#                tokens (CPU device of the HIP build) with this machine's CPU build.
#   --rocm V     7.2 (Debian experimental, default) or 6.4 (Debian sid).
#   --cache-dir  where the chroot lives (default ${XDG_CACHE_HOME:-~/.cache}/rocm-infer);
#                it is reused by later runs.
#   --fresh      delete the cached chroot first.
#
# Needs root (chroot, mount).  Exit status: 0 checked, 1 a step failed (its name and the
# tail of its log are printed), 2 bad usage, 3 SKIPPED: Debian's mirror cannot be reached
# or this is not root (the machine, not the code).  /proc and /dev are mounted into the
# chroot only while a step runs inside it and are unmounted on every exit path, Ctrl-C
# included.
set -euo pipefail
# The whole script is one block, read before it runs: editing or pulling this file during a
# half-hour build cannot change what the running copy does next.
{

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROCM=7.2
QUICK=0
FRESH=0
TARGETS="${AMDGPU_TARGETS:-gfx1101}"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/rocm-infer"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --fresh) FRESH=1 ;;
    --rocm) ROCM="${2:-}"; shift ;;
    --cache-dir) CACHE_DIR="${2:-}"; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "check_hip_build.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$ROCM" in
  7.2) SUITE_FOR_ROCM=experimental ;;
  6.4) SUITE_FOR_ROCM=sid ;;
  *) echo "check_hip_build.sh: --rocm '$ROCM': use 7.2 (experimental) or 6.4 (sid)" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
  echo "SKIPPED: check_hip_build: needs root (debootstrap, chroot and mount); run it with sudo" >&2
  exit 3
fi

CHROOT="$CACHE_DIR/sid-rocm$ROCM"
LOG_DIR="$CACHE_DIR/logs-rocm$ROCM"
CHECK_NAME=check_hip_build
MODE=$([ "$QUICK" = 1 ] && echo quick || echo full)
START=$(date +%s)
# shellcheck source=scripts/sid_chroot.sh
. "$ROOT/scripts/sid_chroot.sh"
mkdir -p "$CACHE_DIR" "$LOG_DIR"
# One run per chroot at a time: a second would replace the source under a running build.
exec 9>"$CACHE_DIR/lock-rocm$ROCM"
if ! flock -n 9; then
  say "another run is using $CHROOT; waiting for it"
  flock 9
fi
chroot_traps

# ---- 1. the chroot ----------------------------------------------------------------------
if [ "$FRESH" = 1 ] && [ -d "$CHROOT" ]; then
  STEP="fresh"; remove_tree "$CHROOT"
fi
ensure_chroot "HIP build" "hipcc libamdhip64-dev librocblas-dev libhipblas-dev rocm-cmake cmake ninja-build g++ make \
  python3 python3-venv python3-pip" "$SUITE_FOR_ROCM"
STEP="rocm-version"
HIP_VERSION="$( (trap unmount_all EXIT; in_chroot hipconfig --version) 2>/dev/null | grep -oE '^[0-9]+\.[0-9]+(\.[0-9]+)?' || true)"
[ -n "$HIP_VERSION" ] || fail "hipconfig --version gave nothing inside $CHROOT (delete it or use --fresh)"
case "$HIP_VERSION" in "$ROCM"*) ;; *) fail "the chroot holds HIP $HIP_VERSION, not $ROCM (use --fresh)" ;; esac
say "chroot $CHROOT: HIP $HIP_VERSION, $(du -sh --one-file-system "$CHROOT" 2>/dev/null | cut -f1)"

step copy-source copy_source
step host-trust copy_host_trust

# ---- 2. build -----------------------------------------------------------------------
QUICK_UNITS=(fattn-mma-f16-instance-ncols1_1-ncols2_16.cu.o mmq-instance-q4_k.cu.o ggml-cuda.cu.o)
if [ "$QUICK" = 1 ]; then
  step configure in_chroot sh -c "AMDGPU_TARGETS='$TARGETS' bash /build/src/scripts/build_hip.sh --no-device-check --configure-only /build/quick"
  quick_compile() {
    local targets=() unit path
    for unit in "${QUICK_UNITS[@]}"; do
      path=$(chroot "$CHROOT" ninja -C /build/quick -t targets all | cut -d: -f1 | grep -F "/$unit" | head -n1)
      [ -n "$path" ] || { echo "no ninja target ends in $unit: did the HIP backend configure?"; return 1; }
      targets+=("$path")
    done
    printf '%s\n' "${targets[@]}" >"$LOG_DIR/quick-objects.txt"
    in_chroot ninja -C /build/quick "${targets[@]}"
  }
  step compile quick_compile
  mapfile -t OBJECTS < <(sed 's|^|/build/quick/|' "$LOG_DIR/quick-objects.txt")
else
  step build-package in_chroot sh -c "
    set -e
    [ -x /build/venv/bin/python ] || python3 -m venv /build/venv
    . /build/venv/bin/activate
    python -m pip install --quiet --upgrade pip
    cd /build/src
    SKBUILD_BUILD_DIR=/build/package-build AMDGPU_TARGETS='$TARGETS' bash scripts/build_hip.sh --no-device-check"
  STEP="find-library"
  PKG_LIB=$(chroot "$CHROOT" /build/venv/bin/python -c \
    'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("rocm_infer").origin).parent / "lib")')
  [ -f "$CHROOT$PKG_LIB/libggml-hip.so" ] || fail "libggml-hip.so is not installed in $PKG_LIB"
  OBJECTS=("$PKG_LIB/libggml-hip.so")
fi

# ---- 3. the gfx1101 code and its WMMA instructions ----------------------------------
step wmma in_chroot python3 /build/src/scripts/hip_code_objects.py --target "$TARGETS" \
  --require-wmma "${OBJECTS[@]}"
cat "$STEP_LOG" >&2
WMMA_SUMMARY=$(tail -n1 "$STEP_LOG")

# ---- 4. full mode: run the HIP-built package on this machine's CPU --------------------
TOKENS_SUMMARY=""
if [ "$QUICK" = 0 ]; then
  STEP="host-model"
  MODEL=$(python3 -c 'from rocm_infer.models import default_model_path; print(default_model_path())' 2>/dev/null) \
    || fail "this machine's Python cannot import rocm_infer: install the CPU build first (pip install -r requirements.txt)"
  mkdir -p "$CHROOT/build/models"
  cp -u "$MODEL" "$CHROOT/build/models/model.gguf"
  step hip-greedy in_chroot /build/venv/bin/python /build/src/scripts/greedy_tokens.py \
    --model /build/models/model.gguf --json /build/hip-greedy.json
  step hip-package python3 "$ROOT/scripts/greedy_tokens.py" --check-build "$CHROOT/build/hip-greedy.json" "$TARGETS"
  cat "$STEP_LOG" >&2
  step cpu-greedy python3 "$ROOT/scripts/greedy_tokens.py" --model "$MODEL" --json "$LOG_DIR/cpu-greedy.json"
  STEP="compare-greedy"
  STEP_LOG="$LOG_DIR/compare-greedy.log"
  python3 "$ROOT/scripts/greedy_tokens.py" --compare "$CHROOT/build/hip-greedy.json" "$LOG_DIR/cpu-greedy.json" \
    | tee "$STEP_LOG" >&2 || fail "the HIP build's greedy tokens differ from the CPU build's"
  TOKENS_SUMMARY=" greedy=$(tail -n1 "$STEP_LOG")"
fi

echo "check_hip_build: OK mode=$MODE rocm=$HIP_VERSION targets=$TARGETS $WMMA_SUMMARY$TOKENS_SUMMARY seconds=$(( $(date +%s) - START ))"
exit 0
}
