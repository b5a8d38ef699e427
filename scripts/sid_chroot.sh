# Shared by the build checks that need a newer Debian than this machine's (sourced, not run):
# a cached Debian sid chroot made with debootstrap, steps logged one file each, /proc and
# /dev mounted only while a step runs inside it and unmounted on every exit path.
#
# The sourcing script sets, before calling anything here:
#   CHECK_NAME  its name in messages (check_vulkan_build)
#   ROOT        the repository root;  CHROOT  the chroot's directory;  LOG_DIR  the step logs
# and then calls chroot_traps once.  `step NAME FUNCTION...` runs FUNCTION with its output
# in LOG_DIR/NAME.log and stops the script with the log's tail when it fails.

say() { echo "$CHECK_NAME: $*" >&2; }

STEP="setup"
STEP_LOG=""
fail() {
  say "FAILED at step '$STEP'${1:+: $1}"
  if [ -n "$STEP_LOG" ] && [ -s "$STEP_LOG" ]; then
    say "last lines of $STEP_LOG:"
    tail -n 40 "$STEP_LOG" | cut -c1-400 >&2  # compiler command lines run to kilobytes
  fi
  exit 1
}

mount_into() {  # mount_into ROOTFS: /proc and /dev for apt, compilers, Python and Vulkan
  mkdir -p "$1/proc" "$1/dev"
  mount -t proc proc "$1/proc"
  mount --bind /dev "$1/dev"
}

unmount_all() {
  # Everything mounted inside this chroot (or the one being made), deepest first; another
  # check's chroot in the same cache is another run's business.  A process still inside
  # (a compiler killed a moment later) keeps a mount busy: detach it lazily.
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

chroot_traps() {
  trap unmount_all EXIT
  trap 'say "interrupted"; exit 130' INT
  trap 'say "terminated"; exit 143' TERM
}

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

apt_mirror() {  # this machine's own apt mirror, never a hard-coded host
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

ensure_chroot() {  # ensure_chroot WHAT "PACKAGES" [SUITE]: make the chroot unless a finished one
  # is cached; PACKAGES come from SUITE (default sid; experimental adds its line to sid's)
  local what="$1" packages="$2" suite="${3:-sid}"
  [ -f "$CHROOT/.rocm-infer-ready" ] && return 0
  STEP="mirror"
  MIRROR="$(apt_mirror)"
  [ -n "$MIRROR" ] || fail "no Debian mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
  if ! curl -fsS --max-time 30 -o /dev/null "$MIRROR/dists/sid/Release"; then
    echo "SKIPPED: $CHECK_NAME: Debian's mirror $MIRROR cannot be reached (dists/sid/Release); the $what was not checked" >&2
    exit 3
  fi
  if ! command -v debootstrap >/dev/null; then
    step install-debootstrap sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap'
  fi
  step create-chroot _create_sid_chroot "$packages" "$suite"
}

_create_sid_chroot() {
  local partial="$CHROOT.partial"
  if [ -d "$partial" ]; then remove_tree "$partial"; fi
  debootstrap --variant=minbase --include=ca-certificates sid "$partial" "$MIRROR"
  echo 'Acquire::Check-Valid-Until "false";' >"$partial/etc/apt/apt.conf.d/99rocm-infer"
  {
    echo "deb $MIRROR sid main"
    if [ "$2" != sid ]; then echo "deb $MIRROR $2 main"; fi
  } >"$partial/etc/apt/sources.list"
  cp -L /etc/resolv.conf "$partial/etc/resolv.conf"
  mount_into "$partial"
  chroot "$partial" /usr/bin/env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin DEBIAN_FRONTEND=noninteractive \
    sh -c "apt-get update && apt-get install -y --no-install-recommends -t $2 $1 && apt-get clean"
  unmount_all
  mv "$partial" "$CHROOT"
  date -u +%FT%TZ >"$CHROOT/.rocm-infer-ready"
}

copy_source() {  # the working tree's tracked and unignored files plus the fetched llama.cpp
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
