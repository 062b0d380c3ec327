#!/bin/busybox sh
# Roamdesk tiny guest: /init of the busybox initramfs (runs as PID 1).
#
# Every boot runs one self-checking workload over the ext4 data disk (/dev/vda) and reports each step as
# one "ROAMDESK ..." line on the serial console (ttyS0). Tests parse those lines; the grammar is documented
# in guest/README.md and must stay stable. Anything else printed on the serial port is informational.
#
# Kernel command line knobs:
#   roamdesk.workload=cycle|stream|idle   (default cycle)
#   roamdesk.gen_kib=N                    size of each written generation (default 8192 cycle, 1024 stream)
#   roamdesk.interval_ms=N                stream: start one generation every N ms (default 1000)
#
# No `set -e`: PID 1 must never exit (the kernel would panic); every failure is reported and ends in poweroff.

/bin/busybox --install -s /bin
export PATH=/bin

mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs -o mode=0755 run /run
# The initramfs may lack a /dev/console node (build.sh can only mknod as root): give ourselves stdio.
exec 0</dev/console 1>/dev/console 2>&1

# Report lines go to the serial port explicitly, whatever console= says (a test may add console=tty0).
if [ -c /dev/ttyS0 ] && : 2>/dev/null >/dev/ttyS0; then exec 3>/dev/ttyS0; else exec 3>&1; fi
say() { echo "ROAMDESK $*" >&3; }
note() { echo "roamdesk: $*" >&3; }           # human-readable, ignored by the test grammar
stamp() { read -r _up _ < /proc/uptime; note "t=${_up}s $*"; }   # timing notes; no fork (costly under TCG)

# ---- power off: the one exit path ------------------------------------------------------------------
POWERDOWN_FLAG=/run/roamdesk-powerdown         # created by the ACPI power-button handler
powerdown_requested() { [ -e "$POWERDOWN_FLAG" ]; }

finish() {
  # Say "powerdown" if the power button was the reason (or arrived meanwhile), then leave the disk clean.
  if powerdown_requested; then say powerdown; fi
  cd /
  if grep -q ' /mnt ' /proc/mounts; then
    sync
    umount /mnt 2>/dev/null || { mount -o remount,ro /mnt 2>/dev/null; sync; note "umount failed; remounted read-only"; }
  fi
  stamp "shutting down"
  say poweroff
  poweroff -f
  sleep 2
  reboot -f   # with -no-reboot QEMU exits on this too
}

fail() {   # fail TEXT: one error line (newlines flattened), then a clean power off
  say "error msg=$(printf '%s' "$*" | tr '\r\n' '  ')"
  finish
}

# ---- kernel command line ---------------------------------------------------------------------------
WORKLOAD=cycle GEN_KIB= INTERVAL_MS=1000
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    roamdesk.workload=*) WORKLOAD=${arg#*=} ;;
    roamdesk.gen_kib=*) GEN_KIB=${arg#*=} ;;
    roamdesk.interval_ms=*) INTERVAL_MS=${arg#*=} ;;
  esac
done

BOOT_ID=$(cat /proc/sys/kernel/random/boot_id)   # kernel-made UUID: never blocks, unlike /dev/urandom early on
hostname roamdesk
say "boot id=$BOOT_ID workload=$WORKLOAD kernel=$(uname -r)"

case "$WORKLOAD" in cycle|stream|idle) ;; *) fail "unknown workload '$WORKLOAD' (use cycle, stream or idle)" ;; esac
is_uint() { case "$1" in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }
if [ -z "$GEN_KIB" ]; then
  if [ "$WORKLOAD" = stream ]; then GEN_KIB=1024; else GEN_KIB=8192; fi
fi
is_uint "$GEN_KIB" && [ "$GEN_KIB" -gt 0 ] || fail "roamdesk.gen_kib must be a positive integer, got '$GEN_KIB'"
is_uint "$INTERVAL_MS" || fail "roamdesk.interval_ms must be a non-negative integer, got '$INTERVAL_MS'"

# ---- drivers -------------------------------------------------------------------------------------
# build.sh put the .ko files in /lib/modules and their insmod order (dependencies first) in .../order:
# virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk evdev button.
# (There is no modprobe/modules.dep in this initramfs, so order matters.)
while read -r m; do
  [ -n "$m" ] || continue
  insmod "/lib/modules/$m.ko" || note "insmod $m failed"
done < /lib/modules/order

# QMP system_powerdown presses the ACPI power button. evdev + button give acpid /dev/input/event*;
# -l /dev/null because there is no /var/log; the handler only raises a flag (see acpi-power-button.sh),
# so the workload can stop between writes, unmount and power off by itself.
acpid -f -l /dev/null -c /etc/acpi &

# ---- the data disk ---------------------------------------------------------------------------------
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/vda ] || fail "no /dev/vda after 5 s"
mount -t ext4 -o noatime /dev/vda /mnt || fail "mount -t ext4 /dev/vda /mnt failed"
DIR=/mnt/roamdesk
MANIFEST=$DIR/manifest
mkdir -p "$DIR" || fail "mkdir $DIR failed"
stamp "disk mounted"

# The manifest is append-only, one generation per line: "<gen> <seed> <bytes> <sha256>\n".
# A crash can leave a torn last line (no newline, or garbage). Such lines are ignored by verify, and the
# file is rewritten with only the valid lines before anything new is appended, so a torn fragment can
# never merge with the next line.
VALID_LINE='^[0-9]+ [0-9a-f]+ [0-9]+ [0-9a-f]{64}$'
valid_lines() {   # prints the valid, newline-terminated lines of the manifest
  [ -s "$MANIFEST" ] || return 0
  if [ "$(tail -c 1 "$MANIFEST" | od -An -c | tr -d ' ')" = '\n' ]; then
    grep -aE "$VALID_LINE" "$MANIFEST"
  else
    # last line is unterminated: drop it (it was never acknowledged with a "write" line)
    head -n -1 "$MANIFEST" | grep -aE "$VALID_LINE"
  fi
}
repair_manifest() {
  [ -s "$MANIFEST" ] || return 0
  valid_lines > "$MANIFEST.tmp"
  if cmp -s "$MANIFEST.tmp" "$MANIFEST"; then rm -f "$MANIFEST.tmp"; return 0; fi
  sync "$MANIFEST.tmp" && mv -f "$MANIFEST.tmp" "$MANIFEST" && sync "$DIR" || fail "manifest repair failed"
  note "manifest repaired: dropped torn or invalid line(s)"
}

verify_all() {
  count=0 bad=0
  valid_lines > /run/manifest.valid
  while read -r gen seed bytes sum; do
    f=$DIR/gen-$gen.dat
    if [ -f "$f" ]; then got=$(sha256sum < "$f"); got=${got%% *}; else got=missing; fi
    if [ "$got" = "$sum" ]; then
      say "verify gen=$gen result=ok sha256=$sum"
    else
      say "verify gen=$gen result=bad expected=$sum got=$got"
      bad=$((bad + 1))
    fi
    count=$((count + 1))
  done < /run/manifest.valid
  if [ $bad -eq 0 ]; then say "verified count=$count result=ok"; else say "verified count=$count result=bad"; fi
  stamp "verified"
}

# Deterministic, incompressible data for (gen, seed, bytes), cheap under TCG with busybox only.
# What costs under TCG is forks (~7 ms each) and awk's soft-float loop (~16 us per byte), so awk makes only
# 1/256 of the bytes and tr (~15 MB/s) makes the rest:
#   epoch e (every 4 MiB): R = 16 KiB from an LCG in awk, seeded from seed, gen and e;
#   the epoch's data is 256 blocks of 16 KiB, block a = R with every byte + a (mod 256),
#   built by doubling: L = R; L = L ++ (L + 2^b) for b = 0..7 (only as far as needed);
#   data = the epochs' bytes concatenated, cut to BYTES.
# Two blocks never agree at any offset-aligned byte (x+a != x+a'), so even zstd -19 --long or xz find
# nothing to compress: realistic for transfer tests. 8 MiB takes ~1.7 s under TCG.
# guest/README.md has the exact algorithm so a host can regenerate any generation from the manifest.
gen_data() {   # gen_data GEN SEED(hex) BYTES > file
  _seed=$((0x$2)) _left=$3 _e=0
  while [ "$_left" -gt 0 ]; do
    awk -v s="$_seed" -v g="$1" -v e="$_e" 'BEGIN {
      x = (s + (g * 2654435761) % 4294967296 + e * 40503) % 4294967296
      for (j = 0; j < 16384; j++) { x = (x * 69069 + 1) % 4294967296; printf "%c", int(x / 16777216) }
    }' > /run/L
    _size=16384 _k=1
    while [ $_size -lt "$_left" ] && [ $_k -lt 256 ]; do
      head -c $_size /run/L | tr '\000-\377' "\\$(printf %03o $_k)-\\377\\000-\\$(printf %03o $((_k - 1)))" >> /run/L
      _size=$((_size * 2)) _k=$((_k * 2))
    done
    head -c "$_left" /run/L
    _left=$((_left - _size)) _e=$((_e + 1))
  done
  rm -f /run/L
}

NEXT_GEN=
write_generation() {
  if [ -z "$NEXT_GEN" ]; then
    last=$(valid_lines | tail -n 1 | cut -d' ' -f1)
    NEXT_GEN=$(( ${last:--1} + 1 ))
  fi
  gen=$NEXT_GEN bytes=$((GEN_KIB * 1024))
  seed=$(tr -d '-' < /proc/sys/kernel/random/uuid | cut -c1-8)
  f=$DIR/gen-$gen.dat
  # 1. data under a temp name, fsync'd, renamed, directory fsync'd: a final name never holds partial data.
  # (Hashing the file afterwards, from the page cache, is ~0.7 s faster than a tee pipeline under TCG.)
  gen_data "$gen" "$seed" "$bytes" > "$f.tmp" || fail "writing $f.tmp failed"
  [ "$(stat -c %s "$f.tmp" 2>/dev/null)" = "$bytes" ] || fail "writing $f.tmp failed (short file)"
  sum=$(sha256sum < "$f.tmp")
  sum=${sum%% *}
  sync "$f.tmp" && mv -f "$f.tmp" "$f" && sync "$DIR" || fail "fsync/rename of $f failed"
  # 2. only then the manifest line (one small append), fsync'd with its directory.
  echo "$gen $seed $bytes $sum" >> "$MANIFEST" && sync "$MANIFEST" && sync "$DIR" || fail "appending to $MANIFEST failed"
  # 3. only then tell the world: a printed "write" line is durable.
  say "write gen=$gen bytes=$bytes sha256=$sum"
  stamp "written"
  NEXT_GEN=$((gen + 1))
}

now_ms() {   # sets NOW_MS from /proc/uptime ("12.34 ...") without forking
  read -r _up _ < /proc/uptime
  NOW_MS=$(( ${_up%.*} * 1000 + 1${_up#*.}0 - 1000 ))
}
# Wait until uptime reaches $1 ms, in 100 ms slices so a power-button press is noticed quickly.
nap_until_ms() {
  now_ms
  while [ "$NOW_MS" -lt "$1" ] && ! powerdown_requested; do
    _left=$(($1 - NOW_MS))
    if [ $_left -ge 100 ]; then sleep 0.1; else sleep "0.$(printf %03d $_left)"; fi
    now_ms
  done
}

# The VGA screen (what VNC / screendump shows). The Debian cloud kernel has CONFIG_VT and VGA_CONSOLE,
# so tty1 is the visible text console even though kernel messages go to ttyS0.
show_desktop() {
  t=/dev/tty1
  [ -c $t ] || { note "no /dev/tty1: nothing shown on the VGA screen"; return 0; }
  used=$(df -k /mnt | awk 'NR==2 {printf "%d MiB used of %d MiB", $3/1024, $2/1024}')
  {
    printf '\033[9;0]\033[?25h\033[0m\033[H\033[J'        # no screen blanking, cursor on, clear
    printf '\033[1;37;44m%-80s\033[0m\n' '  Roamdesk desktop'
    printf '\n  Welcome to Roamdesk.\n\n'
    printf '  host:    %s\n' "$(hostname)"
    printf '  kernel:  %s\n' "$(uname -r)"
    printf '  boot id: %s\n' "$BOOT_ID"
    printf '  disk:    %s generation(s) verified %s, %s\n\n' "$count" "$([ "$bad" -eq 0 ] && echo ok || echo BAD)" "$used"
    printf '%s login: ' "$(hostname)"
  } > $t
  chvt 1 2>/dev/null
}

# ---- the workloads -----------------------------------------------------------------------------------
repair_manifest
verify_all
case "$WORKLOAD" in
  cycle)
    write_generation
    ;;
  stream)
    # One generation every interval_ms, start to start (back to back if a write takes longer).
    while ! powerdown_requested; do
      now_ms; next=$((NOW_MS + INTERVAL_MS))
      write_generation
      nap_until_ms $next
    done
    ;;
  idle)
    show_desktop
    say idle
    while ! powerdown_requested; do sleep 0.2; done
    ;;
esac
finish
