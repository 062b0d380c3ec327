#!/usr/bin/env bash
# Installs what Roamdesk needs and is missing, then returns quickly when everything is there.
#   scripts/setup.sh          what `npm start` needs
#   scripts/setup.sh --test   also what `npm test` needs
# Debian packages are installed with apt when run as root; otherwise the exact command is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}

say() { printf 'roamdesk setup: %s\n' "$*" >&2; }

# 1. Node.js: 20.12+ (module.register for tsx, stable fs APIs); 22 also works.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  say "Node.js 20 or newer is required (found: $(node -v 2>/dev/null || echo none))."
  exit 1
fi

# 2. Debian packages. Each entry: a file that proves the package is there, and the package.
need=(
  "/usr/bin/qemu-system-x86_64 qemu-system-x86"
  "/usr/bin/qemu-img qemu-utils"
  "/bin/busybox busybox-static"
  "/usr/bin/cpio cpio"
  "/sbin/mkfs.ext4 e2fsprogs"
  "/usr/bin/prlimit util-linux"
)
if [ "$mode" = "--test" ]; then
  # rsync: the benchmark's baseline; chromium: the browser test of the remote console; QEMU's GTK window on an
  # X server of the test's own (Xvfb), found with xwininfo: the local VM's window; openssl: the HTTPS test's CA.
  need+=("/usr/bin/rsync rsync" "/usr/bin/chromium chromium" "/usr/lib/x86_64-linux-gnu/qemu/ui-gtk.so qemu-system-gui"
    "/usr/bin/Xvfb xvfb" "/usr/bin/xwininfo x11-utils" "/usr/bin/openssl openssl")
fi
missing=()
for entry in "${need[@]}"; do
  file=${entry%% *}; pkg=${entry##* }
  # busybox must be the static build: it runs inside the guest's initramfs with no libc.
  if [ "$pkg" = busybox-static ]; then
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  elif [ ! -e "$file" ]; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  cmd="apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing Debian packages: ${missing[*]}"
    say "install them as root, then run this again:"
    printf '\n    sudo apt-get update && sudo %s\n\n' "$cmd" >&2
    exit 1
  fi
fi

# 3. npm dependencies, when package-lock.json differs from the one last installed. Its content is compared, not
#    its mtime: a checkout or a clone touches the file without changing it, and `npm ci` deletes node_modules
#    first (under any process still using it).
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f node_modules/.package-lock.json ] || [ "$(cat node_modules/.roamdesk-lock.sha256 2>/dev/null)" != "$lock_sum" ]; then
  say "installing npm dependencies (native addons compile from source: a few minutes the first time)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.roamdesk-lock.sha256
fi

# 4. The tiny guest (kernel + busybox initramfs + ext4 disk), built once and cached under .cache/.
bash guest/build.sh >&2
