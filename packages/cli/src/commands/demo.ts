/**
 * `roamdesk demo`: the engine's story in one command. The tiny guest boots on a qcow2 chain (image +
 * layers + overlay), writes a generation of data and powers off; the overlay is sealed into a layer; the
 * next boot, on the longer chain, verifies every earlier generation before writing its own.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import type { Command } from 'commander';

import { detectAccel, startVm, type Accel } from '@roamdesk/qemu';
import { Store, type ObjectInfo, type Overlay } from '@roamdesk/store';

import { CliError, CliUsageError } from '../errors.ts';
import { formatBytes, formatSeconds, shortId } from '../format.ts';
import { findGuest, guestAppend, parseGuestSerial, summarizeBoot, type GuestBuild } from '../guest.ts';
import type { CommandContext } from '../main.ts';
import type { Output } from '../output.ts';

interface DemoOptions {
  dir?: string;
  boots: string;
  genKib: string;
}

interface BootResult {
  boot: number;
  chainLength: number;
  verified: number[];
  written: number[];
  seconds: number;
  layer: string;
  layerBytes: number;
  sealSeconds: number;
}

const BOOT_TIMEOUT_MS = 180_000;

export function registerDemo(program: Command, ctx: CommandContext): void {
  program
    .command('demo')
    .description('boot the tiny guest on a qcow2 chain, seal its writes into layers, and prove every write survived')
    .option('--dir <dir>', 'keep the demo store in this directory (default: a temporary one, removed afterwards)')
    .option('--boots <n>', 'how many boots (each verifies all earlier ones)', '3')
    .option('--gen-kib <n>', 'size of the generation each boot writes, in KiB', '8192')
    .action(async (opts: DemoOptions, cmd: Command) => {
      const out = ctx.output(cmd);
      const boots = parseCount(opts.boots, '--boots', 1, 20);
      const genKib = parseCount(opts.genKib, '--gen-kib', 4, 262_144);
      const result = await runDemo(out, { boots, genKib, ...(opts.dir !== undefined ? { dir: resolve(opts.dir) } : {}) });
      out.result(result, () => '');
    });
}

function parseCount(value: string, flag: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new CliUsageError(`${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  return n;
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const v = await fn();
  return [v, performance.now() - t0];
}

async function runDemo(out: Output, opts: { boots: number; genKib: number; dir?: string }) {
  const guest = await findGuest();
  const accel = await detectAccel();
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'roamdesk-demo-')));
  const started = performance.now();
  out.info(`Roamdesk demo: a desktop's disk is a chain (image + layers + overlay) run by QEMU (${accel === 'kvm' ? 'KVM' : 'TCG, no /dev/kvm'}).`);
  out.info(`  store: ${join(dir, 'store')}`);
  try {
    const store = await Store.open(join(dir, 'store'));
    const [image, importMs] = await timed(() => store.importImage(guest.disk, { format: 'qcow2' }));
    out.info(`  1. imported the guest disk as image ${shortId(image.id)}  (${formatBytes(image.size)} file, ${formatBytes(image.virtualSize)} disk)  ${formatSeconds(importMs)}`);
    let overlay = await store.createOverlay(image.id, { label: 'demo' });
    out.info(`  2. created a writable overlay on it`);

    const results: BootResult[] = [];
    for (let boot = 1; boot <= opts.boots; boot += 1) {
      const chainLength = (await store.chain(overlay.parent)).length;
      const [summary, bootMs] = await timed(() => bootOnce(store, overlay, guest, accel, join(dir, 'vm'), opts.genKib));
      // The guest numbers generations from 0: boot k verifies 0..k-2 and writes k-1.
      const expected = Array.from({ length: boot - 1 }, (_, i) => i);
      if (!summary.allOk || summary.verified.join() !== expected.join() || summary.written.join() !== String(boot - 1)) {
        throw new CliError('CLI_DEMO_VERIFY_FAILED', `boot ${boot} did not verify generations ${expected.join(', ') || '(none)'} and write generation ${boot - 1}`, {
          verified: summary.verified, written: summary.written, errors: summary.errors,
        });
      }
      out.info(`  ${boot + 2}. boot ${boot} on image + ${chainLength - 1} layer(s) + overlay: ${summary.verified.length === 0 ? 'nothing to verify yet' : `verified generation(s) ${summary.verified.join(', ')}`}; wrote generation ${boot - 1}; powered off  ${formatSeconds(bootMs)}`);
      const [layer, sealMs] = await timed(() => store.seal(overlay));
      out.info(`     sealed the overlay into layer ${shortId(layer.id)}  (${formatBytes(layer.size)})  ${formatSeconds(sealMs)}`);
      results.push({ boot, chainLength, verified: summary.verified, written: summary.written, seconds: bootMs / 1000, layer: layer.id, layerBytes: layer.size, sealSeconds: sealMs / 1000 });
      overlay = await store.createOverlay(layer.id, { label: 'demo' });
    }

    const [report, verifyMs] = await timed(() => store.verify());
    if (!report.ok) throw new CliError('CLI_DEMO_STORE_INVALID', 'the store failed verification', { problems: report.problems });
    out.info(`  ${opts.boots + 3}. re-hashed every object: ${report.objects} ok, the image is byte-identical to its id  ${formatSeconds(verifyMs)}`);
    const total = (performance.now() - started) / 1000;
    out.info(`Every boot found all earlier writes intact. Done in ${total.toFixed(1)} s.${opts.dir === undefined ? '' : ` The store is kept in ${dir}.`}`);
    return { accel, image: image.id, boots: results, objects: report.objects, seconds: total, dir: opts.dir ?? null };
  } finally {
    if (opts.dir === undefined) await rm(dir, { recursive: true, force: true });
  }
}

async function bootOnce(store: Store, overlay: Overlay, guest: GuestBuild, accel: Accel, runDir: string, genKib: number): Promise<ReturnType<typeof summarizeBoot>> {
  const vm = await startVm({
    name: 'roamdesk-demo',
    memoryMiB: 256,
    cpus: 1,
    accel,
    disk: { nodes: await store.diskNodes(overlay) },
    kernel: { path: guest.vmlinuz, initrd: guest.initrd, append: guestAppend(guest, 'cycle', { genKib }) },
    noReboot: true,
  }, { runDir, lifetime: 'owner' });
  try {
    const exit = await Promise.race([
      vm.exited,
      new Promise<null>((r) => setTimeout(() => r(null), BOOT_TIMEOUT_MS).unref()),
    ]);
    const serial = await vm.readSerial();
    if (exit === null || exit.reason !== 'guest-shutdown') {
      throw new CliError('CLI_DEMO_BOOT_FAILED', exit === null ? `the guest did not power off within ${BOOT_TIMEOUT_MS / 1000} s` : `the VM ended unexpectedly (${exit.reason})`, {
        serialTail: serial.slice(-2000),
      });
    }
    return summarizeBoot(parseGuestSerial(serial));
  } finally {
    if (vm.exit === null) await vm.kill();
    await vm.cleanup({ logs: true });
  }
}

export type { ObjectInfo };
