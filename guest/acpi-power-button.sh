#!/bin/sh
# Installed as /etc/acpi/PWRF/00000080 in the guest: busybox acpid runs it when the ACPI power button is
# pressed (QMP system_powerdown). It only raises a flag; /init notices it between writes, unmounts the
# disk and powers off, so a powerdown never cuts a generation in half.
touch /run/roamdesk-powerdown
# Safety net: if /init has not powered off within 30 s (e.g. stuck I/O), force it. The manifest is
# crash-safe, so this is no worse than pulling the plug, and a VM never ignores a powerdown forever.
(
  sleep 30
  echo "ROAMDESK error msg=clean shutdown did not finish within 30 s; forcing poweroff" > /dev/ttyS0
  poweroff -f
) </dev/null >/dev/null 2>&1 &
