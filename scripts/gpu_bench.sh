#!/usr/bin/env bash
# The fast-step comparison on an NVIDIA GPU (the stand-in for a Radeon in everything that
# is not AMD-specific), in one call of under 8 minutes on a 16-core machine with no network.
#
#   bash scripts/gpu_bench.sh --prepare    # here, with PyPI reachable: packs .gpu/ (~9 MB)
#   bash scripts/gpu_bench.sh --dry-run    # prints what a run does
#   bash scripts/gpu_bench.sh [OUT_DIR]    # on the GPU machine, .gpu/ carried next to the tree
#
# A run unpacks the trimmed llama.cpp source from .gpu/, builds this package's CMake with
# ROCM_INFER_GPU=cuda (CMAKE_CUDA_ARCHITECTURES, default 90) into build/cuda, installs the
# bindings-only llama-cpp-python, gguf and httpx-sse wheels from .gpu/wheels into a private
# folder, writes two random-weight models (scripts/make_random_model.py: the 2-layer tiny
# stand-in and the Llama-3.1-8B Q4_K_M shape), then runs `python -m rocm_infer.bench.sampling`
# on each (greedy, top-k, top-p-only; 1/4/16/64 streams; in-process with device and host
# sampling and with native decode runs off, llama-server with and without --backend-sampling,
# llama-batched-bench and llama-bench on the same build).  JSON and markdown land in OUT_DIR (default $OUT, else
# benchmarks/out/gpu).  Gemma 3 270M is not run there: its 250 MB PyPI package does not fit
# the 64 MiB a call can carry, and the machine cannot reach PyPI.
#
# GPU_BENCH_ONLY=serve runs what issues 17 and 18 measure, on the 8B shape and the same
# build (another call: the first one's ~8 minutes leave no room; a warm machine keeps the
# build): `benchmarks/serve_load.py` (rocm-infer serve against llama-server and the
# in-process library, 1/16/64 streaming clients, greedy and sampled) and
# `python -m rocm_infer.bench.prefix` (a shared 1,500-token prefix, a 4-turn chat, few-shot
# classify, one system prompt for 16 requests; in-process with and without the cache,
# llama-server with its cache) and `benchmarks/preemption.py` (16 streams with a generous
# max_tokens; a short request behind one asking for the whole context).  Its FastAPI stack
# travels as wheels in .gpu/wheels-serve (pydantic-core built for the machine's Python
# 3.12), installed only for this part.
#
# The environment narrows a run to what the device time allows: GPU_BENCH_ONLY (tiny,llama8b; or serve),
# GPU_BENCH_STREAMS (1,4,16,64), GPU_BENCH_CONTENDERS (the tiny run's, default all five),
# GPU_BENCH_8B_CONTENDERS (default in_process,in_process_host,server,server_backend_sampling),
# GPU_BENCH_SKIP_8B_AFTER_S (420: no 8B run once this many seconds have gone).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
PACK="$ROOT/.gpu"

prepare() {
  [ -f vendor/llama.cpp/CMakeLists.txt ] || { echo "vendor/llama.cpp is missing: run pip install -r requirements.txt first" >&2; exit 1; }
  rm -rf "$PACK" && mkdir -p "$PACK/wheels"
  # Only what this package's CMake reads: no docs, tests, examples, other GPU backends, or
  # vocabularies besides the Llama 3 one the random models take.
  tar -C vendor -cJf "$PACK/llama.cpp.tar.xz" \
    --exclude='llama.cpp/docs' --exclude='llama.cpp/tests' --exclude='llama.cpp/examples' \
    --exclude='llama.cpp/benches' --exclude='llama.cpp/conversion' --exclude='llama.cpp/.git*' \
    --exclude='llama.cpp/models/ggml-vocab-[a-km-z]*' --exclude='llama.cpp/models/ggml-vocab-llama-spm*' \
    --exclude='llama.cpp/models/*.inp' --exclude='llama.cpp/models/*.out' --exclude='llama.cpp/models/templates' \
    --exclude='llama.cpp/ggml/src/ggml-'{vulkan,sycl,opencl,cann,metal,hexagon,webgpu,openvino,et,virtgpu,musa,zdnn,kompute} \
    llama.cpp llama.cpp.stamp.json
  pip wheel --quiet --no-deps -w "$PACK/wheels" --no-binary llama-cpp-python \
    --config-settings=cmake.define.LLAMA_BUILD=OFF --config-settings=cmake.define.LLAVA_BUILD=OFF llama-cpp-python==0.3.36
  # llama_cpp imports diskcache at import time; the GPU machine has the rest (numpy, httpx, jinja2, rich)
  pip download --quiet --no-deps -d "$PACK/wheels" --only-binary=:all: gguf==0.19.0 httpx-sse==0.4.3 diskcache==5.6.3
  # rocm-infer serve, for GPU_BENCH_ONLY=serve only (apart: pydantic-core is built for the Python 3.12 there, and
  # another Python must not stop the other runs): pure-Python wheels and that one
  mkdir -p "$PACK/wheels-serve"
  pip download --quiet --no-deps -d "$PACK/wheels-serve" --only-binary=:all: fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 \
    pydantic==2.13.4 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 annotated-doc==0.0.7 \
    opentelemetry-api==1.45.2 click==8.4.0 h11==0.16.0 anyio==4.16.0 idna==3.20
  pip download --quiet --no-deps -d "$PACK/wheels-serve" --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 pydantic-core==2.46.4
  du -sh "$PACK"
}

run() {
  local out="$1" arch="${CMAKE_CUDA_ARCHITECTURES:-90}" site=/tmp/rocm-infer-site
  local py=python3 t0 failed=0; t0=$(date +%s)
  stamp() { echo "gpu_bench: $1 after $(( $(date +%s) - t0 )) s"; }
  mkdir -p "$out" vendor
  [ -f vendor/llama.cpp/CMakeLists.txt ] || tar -C vendor -xJf "$PACK/llama.cpp.tar.xz"
  local only="${GPU_BENCH_ONLY:-tiny,llama8b}" streams="${GPU_BENCH_STREAMS:-1,4,16,64}"
  local contenders="${GPU_BENCH_CONTENDERS:-in_process,in_process_host,in_process_stepwise,server,server_backend_sampling}"
  $py -m pip install -q --no-index --no-deps --no-compile --target "$site" "$PACK"/wheels/*.whl
  if [[ ",$only," == *,serve,* ]]; then
    [ -d "$PACK/wheels-serve" ] || { echo "gpu_bench: .gpu/wheels-serve is missing: run --prepare again here" >&2; exit 1; }
    $py -m pip install -q --no-index --no-deps --no-compile --target "$site" "$PACK"/wheels-serve/*.whl
  fi
  export PYTHONPATH="$site:$ROOT/src" PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
  cmake -S . -B build/cuda -G Ninja -DROCM_INFER_GPU=cuda -DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA_COMPRESSION_MODE=none > /tmp/rocm-infer-configure.log  # a bench build: size does not matter, compile time does
  cmake --build build/cuda --target rocm_infer_native -j "$(nproc)" > /tmp/rocm-infer-build.log 2>&1 || { tail -30 /tmp/rocm-infer-build.log; exit 1; }
  cmake --install build/cuda --component rocm_infer --prefix build/cuda/install > /dev/null
  for part in lib bin build_config.json; do ln -sfn "$ROOT/build/cuda/install/rocm_infer/$part" "src/rocm_infer/$part"; done
  stamp "built"
  local vocab=vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf models=/tmp/rocm-infer-models
  mkdir -p "$models"
  # ~5 GB, made once per machine; written aside and renamed, so a call stopped mid-write leaves no half model
  make_8b() {
    [ -f "$models/llama8b.gguf" ] && return
    $py scripts/make_random_model.py --preset llama-3.1-8b --vocab-from "$vocab" --out "$models/llama8b.part.gguf" &&
      mv "$models/llama8b.part.gguf" "$models/llama8b.gguf"
  }
  if [[ ",$only," == *,serve,* ]]; then
    make_8b
    # its rows go to stderr (the log), the ratios to stdout
    $py benchmarks/serve_load.py --model "$models/llama8b.gguf" --clients 1,16,64 --max-tokens 64 \
      --out "$out/serve_load.json" > "$out/serve_load_ratios.txt" 2> "$out/serve_load.log" || { tail -20 "$out/serve_load.log"; failed=1; }
    stamp "serve_load done"
    $py -m rocm_infer.bench.prefix --model "$models/llama8b.gguf" --out "$out/prefix.json" > "$out/prefix.md" \
      2> "$out/prefix.log" || { tail -20 "$out/prefix.log"; failed=1; }
    stamp "prefix workloads done"
    $py benchmarks/preemption.py --model "$models/llama8b.gguf" > "$out/preemption.json" 2> "$out/preemption.log" ||
      { tail -20 "$out/preemption.log"; failed=1; }
    stamp "preemption workloads done"
  fi
  if [[ ",$only," == *,tiny,* ]]; then
    $py scripts/make_random_model.py --preset tiny --vocab-from "$vocab" --out "$models/tiny.gguf"
    $py -m rocm_infer.bench.sampling --model "$models/tiny.gguf" --streams "$streams" \
      --contenders "$contenders" --out "$out/tiny.json" 2> "$out/tiny.log" || { tail -20 "$out/tiny.log"; failed=1; }
    stamp "tiny stand-in done"
  fi
  [[ ",$only," == *,llama8b,* ]] || return "$failed"
  if [ $(( $(date +%s) - t0 )) -gt "${GPU_BENCH_SKIP_8B_AFTER_S:-420}" ]; then
    echo "gpu_bench: no time left in this call for the 8B shape; run the script again (the build is kept)"
    return "$failed"
  fi
  make_8b
  $py -m rocm_infer.bench.sampling --model "$models/llama8b.gguf" --streams "$streams" \
    --contenders "${GPU_BENCH_8B_CONTENDERS:-in_process,in_process_host,server,server_backend_sampling}" --out "$out/llama8b.json" 2> "$out/llama8b.log" || { tail -20 "$out/llama8b.log"; failed=1; }
  stamp "Llama-3.1-8B shape done"
  return "$failed"
}

case "${1:-}" in
  --prepare) prepare ;;
  --dry-run) sed -n '/^run() {/,/^}/p' "${BASH_SOURCE[0]}" ;;
  *) run "${1:-${OUT:-benchmarks/out/gpu}}" ;;
esac
