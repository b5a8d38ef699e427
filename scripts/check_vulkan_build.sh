#!/usr/bin/env bash
# Build rocm_infer with llama.cpp's Vulkan backend in a Debian sid chroot, count the
# cooperative-matrix shaders in it (what RADV runs on RDNA 3's WMMA units), and run it on
# Mesa's lavapipe, a conformant Vulkan driver on the CPU.  No GPU is needed.
#
#   scripts/check_vulkan_build.sh [--quick] [--cache-dir DIR] [--fresh]
#
#   --quick      configure the package's CMake for Vulkan, generate the shader header and the
#                cooperative-matrix flash-attention shaders (flash_attn_cm1.comp), and
#                compile ggml-vulkan.cpp (the object bookworm's 1.3.239 headers cannot:
#                vk::LayerSettingEXT).
#   (default)    build the whole package in the chroot (ROCM_INFER_GPU=vulkan pip install
#                -r requirements.txt), count the coopmat shader variants, then on lavapipe:
#                every layer offloaded (gpu_layers=-1), device memory non-zero while loaded
#                and back after close, device sampling greedy equal to host sampling,
#                llama-server generating on it, and greedy tokens against this machine's
#                CPU build (equal up to a near-tie, tests/near_tie.py).
#   --cache-dir  where the chroot lives (default ${XDG_CACHE_HOME:-~/.cache}/rocm-infer);
#                it is reused by later runs, and so is the package's build directory.
#   --fresh      delete the cached chroot first.
#   JOBS=N       parallel compile jobs (default 2).
#
# Why a chroot: Debian bookworm's Vulkan headers (1.3.239) lack vk::LayerSettingEXT and its
# glslc (2023.2) lacks GL_KHR_cooperative_matrix, so a build there fails, or would have no
# coopmat shaders.  Needs root (chroot, mount).  Exit status: 0 checked, 1 a step failed (its
# name and the tail of its log are printed), 2 bad usage, 3 SKIPPED: Debian's mirror cannot
# be reached or this is not root.  The last line names the device, the coopmat shader count
# and whether the tokens agreed.
set -euo pipefail
# One block, read before it runs: editing this file during an hour-long build cannot change
# what the running copy does next.
{

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHECK_NAME=check_vulkan_build
QUICK=0
FRESH=0
JOBS="${JOBS:-2}"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/rocm-infer"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --fresh) FRESH=1 ;;
    --cache-dir) CACHE_DIR="${2:-}"; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "check_vulkan_build.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$(id -u)" != 0 ]; then
  echo "SKIPPED: check_vulkan_build: needs root (debootstrap, chroot and mount); run it with sudo" >&2
  exit 3
fi

CHROOT="$CACHE_DIR/sid-vulkan"
LOG_DIR="$CACHE_DIR/logs-vulkan"
MODE=$([ "$QUICK" = 1 ] && echo quick || echo full)
START=$(date +%s)
# shellcheck source=scripts/sid_chroot.sh
. "$ROOT/scripts/sid_chroot.sh"
mkdir -p "$CACHE_DIR" "$LOG_DIR"
exec 9>"$CACHE_DIR/lock-vulkan"  # one run per chroot: a second would replace the source under a build
if ! flock -n 9; then
  say "another run is using $CHROOT; waiting for it"
  flock 9
fi
chroot_traps

# ---- 1. the chroot ----------------------------------------------------------------------
if [ "$FRESH" = 1 ] && [ -d "$CHROOT" ]; then
  STEP="fresh"; remove_tree "$CHROOT"
fi
ensure_chroot "Vulkan build" "libvulkan-dev glslc spirv-headers mesa-vulkan-drivers vulkan-tools \
  cmake ninja-build g++ make pkg-config python3 python3-venv python3-pip"
STEP="versions"
VERSIONS="$( (trap unmount_all EXIT; in_chroot dpkg-query -W -f '${Package}=${Version} ' libvulkan-dev glslc mesa-vulkan-drivers) 2>/dev/null || true)"
[ -n "$VERSIONS" ] || fail "dpkg-query gave nothing inside $CHROOT (delete it or use --fresh)"
say "chroot $CHROOT: $VERSIONS, $(du -sh --one-file-system "$CHROOT" 2>/dev/null | cut -f1)"

step copy-source copy_source
step host-trust copy_host_trust

# Shader variants compiled for KHR cooperative matrices (RADV's path to WMMA: the "_cm1"
# names vulkan-shaders-gen gives them) and for NV coopmat2 ("_cm2", NVIDIA only).
count_shaders() {  # count_shaders BUILD_DIR SUFFIX
  find "$CHROOT$1" -path '*/vulkan-shaders.spv/*' -name "*$2*.spv" | wc -l
}

# ---- 2. build -----------------------------------------------------------------------------
if [ "$QUICK" = 1 ]; then
  BUILD_DIR=/build/quick
  step configure in_chroot sh -c "cmake -S /build/src -B $BUILD_DIR -G Ninja -DCMAKE_BUILD_TYPE=Release -DROCM_INFER_GPU=vulkan"
  grep -q "GL_KHR_cooperative_matrix supported by glslc" "$STEP_LOG" \
    || fail "glslc in the chroot does not support GL_KHR_cooperative_matrix: the build would have no coopmat shaders"
  STEP="build-record"
  python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("vulkan_coopmat") is not True)' \
    "$CHROOT$BUILD_DIR/build_config.json" || fail "build_config.json does not record vulkan_coopmat: true"
  # ninja would build every shader first (each object of ggml-vulkan waits for all of the
  # target's generated sources), so the object is compiled by its own command, after the
  # shader header and the one shader file it is checked with.
  quick_compile() {
    local vk=llama.cpp/ggml/src/ggml-vulkan
    local object="$vk/CMakeFiles/ggml-vulkan.dir/ggml-vulkan.cpp.o"
    in_chroot nice -n 19 ninja -C "$BUILD_DIR" -j "$JOBS" "$vk/ggml-vulkan-shaders.hpp" "$vk/flash_attn_cm1.comp.cpp"
    chroot "$CHROOT" ninja -C "$BUILD_DIR" -t commands "$object" | tail -n1 >"$CHROOT/build/quick-object.sh"
    grep -q -- "-DGGML_VULKAN_COOPMAT_GLSLC_SUPPORT" "$CHROOT/build/quick-object.sh" \
      || { echo "ggml-vulkan.cpp is not compiled with GGML_VULKAN_COOPMAT_GLSLC_SUPPORT"; return 1; }
    # current when the same command already built it from the same source and shader header
    if cmp -s "$CHROOT/build/quick-object.sh" "$CHROOT/build/quick-object.done" \
       && [ "$CHROOT$BUILD_DIR/$object" -nt "$CHROOT/build/src/vendor/llama.cpp/ggml/src/ggml-vulkan/ggml-vulkan.cpp" ] \
       && [ "$CHROOT$BUILD_DIR/$object" -nt "$CHROOT$BUILD_DIR/$vk/ggml-vulkan-shaders.hpp" ]; then
      echo "$object is current"
      return 0
    fi
    in_chroot nice -n 19 sh -c "cd $BUILD_DIR && sh /build/quick-object.sh && test -s $object"
    cp "$CHROOT/build/quick-object.sh" "$CHROOT/build/quick-object.done"
  }
  step compile quick_compile
else
  BUILD_DIR=/build/package-build
  step build-package in_chroot nice -n 19 sh -c "
    set -e
    [ -x /build/venv/bin/python ] || python3 -m venv /build/venv
    . /build/venv/bin/activate
    python -m pip install --quiet --upgrade pip
    cd /build/src
    CMAKE_BUILD_PARALLEL_LEVEL=$JOBS SKBUILD_BUILD_DIR=$BUILD_DIR ROCM_INFER_GPU=vulkan \
      python -m pip install -r requirements.txt"
fi
COOPMAT=$(count_shaders "$BUILD_DIR" _cm1)
COOPMAT2=$(count_shaders "$BUILD_DIR" _cm2)
[ "$COOPMAT" -gt 0 ] || fail "no cooperative-matrix (_cm1) shader was generated in $BUILD_DIR"
SHADER_SUMMARY="coopmat_shaders=$COOPMAT coopmat2_shaders=$COOPMAT2"
say "$SHADER_SUMMARY"

# ---- 3. full mode: run it on lavapipe -----------------------------------------------------
DEVICE="none (quick mode runs nothing)"
TOKENS_SUMMARY=""
if [ "$QUICK" = 0 ]; then
  step vulkaninfo in_chroot vulkaninfo --summary
  DEVICE=$(sed -n 's/^[[:space:]]*deviceName[[:space:]]*=[[:space:]]*//p' "$STEP_LOG" | head -n1)
  [ -n "$DEVICE" ] || fail "vulkaninfo lists no Vulkan device in the chroot"
  # This machine's CPU build: the checkout's code where its lib/ holds the build (an
  # in-place or symlinked install), else whatever rocm_infer this Python imports
  if [ -e "$ROOT/src/rocm_infer/lib/libllama.so" ]; then
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
  fi
  STEP="host-model"
  MODEL=$(python3 -c 'from rocm_infer.models import default_model_path; print(default_model_path())' 2>/dev/null) \
    || fail "this machine's Python cannot import rocm_infer: install the CPU build first (pip install -r requirements.txt)"
  mkdir -p "$CHROOT/build/models"
  cp -u "$MODEL" "$CHROOT/build/models/model.gguf"
  step lavapipe in_chroot /build/venv/bin/python /build/src/scripts/vulkan_device_checks.py \
    --model /build/models/model.gguf --json /build/vulkan-greedy.json
  cat "$STEP_LOG" >&2
  step cpu-greedy python3 "$ROOT/scripts/greedy_tokens.py" --model "$MODEL" --json "$LOG_DIR/cpu-greedy.json"
  STEP="compare-greedy"
  STEP_LOG="$LOG_DIR/compare-greedy.log"
  python3 "$ROOT/scripts/greedy_tokens.py" --model "$MODEL" --compare-near-tie \
    "$CHROOT/build/vulkan-greedy.json" "$LOG_DIR/cpu-greedy.json" \
    | tee "$STEP_LOG" >&2 || fail "the Vulkan build's greedy tokens differ from the CPU build's beyond a near-tie"
  TOKENS_SUMMARY=" tokens_agree=yes ($(tail -n1 "$STEP_LOG"))"
fi

echo "check_vulkan_build: OK mode=$MODE device=\"$DEVICE\" $SHADER_SUMMARY$TOKENS_SUMMARY seconds=$(( $(date +%s) - START ))"
exit 0
}
