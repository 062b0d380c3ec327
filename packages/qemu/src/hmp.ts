/**
 * HMP command lines for tests and diagnostics, sent via QMP `human-monitor-command`.
 *
 * `qemu-io` writes to a disk without a guest. Our disks are `-blockdev` nodes behind a
 * virtio-blk-pci device, so the BlockBackend is anonymous: `qemu-io disk0 …` (a -drive id) fails,
 * and `qemu-io <node-name> …` hits a write-permission conflict with the device. Addressing the
 * device's backend by qdev path works, paused or running. Its output goes to QEMU's stdout (the
 * run dir's qemu.stderr.log), not into the HMP reply, which is '' on success.
 */
export function hmpQemuIo(deviceId: string, command: string): string {
  if (/["\n]/.test(command)) throw new TypeError('qemu-io command must not contain double quotes or newlines');
  return `qemu-io -d /machine/peripheral/${deviceId}/virtio-backend "${command}"`;
}
