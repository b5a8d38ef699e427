#!/usr/bin/env bash
# The one run a user with a Radeon card does to accept rocm_infer on it, and one markdown
# report of what it measured.
#
#   bash scripts/amd_acceptance.sh --dry-run     # prints the plan and the whole matrix, runs nothing
#   bash scripts/amd_acceptance.sh               # all of it (hours on an RX 7800 XT: 8B models, 12 bench runs)
#
# Steps: `rocm-infer doctor`; the HIP build (targets gfx1100;gfx1101, so that
# HSA_OVERRIDE_GFX_VERSION=11.0.0 has code to run) and the Vulkan build, each in its own
# virtual environment under the work folder, built only when missing; the models
# (Qwen3-8B, Gemma3-4B, Llama-3.1-8B Q4_K_M from ROCM_MODEL_DIR when present, otherwise
# random-weight stand-ins of their shapes written by scripts/make_random_model.py and
# labelled so); then `rocm-infer bench --flash-attn both` on both backends (in-process and
# llama-server) for every model, build and override (the override only means something to
# HIP, so Vulkan runs it unset); finally OUT/report.md (python -m rocm_infer.bench.acceptance)
# with the plots beside it. A bench that fails (an override the card refuses) is a row of
# the report, not the end of the run.
#
# Options:
#   --dry-run            print every step, run none
#   --out DIR            where runs.tsv, json/, plots/ and report.md go (default: acceptance-out)
#   --work DIR           virtual environments and stand-in models (default: ~/.cache/rocm-infer/acceptance)
#   --builds LIST        hip,vulkan (default), or "current": the rocm-infer already installed, nothing built
#   --overrides LIST     HSA_OVERRIDE_GFX_VERSION values for HIP builds (default: unset,11.0.0,11.0.1)
#   --model PATH         bench this model instead of the three (repeatable)
#   --quick              pass --quick to each bench
#   --bench-args "ARGS"  more options for each bench (e.g. "--streams 1,4,16")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

DRY_RUN=0
OUT="acceptance-out"
WORK="${HOME}/.cache/rocm-infer/acceptance"
BUILDS="hip,vulkan"
OVERRIDES="unset,11.0.0,11.0.1"
MODELS=()
BENCH_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --out) OUT="$2"; shift ;;
    --work) WORK="$2"; shift ;;
    --builds) BUILDS="$2"; shift ;;
    --overrides) OVERRIDES="$2"; shift ;;
    --model) MODELS+=("$2"); shift ;;
    --quick) BENCH_ARGS+=(--quick) ;;
    --bench-args) read -r -a extra <<< "$2"; BENCH_ARGS+=("${extra[@]}"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# say CMD...: print it; run it unless --dry-run
say() { printf '+ %s\n' "$*"; }
run() { say "$@"; [ "$DRY_RUN" = 1 ] || "$@"; }

# The three models of the seed: a file name pattern in ROCM_MODEL_DIR, and the shape of
# the stand-in (make_random_model.py flags: llama architecture, that model's depth, width,
# heads, KV heads and feed-forward size, Q4_K_M layout).
declare -A PATTERN=(
  [qwen3-8b]='*[Qq]wen3-8[Bb]*[Qq]4_[Kk]_[Mm]*.gguf'
  [gemma3-4b]='*[Gg]emma-3-4[Bb]*[Qq]4_[Kk]_[Mm]*.gguf'
  [llama-3.1-8b]='*[Ll]lama-3.1-8[Bb]*[Qq]4_[Kk]_[Mm]*.gguf'
)
declare -A SHAPE=(
  [qwen3-8b]='--preset llama-3.1-8b --layers 36 --embd 4096 --heads 32 --kv-heads 8 --ff 12288'
  [gemma3-4b]='--preset llama-3.1-8b --layers 34 --embd 2560 --heads 8 --kv-heads 4 --ff 10240'
  [llama-3.1-8b]='--preset llama-3.1-8b'
)
MODEL_PATHS=()
MODEL_LABELS=()
if [ ${#MODELS[@]} -gt 0 ]; then
  for m in "${MODELS[@]}"; do MODEL_PATHS+=("$m"); MODEL_LABELS+=("$(basename "$m" .gguf)"); done
else
  for name in qwen3-8b gemma3-4b llama-3.1-8b; do
    found=""
    if [ -n "${ROCM_MODEL_DIR:-}" ] && [ -d "${ROCM_MODEL_DIR}" ]; then
      found=$(find "$ROCM_MODEL_DIR" -name "${PATTERN[$name]}" ! -name '*-0000[2-9]-of-*' 2>/dev/null | sort | head -n 1)
    fi
    if [ -n "$found" ]; then
      MODEL_PATHS+=("$found"); MODEL_LABELS+=("$(basename "$found" .gguf)")
    else
      MODEL_PATHS+=("$WORK/models/$name-shape-random.gguf"); MODEL_LABELS+=("$name Q4_K_M shape (stand-in)")
    fi
  done
fi

IFS=, read -r -a BUILD_LIST <<< "$BUILDS"
IFS=, read -r -a OVERRIDE_LIST <<< "$OVERRIDES"
echo "# AMD acceptance plan"
echo "builds: ${BUILD_LIST[*]}; HSA_OVERRIDE_GFX_VERSION (HIP only): ${OVERRIDE_LIST[*]}; flash attention: on, off"
for i in "${!MODEL_PATHS[@]}"; do echo "model: ${MODEL_LABELS[$i]} = ${MODEL_PATHS[$i]}"; done
echo "output: $OUT/report.md"

run mkdir -p "$OUT/json" "$OUT/plots"
[ "$DRY_RUN" = 1 ] || : > "$OUT/runs.tsv"

echo "## doctor"
say "rocm-infer doctor > $OUT/doctor.txt"
[ "$DRY_RUN" = 1 ] || rocm-infer doctor > "$OUT/doctor.txt" 2>&1 || true  # exit 1 without a GPU: still a report

echo "## stand-in models (only those not found in ROCM_MODEL_DIR)"
for i in "${!MODEL_PATHS[@]}"; do
  case "${MODEL_LABELS[$i]}" in
    *"(stand-in)")
      name=$(basename "${MODEL_PATHS[$i]}" -shape-random.gguf)
      if [ ! -f "${MODEL_PATHS[$i]}" ]; then
        run mkdir -p "$WORK/models"
        # shellcheck disable=SC2086  # the shape is a list of flags
        run python3 scripts/make_random_model.py ${SHAPE[$name]} --out "${MODEL_PATHS[$i]}"
      fi ;;
  esac
done

echo "## builds"
# Each build gets its own virtual environment and CMake build folder (SKBUILD_BUILD_DIR),
# so the HIP and Vulkan builds never overwrite each other.
rocm_infer_of() { [ "$1" = current ] && echo rocm-infer || echo "$WORK/venv-$1/bin/rocm-infer"; }
for build in "${BUILD_LIST[@]}"; do
  [ "$build" = current ] && continue
  venv="$WORK/venv-$build"
  if [ "$DRY_RUN" = 0 ] && [ -x "$venv/bin/rocm-infer" ] && "$venv/bin/rocm-infer" build-info --json | grep -q "\"gpu_backend\": \"$build\""; then
    echo "$build build: present in $venv"
    continue
  fi
  run python3 -m venv --system-site-packages "$venv"
  if [ "$build" = hip ]; then
    say "PATH=$venv/bin:\$PATH AMDGPU_TARGETS='gfx1100;gfx1101' SKBUILD_BUILD_DIR=build/acceptance-hip bash scripts/build_hip.sh"
    [ "$DRY_RUN" = 1 ] || PATH="$venv/bin:$PATH" AMDGPU_TARGETS='gfx1100;gfx1101' SKBUILD_BUILD_DIR=build/acceptance-hip bash scripts/build_hip.sh
  else
    say "ROCM_INFER_GPU=$build SKBUILD_BUILD_DIR=build/acceptance-$build $venv/bin/pip install -r requirements.txt"
    [ "$DRY_RUN" = 1 ] || ROCM_INFER_GPU="$build" SKBUILD_BUILD_DIR="build/acceptance-$build" "$venv/bin/pip" install -r requirements.txt
  fi
done

echo "## benchmarks"
for build in "${BUILD_LIST[@]}"; do
  cli=$(rocm_infer_of "$build")
  # the in-process backend of a HIP build is `rocm`; elsewhere `llama_cpp`
  backends=llama_cpp,llama_server
  overrides=(unset)
  if [ "$build" = hip ]; then backends=rocm,llama_server; overrides=("${OVERRIDE_LIST[@]}"); fi
  for i in "${!MODEL_PATHS[@]}"; do
    for override in "${overrides[@]}"; do
      tag="$build-$(basename "${MODEL_PATHS[$i]}" .gguf)-$override"
      json="$OUT/json/$tag.json"
      plot="$OUT/plots/$tag.png"
      env_part=(env -u HSA_OVERRIDE_GFX_VERSION)
      [ "$override" = unset ] || env_part=(env "HSA_OVERRIDE_GFX_VERSION=$override")
      status=0
      run "${env_part[@]}" "$cli" bench "${MODEL_PATHS[$i]}" --flash-attn both --backends "$backends" \
        --out "$json" --plot "$plot" "${BENCH_ARGS[@]}" || status=$?
      [ "$DRY_RUN" = 1 ] || printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$build" "${MODEL_LABELS[$i]}" "$override" "$json" "$plot" "$status" >> "$OUT/runs.tsv"
    done
  done
done

echo "## report"
say "python3 -m rocm_infer.bench.acceptance $OUT > $OUT/report.md"
if [ "$DRY_RUN" = 0 ]; then
  python3 -m rocm_infer.bench.acceptance "$OUT" > "$OUT/report.md"
  echo "wrote $OUT/report.md"
fi
