/**
 * buildQemuArgs: VmSpec → argv for qemu-system-x86_64. Pure and deterministic (snapshot-tested in
 * args.test.ts against test/fixtures/*.argv.json).
 *
 * Rules it follows:
 * - Disks are `-blockdev` JSON, one node per file, `driver: qcow2` and an explicit `backing`
 *   (the node below, or null): formats are stated, never probed, and header backing names are
 *   ignored (DESIGN.md "explicit formats"; notes/reliability.md R5). JSON also makes commas in
 *   paths harmless.
 * - `-nodefaults -no-user-config`: only the devices listed here exist, whatever the host config.
 * - QMP and VNC listen on UNIX sockets only.
 */
import type { QmpBlockdevOptionsQcow2 } from '@roamdesk/qmp';

import {
  DEFAULT_CPU_MODEL,
  DEFAULT_DEVICE_ID,
  DEFAULT_MACHINE,
  DEFAULT_TB_SIZE_MIB,
  validateVmSpec,
  type DiskCacheMode,
  type VmSpec,
} from './spec.ts';

const CACHE: Record<DiskCacheMode, { direct: boolean; noFlush: boolean; writeCache: 'on' | 'off' }> = {
  // As -drive cache=: the guest-visible write cache is off only for the *through/*sync modes.
  writeback: { direct: false, noFlush: false, writeCache: 'on' },
  none: { direct: true, noFlush: false, writeCache: 'on' },
  writethrough: { direct: false, noFlush: false, writeCache: 'off' },
  directsync: { direct: true, noFlush: false, writeCache: 'off' },
  unsafe: { direct: false, noFlush: true, writeCache: 'on' },
};

/**
 * What the writable top node gets (and a live seal's new overlay, store/seal-live.ts): a guest's all-zero writes
 * and its discards (TRIM) become qcow2 zero clusters, which take no data in the layer the overlay is sealed into,
 * instead of clusters full of zeros that every check-in and replication would carry. `unmap` also lets the file
 * node punch the freed clusters out of the overlay file. (QEMU qapi BlockdevOptions: detect-zeroes, discard.)
 */
export const WRITABLE_NODE_OPTIONS = { 'detect-zeroes': 'unmap', discard: 'unmap' } as const;

/** The -blockdev definitions of the chain, bottom → top. */
export function diskBlockdevs(spec: VmSpec): QmpBlockdevOptionsQcow2[] {
  const cache = CACHE[spec.disk.cache ?? 'writeback'];
  const cacheOpts = { direct: cache.direct, 'no-flush': cache.noFlush };
  const nodes = spec.disk.nodes;
  return nodes.map((node, i) => {
    const readOnly = i < nodes.length - 1;
    return {
      driver: 'qcow2',
      'node-name': node.nodeName,
      'read-only': readOnly,
      cache: cacheOpts,
      ...(readOnly ? {} : WRITABLE_NODE_OPTIONS),
      file: { driver: 'file', filename: node.path, 'read-only': readOnly, cache: cacheOpts, ...(readOnly ? {} : { discard: 'unmap' as const }) },
      backing: i === 0 ? null : nodes[i - 1]!.nodeName,
    };
  });
}

/** Builds the argv (without the binary). Throws QemuSpecInvalidError for a bad spec. */
export function buildQemuArgs(spec: VmSpec): string[] {
  validateVmSpec(spec);
  const args: string[] = [];
  const push = (...a: string[]): void => {
    args.push(...a);
  };

  push('-name', `guest=${spec.name}`);
  push('-nodefaults', '-no-user-config');
  push('-machine', spec.machine ?? DEFAULT_MACHINE);
  push('-accel', spec.accel === 'tcg' ? `tcg,tb-size=${spec.tcgTbSizeMiB ?? DEFAULT_TB_SIZE_MIB}` : 'kvm');
  push('-cpu', spec.cpuModel ?? DEFAULT_CPU_MODEL);
  push('-m', `${spec.memoryMiB}M`);
  push('-smp', String(spec.cpus));
  push('-display', spec.display ?? 'none');
  push('-vga', spec.vga ?? 'std');
  if (spec.noReboot) push('-no-reboot');
  if (spec.startPaused) push('-S');

  for (const blockdev of diskBlockdevs(spec)) push('-blockdev', JSON.stringify(blockdev));
  const top = spec.disk.nodes.at(-1)!;
  const cache = CACHE[spec.disk.cache ?? 'writeback'];
  push(
    '-device',
    JSON.stringify({
      driver: 'virtio-blk-pci',
      id: spec.disk.deviceId ?? DEFAULT_DEVICE_ID,
      drive: top.nodeName,
      'write-cache': cache.writeCache,
      // An I/O error pauses the VM (QMP RunState 'io-error', event BLOCK_IO_ERROR) rather than reaching the guest,
      // whose filesystem would turn read-only or lose the write: a full disk, freed, resumes with nothing lost
      // (on `cont` QEMU retries the failed requests). QEMU's default pauses on ENOSPC only (qdev BlockdevOnError).
      werror: 'stop',
      rerror: 'stop',
      bootindex: 1,
    }),
  );

  if (spec.kernel) {
    push('-kernel', spec.kernel.path);
    if (spec.kernel.initrd !== undefined) push('-initrd', spec.kernel.initrd);
    if (spec.kernel.append !== undefined) push('-append', spec.kernel.append);
  }

  push('-qmp', `unix:${spec.qmpSocket},server=on,wait=off`);
  if (spec.vncSocket !== undefined) push('-vnc', `unix:${spec.vncSocket}`);
  if (spec.serialLog !== undefined) {
    push('-chardev', `file,id=serial0,path=${spec.serialLog}`);
    push('-serial', 'chardev:serial0');
  }
  if (spec.pidFile !== undefined) push('-pidfile', spec.pidFile);
  return args;
}
