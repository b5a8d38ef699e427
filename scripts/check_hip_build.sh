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
READY_STAMP="$CHROOT/.rocm-infer-ready"
LOG_DIR="$CACHE_DIR/logs-rocm$ROCM"
MODE=$([ "$QUICK" = 1 ] && echo quick || echo full)
START=$(date +%s)
STEP="setup"
STEP_LOG=""
mkdir -p "$CACHE_DIR" "$LOG_DIR"
# One run per chroot at a time: a second would replace the source under a running build.
exec 9>"$CACHE_DIR/lock-rocm$ROCM"
if ! flock -n 9; then
  echo "check_hip_build: another run is using $CHROOT; waiting for it" >&2
  flock 9
fi

say() { echo "check_hip_build: $*" >&2; }

fail() {
  say "FAILED at step '$STEP'${1:+: $1}"
  if [ -n "$STEP_LOG" ] && [ -s "$STEP_LOG" ]; then
    say "last lines of $STEP_LOG:"
    tail -n 40 "$STEP_LOG" | cut -c1-400 >&2  # compiler command lines run to kilobytes
  fi
  exit 1
}

# ---- mounts: only while a step runs inside the chroot, always undone -----------------
mount_into() {  # mount_into ROOTFS: /proc and /dev for apt, compilers and Python
  mkdir -p "$1/proc" "$1/dev"
  mount -t proc proc "$1/proc"
  mount --bind /dev "$1/dev"
}
unmount_all() {
  # Everything mounted inside this run's chroot (or the one being made), deepest first:
  # ours, and whatever an interrupted debootstrap left behind; another ROCm version's
  # chroot in the same cache is another run's business.  A process still inside (a
  # compiler killed a moment later) keeps a mount busy: detach it lazily.
  local mnt
  findmnt -rn -o TARGET | { grep -F -e "$CHROOT/" -e "$CHROOT.partial/" || true; } | sort -r | while read -r mnt; do
    umount "$mnt" 2>/dev/null || umount -l "$mnt" || say "could not unmount $mnt"
  done
}
remove_tree() {  # never through a live mount: a bind-mounted /dev deleted is the host's /dev
  unmount_all
  if findmnt -rn -o TARGET | grep -qF "$1/"; then
    fail "refusing to delete $1: something is still mounted inside it"
  fi
  rm -rf --one-file-system "$1"
}
trap unmount_all EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

step() {  # step NAME COMMAND...: run with its output in LOG_DIR/NAME.log
  STEP="$1"; shift
  STEP_LOG="$LOG_DIR/$STEP.log"
  local t0 rc
  t0=$(date +%s)
  say "$STEP ..."
  # A subshell outside any `if`, so that `set -e` holds inside the step's functions.
  set +e
  ( trap unmount_all EXIT; set -e; "$@" ) >"$STEP_LOG" 2>&1
  rc=$?
  set -e
  [ "$rc" = 0 ] || fail "exit status $rc"
  say "$STEP done in $(( $(date +%s) - t0 )) s"
}

in_chroot() {  # in_chroot COMMAND...: a login-like environment, /proc and /dev mounted
  mount_into "$CHROOT"
  chroot "$CHROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    LANG=C.UTF-8 TERM=dumb "$@"
  unmount_all
}

# ---- the mirror: this machine's own apt sources, never a hard-coded host ---------------
apt_mirror() {
  local uri=""
  if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
    uri=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/*.sources \
          | grep -v -- '-security' | head -n1)
  fi
  if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
    uri=$(sed -n 's/\[[^]]*\]//; s/^deb[[:space:]]\+\([^[:space:]]\+\).*/\1/p' /etc/apt/sources.list \
          | grep -v -- '-security' | head -n1)
  fi
  echo "${uri%/}"
}

create_chroot() {
  local partial="$CHROOT.partial" packages
  if [ -d "$partial" ]; then remove_tree "$partial"; fi
  debootstrap --variant=minbase --include=ca-certificates sid "$partial" "$MIRROR"
  echo 'Acquire::Check-Valid-Until "false";' >"$partial/etc/apt/apt.conf.d/99rocm-infer"
  {
    echo "deb $MIRROR sid main"
    if [ "$SUITE_FOR_ROCM" = experimental ]; then echo "deb $MIRROR experimental main"; fi
  } >"$partial/etc/apt/sources.list"
  cp -L /etc/resolv.conf "$partial/etc/resolv.conf"
  packages="hipcc libamdhip64-dev librocblas-dev libhipblas-dev rocm-cmake cmake ninja-build g++ make"
  packages="$packages python3 python3-venv python3-pip"
  mount_into "$partial"
  chroot "$partial" /usr/bin/env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin DEBIAN_FRONTEND=noninteractive \
    sh -c "apt-get update && apt-get install -y --no-install-recommends -t $SUITE_FOR_ROCM $packages && apt-get clean"
  unmount_all
  mv "$partial" "$CHROOT"
  date -u +%FT%TZ >"$READY_STAMP"
}

# ---- the source: the working tree's tracked files plus the fetched llama.cpp ----------
copy_source() {
  local dest="$CHROOT/build/src"
  rm -rf --one-file-system "$dest"
  mkdir -p "$dest"
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
     | tar --null -T - -cf - $( [ -f vendor/llama.cpp.stamp.json ] && echo vendor )) \
    | tar -xf - -C "$dest"
}

# The chroot trusts what this machine trusts: a site's own CAs (a TLS-inspecting proxy in
# front of PyPI) live in /usr/local/share/ca-certificates on Debian-like hosts.
copy_host_trust() {
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$CHROOT/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$CHROOT/usr/local/share/ca-certificates/"
    in_chroot update-ca-certificates
  fi
  cp -L /etc/resolv.conf "$CHROOT/etc/resolv.conf"
}

# ---- 1. the chroot ----------------------------------------------------------------------
if [ "$FRESH" = 1 ] && [ -d "$CHROOT" ]; then
  STEP="fresh"; remove_tree "$CHROOT"
fi
if [ ! -f "$READY_STAMP" ]; then
  STEP="mirror"
  MIRROR="$(apt_mirror)"
  [ -n "$MIRROR" ] || fail "no Debian mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
  if ! curl -fsS --max-time 30 -o /dev/null "$MIRROR/dists/sid/Release"; then
    echo "SKIPPED: check_hip_build: Debian's mirror $MIRROR cannot be reached (dists/sid/Release); the HIP build was not checked" >&2
    exit 3
  fi
  if ! command -v debootstrap >/dev/null; then
    step install-debootstrap sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap'
  fi
  step create-chroot create_chroot
fi
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
