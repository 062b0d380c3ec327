/**
 * Boots the tiny real guest (guest/build.sh) on a store overlay's chain, for end-to-end tests.
 * Every VM is started with lifetime 'owner' (it dies with the test process) and tests stop it in `finally`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { findGuest, guestAppend, parseGuestSerial, summarizeBoot, type GuestWorkload } from '@roamdesk/cli';
import { detectAccel, startVm, type Vm } from '@roamdesk/qemu';
import { Store, type ObjectInfo, type Overlay } from '@roamdesk/store';

/** A store in `dir/store` holding the tiny guest's disk as its image. */
export async function storeWithGuestImage(dir: string): Promise<{ store: Store; image: ObjectInfo }> {
  const guest = await findGuest();
  const store = await Store.open(join(dir, 'store'));
  return { store, image: await store.importImage(guest.disk, { format: 'qcow2' }) };
}

export interface BootOptions {
  workload: GuestWorkload;
  genKib?: number;
  intervalMs?: number;
}

export async function bootGuest(store: Store, overlay: Overlay, runDir: string, opts: BootOptions): Promise<Vm> {
  const guest = await findGuest();
  return startVm({
    name: 'roamdesk-e2e',
    memoryMiB: 256,
    cpus: 1,
    accel: await detectAccel(),
    disk: { nodes: await store.diskNodes(overlay) },
    kernel: {
      path: guest.vmlinuz,
      initrd: guest.initrd,
      append: guestAppend(guest, opts.workload, {
        ...(opts.genKib !== undefined ? { genKib: opts.genKib } : {}),
        ...(opts.intervalMs !== undefined ? { intervalMs: opts.intervalMs } : {}),
      }),
    },
    noReboot: true,
  }, { runDir, lifetime: 'owner' });
}

/** Boots the `cycle` workload to its own power-off and returns what the guest verified and wrote. */
export async function cycleBoot(store: Store, overlay: Overlay, runDir: string, genKib = 256): Promise<ReturnType<typeof summarizeBoot> & { serial: string }> {
  const vm = await bootGuest(store, overlay, runDir, { workload: 'cycle', genKib });
  try {
    const exit = await Promise.race([vm.exited, new Promise<null>((r) => setTimeout(() => r(null), 120_000).unref())]);
    const serial = await vm.readSerial();
    if (exit === null) throw new Error(`cycle boot did not power off in 120 s; serial tail:\n${serial.slice(-1500)}`);
    if (exit.reason !== 'guest-shutdown') throw new Error(`cycle boot ended with ${exit.reason}; serial tail:\n${serial.slice(-1500)}`);
    return { ...summarizeBoot(parseGuestSerial(serial)), serial };
  } finally {
    await stopVm(vm);
  }
}

/** Kills a VM that is still running and removes its run files. Safe to call twice. */
export async function stopVm(vm: Vm): Promise<void> {
  if (vm.exit === null) await vm.kill();
  await vm.cleanup({ logs: true });
}

export async function tempDir(prefix: string): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

export function range(from: number, toInclusive: number): number[] {
  return Array.from({ length: Math.max(0, toInclusive - from + 1) }, (_, i) => from + i);
}
