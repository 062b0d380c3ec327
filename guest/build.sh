#!/usr/bin/env bash
# Builds the tiny Roamdesk guest from Debian packages only, once, into a cache:
#
#   <out>/<kernel-package>/vmlinuz         Debian *cloud* kernel (ext4, serial console, VT, ACPI built in)
#   <out>/<kernel-package>/initramfs.cpio  uncompressed newc: static busybox, 8 modules, /init = guest/init.sh
#   <out>/<kernel-package>/disk.qcow2      empty ext4 data disk (1 GiB virtual, label "roamdesk"), ~1 MiB file
#   <out>/<kernel-package>/guest.json      absolute paths + default kernel command line, for tests and tools
#   <out>/current -> <kernel-package>
#
# <out> is <repo>/.cache/guest unless --out DIR is given (relative to the current directory).
# When the cache is valid the script exits in well under 0.2 s; otherwise the build takes a few seconds.
# One summary line goes to stderr; stdout stays empty. See guest/README.md.
#
# Usage: guest/build.sh [--out DIR] [--force]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export PATH="$PATH:/usr/sbin:/sbin"   # mkfs.ext4 lives in /sbin, which non-root users often lack in PATH
export LC_ALL=C

# The kernel command line every consumer should start from; the workload (roamdesk.workload=...) is added
# per boot. panic=-1: if /init ever dies, the kernel reboots at once and QEMU (-no-reboot) exits instead of
# hanging on a panic screen.
APPEND="console=ttyS0 quiet panic=-1"
META_PKG=linux-image-cloud-amd64
# insmod order inside the guest (dependencies first; verified against each .ko's depends= below).
MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk evdev button)
# Files baked into the outputs: editing any of them must invalidate the cache.
INPUTS=("$HERE/build.sh" "$HERE/init.sh" "$HERE/acpi-power-button.sh")
BUSYBOX=/bin/busybox

say() { printf 'roamdesk guest: %s\n' "$*" >&2; }
die() { printf 'roamdesk guest: error: %s\n' "$*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
T0=$(now_ms)

OUT_BASE="$ROOT/.cache/guest"
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT_BASE=$2; shift 2 ;;
    --out=*) OUT_BASE=${1#--out=}; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (usage: guest/build.sh [--out DIR] [--force])" ;;
  esac
done
mkdir -p "$OUT_BASE"
OUT_BASE=$(cd "$OUT_BASE" && pwd)   # absolute: guest.json holds absolute paths

# ---- 1. Which kernel package? -------------------------------------------------------------------------
# The archive rotates kernel ABIs (…-47 … -56 …), so the cloud meta-package is resolved at build time.
# apt-cache takes ~0.8 s here (Docker images disable apt's pkgcache), too slow for the cached path, so the
# answer is remembered together with a fingerprint of the apt lists/config it came from.
apt_fingerprint() {
  shopt -s nullglob
  local files=(/var/lib/apt/lists/*_Packages* /etc/apt/sources.list /etc/apt/sources.list.d/* \
               /etc/apt/preferences /etc/apt/preferences.d/*)
  shopt -u nullglob
  { echo "$(dpkg --print-architecture 2>/dev/null)"; stat -c '%n %s %Y' "${files[@]}" 2>/dev/null || true; } \
    | sha256sum | cut -c1-64
}
have_apt_lists() { compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; }
RESOLVED="$OUT_BASE/.kernel-package"   # "<fingerprint> <package>"

resolve_pkg() {
  local fp memo pkg
  fp=$(apt_fingerprint)
  memo=$(cat "$RESOLVED" 2>/dev/null || true)
  if [ "${memo%% *}" = "$fp" ] && [ -n "${memo#* }" ] && [ "${memo#* }" != "$memo" ]; then
    echo "${memo#* }"; return 0
  fi
  have_apt_lists || return 0
  pkg=$(apt-cache depends "$META_PKG" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}' || true)
  if [ -n "$pkg" ]; then echo "$fp $pkg" > "$RESOLVED.tmp.$$" && mv -f "$RESOLVED.tmp.$$" "$RESOLVED"; fi
  echo "$pkg"
}

# ---- 2. The cache key: kernel package + every input file + busybox + where the outputs live -----------
input_hash() {
  { for f in "${INPUTS[@]}"; do sha256sum "$f"; done
    sha256sum "$BUSYBOX" 2>/dev/null || echo "no busybox"
  } | sed "s#  $HERE/#  guest/#" | sha256sum | cut -c1-64
}
INPUT_HASH=$(input_hash)
key_for() { printf 'v1 %s %s %s\n' "$1" "$INPUT_HASH" "$OUT_BASE/$1" | sha256sum | cut -c1-64; }

cache_valid() {   # cache_valid PKG: the build for PKG exists, is complete and matches the current inputs
  local d="$OUT_BASE/$1" f
  for f in vmlinuz initramfs.cpio disk.qcow2 guest.json cache-key; do [ -s "$d/$f" ] || return 1; done
  [ "$(cat "$d/cache-key")" = "$(key_for "$1")" ]
}
point_current() {   # atomically repoint <out>/current at PKG (relative link, so the tree can be moved)
  local pkg=$1
  [ "$(readlink "$OUT_BASE/current" 2>/dev/null || true)" = "$pkg" ] && return 0
  ln -sfn "$pkg" "$OUT_BASE/.current.tmp.$$"
  mv -Tf "$OUT_BASE/.current.tmp.$$" "$OUT_BASE/current"
}
summary_cached() { say "up to date: $1 -> $OUT_BASE/current ($(( $(now_ms) - T0 )) ms)"; }

PKG=$(resolve_pkg)
if [ -z "$PKG" ]; then
  # No package lists. If a valid build already exists we do not need the network at all.
  CUR=$(readlink "$OUT_BASE/current" 2>/dev/null || true)
  if [ "$FORCE" = 0 ] && [ -n "$CUR" ] && cache_valid "$CUR"; then summary_cached "$CUR"; exit 0; fi
  if have_apt_lists; then
    die "apt knows no '$META_PKG' (not Debian amd64, or no 'main' component in the apt sources?)"
  fi
  if [ "$(id -u)" -ne 0 ]; then
    die "the apt package lists are empty, so the kernel package cannot be resolved. Run as root: sudo apt-get update   then run guest/build.sh again"
  fi
  say "apt package lists are empty: running apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed"
  PKG=$(resolve_pkg)
  [ -n "$PKG" ] || die "apt knows no '$META_PKG' even after apt-get update"
fi
[[ $PKG =~ ^linux-image-[A-Za-z0-9.+-]+$ ]] || die "unexpected kernel package name '$PKG'"

# ---- 3. Fast path ----------------------------------------------------------------------------------
if [ "$FORCE" = 0 ] && cache_valid "$PKG"; then point_current "$PKG"; summary_cached "$PKG"; exit 0; fi

# ---- 4. Build (one builder at a time; a second one waits, then finds the cache valid) -----------------
exec 9>"$OUT_BASE/.lock"
flock 9
if [ "$FORCE" = 0 ] && cache_valid "$PKG"; then point_current "$PKG"; summary_cached "$PKG"; exit 0; fi

for tool in apt-get dpkg-deb tar cpio mkfs.ext4 qemu-img truncate od; do
  command -v "$tool" >/dev/null || die "'$tool' is missing (run scripts/setup.sh, or: apt-get install -y --no-install-recommends qemu-utils busybox-static cpio e2fsprogs)"
done

# busybox must be the static build: the initramfs has no libc and no dynamic loader.
# `file` may be missing, so read the ELF program headers with od: a PT_INTERP entry means dynamic.
is_static_elf() {
  local f=$1 phoff phentsize phnum i type
  [ "$(od -An -c -N4 "$f" | tr -d ' ')" = '177ELF' ] || return 1
  [ "$(od -An -tu1 -j4 -N1 "$f" | tr -d ' ')" = 2 ] || return 1   # ELFCLASS64
  phoff=$(od -An -tu8 -j32 -N8 "$f" | tr -d ' ')
  phentsize=$(od -An -tu2 -j54 -N2 "$f" | tr -d ' ')
  phnum=$(od -An -tu2 -j56 -N2 "$f" | tr -d ' ')
  for ((i = 0; i < phnum; i++)); do
    type=$(od -An -tu4 -j $((phoff + i * phentsize)) -N4 "$f" | tr -d ' ')
    [ "$type" = 3 ] && return 1   # PT_INTERP
  done
  return 0
}
[ -x "$BUSYBOX" ] || die "$BUSYBOX is missing: apt-get install -y --no-install-recommends busybox-static"
is_static_elf "$BUSYBOX" || die "$BUSYBOX is dynamically linked: install busybox-static (it replaces busybox)"

TMP=$(mktemp -d "$OUT_BASE/.build.XXXXXX")   # same filesystem as the final dir, so rename is atomic
trap 'rm -rf "$TMP"' EXIT
chmod 755 "$TMP"
mkdir -p "$TMP/deb" "$TMP/x" "$TMP/out" "$TMP/seed"
chmod 777 "$TMP/deb"   # apt-get download drops privileges to the _apt user, which must be able to write here

# 4a. Kernel: download the .deb, extract only what we need.
if ! (cd "$TMP/deb" && apt-get download -q "$PKG") >"$TMP/apt.log" 2>&1; then
  cat "$TMP/apt.log" >&2
  die "apt-get download $PKG failed (stale lists? try: apt-get update)"
fi
DEB=$(ls "$TMP"/deb/*.deb)
# Patterns that match nothing (e.g. a module that became built-in) make tar complain; that is checked
# explicitly below, so tar's status is not trusted here.
dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$TMP/x" --wildcards \
  './boot/vmlinuz-*' './lib/modules/*/modules.builtin' \
  '*/drivers/virtio/*.ko' '*/drivers/block/virtio_blk.ko' '*/drivers/acpi/button.ko' '*/drivers/input/evdev.ko' \
  2>"$TMP/tar.log" || true
VMLINUZ=$(ls "$TMP"/x/boot/vmlinuz-* 2>/dev/null | head -n 1)
[ -n "$VMLINUZ" ] || { cat "$TMP/tar.log" >&2; die "no /boot/vmlinuz-* in $DEB"; }
KREL=${VMLINUZ##*/vmlinuz-}
BUILTIN=$(ls "$TMP"/x/lib/modules/*/modules.builtin 2>/dev/null | head -n 1 || true)

# 4b. Initramfs tree.
R="$TMP/root"
mkdir -p "$R"/{bin,dev,proc,sys,run,mnt,tmp,etc/acpi/PWRF,lib/modules}
cp "$BUSYBOX" "$R/bin/busybox"
install -m 755 "$HERE/init.sh" "$R/init"
install -m 755 "$HERE/acpi-power-button.sh" "$R/etc/acpi/PWRF/00000080"   # busybox acpid: PWRF event
loaded=()
for m in "${MODULES[@]}"; do
  ko=$(find "$TMP/x" -name "$m.ko" | head -n 1)
  if [ -z "$ko" ]; then
    if [ -n "$BUILTIN" ] && grep -q "/$m\.ko\$" "$BUILTIN"; then continue; fi   # built into this kernel
    die "module $m.ko is neither in $PKG nor built in"
  fi
  # Every dependency must be loaded earlier (or be built in): there is no modprobe in the guest.
  deps=$(grep -a -o 'depends=[A-Za-z0-9_,-]*' "$ko" | head -n 1 | cut -d= -f2 | tr ',' ' ')
  for d in $deps; do
    case " ${loaded[*]} " in *" $d "*) ;; *)
      if [ -n "$BUILTIN" ] && grep -q "/$d\.ko\$" "$BUILTIN"; then continue; fi
      die "module order: $m needs $d, which is not loaded before it (update MODULES in guest/build.sh)" ;;
    esac
  done
  cp "$ko" "$R/lib/modules/"
  loaded+=("$m")
done
printf '%s\n' "${loaded[@]}" > "$R/lib/modules/order"
# A /dev/console node lets the kernel give /init its stdio; only root can mknod (init.sh copes without).
if [ "$(id -u)" -eq 0 ]; then mknod -m 600 "$R/dev/console" c 5 1; fi
(cd "$R" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --quiet) > "$TMP/out/initramfs.cpio"
cp "$VMLINUZ" "$TMP/out/vmlinuz"

# 4c. Data disk: sparse 1 GiB raw -> ext4 -> qcow2 (zeros are skipped, so the file stays ~1 MiB).
# lazy_itable_init=0/lazy_journal_init=0: zero everything now, on the host, so the guest's ext4 does not
# start a background inode-table zeroing thread that would write into every overlay and cost TCG time.
cat > "$TMP/seed/README.txt" <<'EOF'
Roamdesk test disk. The guest's /init keeps its data in roamdesk/: gen-<n>.dat files and a manifest
with one line per generation: "<gen> <seed> <bytes> <sha256>". See guest/README.md in the repository.
EOF
truncate -s 1G "$TMP/disk.raw"
mkfs.ext4 -q -F -L roamdesk -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0 -d "$TMP/seed" "$TMP/disk.raw"
qemu-img convert -f raw -O qcow2 "$TMP/disk.raw" "$TMP/out/disk.qcow2"
rm -f "$TMP/disk.raw"

# 4d. guest.json with the final (absolute) paths, then the key: written last, it marks the dir complete.
FINAL="$OUT_BASE/$PKG"
json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
{
  printf '{\n'
  printf '  "kernelPackage": %s,\n' "$(json_str "$PKG")"
  printf '  "kernelRelease": %s,\n' "$(json_str "$KREL")"
  printf '  "vmlinuz": %s,\n' "$(json_str "$FINAL/vmlinuz")"
  printf '  "initrd": %s,\n' "$(json_str "$FINAL/initramfs.cpio")"
  printf '  "disk": %s,\n' "$(json_str "$FINAL/disk.qcow2")"
  printf '  "append": %s,\n' "$(json_str "$APPEND")"
  printf '  "builtAt": %s\n' "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
  printf '}\n'
} > "$TMP/out/guest.json"
key_for "$PKG" > "$TMP/out/cache-key"
sync "$TMP"/out/*   # durable before it becomes visible under the final name

# 4e. Publish: rename into place (rename(2) cannot replace a non-empty directory, so an outdated build
# is first moved aside into the temp dir, which the EXIT trap deletes), then repoint current.
if [ -e "$FINAL" ]; then mv -T "$FINAL" "$TMP/old"; fi
mv -T "$TMP/out" "$FINAL"
point_current "$PKG"
# Older kernels' builds are ours (they have a cache-key) and no longer current: remove them.
for d in "$OUT_BASE"/linux-image-*; do
  if [ "$d" != "$FINAL" ] && [ -f "$d/cache-key" ]; then rm -rf "$d"; fi
done

size() { du -k "$1" | awk '{printf "%.1f MB", $1 / 1024}'; }
say "built $PKG ($KREL) in $(( $(now_ms) - T0 )) ms -> $OUT_BASE/current (vmlinuz $(size "$FINAL/vmlinuz"), initramfs $(size "$FINAL/initramfs.cpio"), disk.qcow2 $(size "$FINAL/disk.qcow2"))"
