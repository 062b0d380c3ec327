/**
 * Check-out and check-in end to end, as a device runs them (DeviceAgent from @roamdesk/client against a real
 * `roamdesk server` process): the server stops the desktop (here: never started, so the stop is a no-op — the
 * guest's own shutdown is not part of these numbers), seals its overlay holding the workload's 5 % layer, moves
 * the lease; the device fetches what it lacks (it holds the base, as after `roamdesk prefetch`), verifies,
 * creates its local overlay and confirms. Check-in: the device's overlay holds the +1 % check-in writes; it
 * seals, uploads, the server verifies (hash, header, qemu-img check) and commits in one transaction.
 * Every run gets a fresh server and device (untimed setup). Each runs on the 4 GiB disk and on the 256 GiB sparse
 * one (same data, same layer and check-in sizes): issue 5 asks for the same figures within 1.2 × of each other.
 */
import { copyFile, link, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

import Database from 'better-sqlite3';

import { DeviceAgent } from '@roamdesk/client';
import { type ObjectInfo, Store } from '@roamdesk/store';

import { startMeter } from './cpu.ts';
import { runCommand, type ManagedProcess } from './exec.ts';
import { assertSameGuest } from './qemu-img.ts';
import { importWorkloadLayer, startServer } from './roamdesk.ts';
import type { RunContext, RunResult, Scenario } from './scenario.ts';
import type { BaseImage, LayerImage, Workload } from './workload.ts';

interface Template {
  store: Store;
  base: ObjectInfo;
  layer: ObjectInfo;
}

interface Fresh {
  server: ManagedProcess;
  agent: DeviceAgent;
  dataDir: string;
}

export async function api(url: string, token: string, method: string, path: string, body?: unknown): Promise<unknown> {
  const r = await fetch(`${url}/api/v1${path}`, {
    method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
  return r.status === 204 ? null : r.json();
}

/**
 * A server whose desktop "bench" has never run but whose overlay holds the workload's layer (as if the user had
 * worked on it), and a registered device that already holds the base.
 */
async function freshPair(ctx: RunContext, t: Template): Promise<Fresh> {
  const dataDir = join(ctx.runDir, 'server');
  let s = await startServer(dataDir);
  const url = s.remote.apiBase.replace(/\/api\/v1$/, '');
  await api(url, s.remote.token, 'POST', '/images', { name: 'bench', path: t.store.objectPath(t.base.id) });
  await api(url, s.remote.token, 'POST', '/desktops', { name: 'bench', owner: 'admin', image: 'bench' });
  await s.proc.stop();
  // The overlay the server will seal at check-out: the layer's bytes under an overlay name (the seal links them).
  const overlayName = `overlay-bench-${randomBytes(8).toString('hex')}.qcow2`;
  const overlay = join(dataDir, 'store', 'objects', overlayName);
  await copyFile(t.store.objectPath(t.layer.id), overlay);
  await runCommand('chmod', ['0600', overlay]);
  const db = new Database(join(dataDir, 'roamdesk.db'));
  try {
    db.prepare('UPDATE desktops SET overlay_path = ? WHERE name = ?').run(join('store', 'objects', overlayName), 'bench');
  } finally {
    db.close();
  }
  s = await startServer(dataDir);
  const home = join(ctx.runDir, 'device');
  const agent = new DeviceAgent({ home, session: { server: s.remote.apiBase.replace(/\/api\/v1$/, ''), token: s.remote.token } });
  await agent.register({ name: 'bench' });
  const local = await Store.open(join(home, 'store'));
  await link(t.store.objectPath(t.base.id), local.objectPath(t.base.id));
  return { server: s.proc, agent, dataDir };
}

/**
 * The run's phases: the transfer engine's own time, everything else, and each DeviceAgent step (from its first
 * progress event to the next step's: checkout = the server's claim, stop and seal; download; verify; overlay;
 * confirm — or seal, compact, upload, commit, cleanup for a check-in).
 */
export function phases(total: number, transfer: number | undefined, steps: ReadonlyMap<string, number>): Record<string, number> {
  const out: Record<string, number> = transfer === undefined ? { total } : { transfer, 'stop+seal+verify+commit': Math.max(0, total - transfer) };
  for (const [step, seconds] of steps) out[`step ${step}`] = seconds;
  return out;
}

/** Times each agent step: a step lasts from its first progress event to the first event of the next step. */
export function stepTimer(): { onProgress: (p: { step: string }) => void; finish: () => Map<string, number> } {
  const steps = new Map<string, number>();
  let current: { step: string; at: number } | null = null;
  const close = (now: number): void => {
    if (current !== null) steps.set(current.step, (steps.get(current.step) ?? 0) + (now - current.at) / 1000);
  };
  return {
    onProgress(p) {
      if (current?.step === p.step) return;
      const now = performance.now();
      close(now);
      current = { step: p.step, at: now };
    },
    finish() {
      close(performance.now());
      current = null;
      return steps;
    },
  };
}

/** The disk a scenario runs on: the 4 GiB workload or its 256 GiB sparse twin. */
interface Disk {
  readonly base: BaseImage;
  readonly layer: LayerImage;
  readonly checkin: LayerImage;
}

function leaseScenario(kind: 'checkout' | 'checkin', sparse: boolean): Scenario {
  let template: Template | undefined;
  let fresh: Fresh | undefined;
  const disk = (w: Workload): Disk => (sparse ? w.sparse : w);
  return {
    name: `roamdesk ${kind === 'checkout' ? 'check-out' : 'check-in'}, end to end${sparse ? ', 256 GiB sparse' : ''}`,
    group: kind,
    description: sparse
      ? 'the same on the 256 GiB sparse disk'
      : kind === 'checkout'
        ? 'DeviceAgent.checkout against a roamdesk server: seal the server overlay (5 % layer), move the lease, fetch the layer, verify, local overlay, confirm'
        : 'DeviceAgent.checkin: seal the local overlay (+1 %), upload, server re-hash + header + qemu-img check, commit in one transaction',
    async prepare(ctx) {
      await mkdir(join(ctx.runDir, 'tmp'));
      const store = await Store.open(join(ctx.runDir, 'template'));
      const base = await store.importImage(disk(ctx.workload).base.path);
      const layer = await importWorkloadLayer(store, disk(ctx.workload).layer, base, join(ctx.runDir, 'tmp'));
      template = { store, base, layer };
    },
    async setup(ctx) {
      if (template === undefined) throw new Error('not prepared');
      fresh = await freshPair(ctx, template);
      if (kind === 'checkin') {
        const out = await fresh.agent.checkout('bench');
        // The device's work: the workload's +1 % writes as the local overlay over the checked-out layer.
        await copyFile(disk(ctx.workload).checkin.path, out.overlay);
        await runCommand('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', `${template.layer.id}.qcow2`, '-F', 'qcow2', out.overlay]);
      }
    },
    async run(ctx): Promise<RunResult> {
      if (fresh === undefined) throw new Error('not set up');
      const meter = startMeter({ pids: [fresh.server.pid] });
      const timer = stepTimer();
      const report = kind === 'checkout'
        ? (await fresh.agent.checkout('bench', { onProgress: timer.onProgress })).download
        : (await fresh.agent.checkin('bench', { onProgress: timer.onProgress })).upload;
      const steps = timer.finish();
      const m = await meter.stop();
      const changedBytes = (kind === 'checkout' ? disk(ctx.workload).layer : disk(ctx.workload).checkin).changedBytes;
      const moved = report?.bytesTransferred ?? 0;
      return { ...m, changedBytes, bytesWritten: moved, bytesRead: moved, bytesOnWire: report?.bytesOnWire ?? 0, phases: phases(m.seconds, report?.seconds, steps) };
    },
    async verify(ctx) {
      if (fresh === undefined || template === undefined) return;
      if (kind === 'checkout') {
        const local = await Store.open(join(ctx.runDir, 'device', 'store'), { reader: true });
        await assertSameGuest(local.objectPath(template.layer.id), disk(ctx.workload).layer.path);
        return;
      }
      const server = await Store.open(join(fresh.dataDir, 'store'), { reader: true });
      const tops = (await server.list()).filter((o) => o.parent === template?.layer.id);
      const top = tops[0];
      if (top === undefined) throw new Error('the server holds no layer over the checked-out layer after check-in');
      await assertSameGuest(server.objectPath(top.id), disk(ctx.workload).checkin.path);
    },
    async teardown() {
      await fresh?.server.stop();
      fresh = undefined;
    },
  };
}

export function leaseScenarios(): Scenario[] {
  return [leaseScenario('checkout', false), leaseScenario('checkout', true), leaseScenario('checkin', false), leaseScenario('checkin', true)];
}
