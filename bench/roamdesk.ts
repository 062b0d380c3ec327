/**
 * Roamdesk's own transfers, measured against the anchors and peers of the same run: a real `roamdesk server`
 * process (its store prepared untimed, manifests computed once as the server does on first use) and the
 * transfer engine as the device runs it (downloadObjects / uploadObjects, in this process). Every result is
 * checked with qemu-img compare against the workload's file.
 */
import { link, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

import { type ObjectInfo, Store } from '@roamdesk/store';
import { type CompressionMode, downloadObjects, type ObjectDescription, type Remote, type TransferReport, uploadObjects } from '@roamdesk/transfer';

import { type Measurement, startMeter } from './cpu.ts';
import { freePort, runCommand, startProcess, waitForPort, type ManagedProcess } from './exec.ts';
import { assertSameGuest } from './qemu-img.ts';
import type { GroupName, RunResult, Scenario } from './scenario.ts';
import { LINK_100MBIT, LINK_1GBIT, startThrottleProxy, type ThrottleProxy } from './throttle-proxy.ts';
import type { LayerImage, Workload } from './workload.ts';

const CLI = join(import.meta.dirname, '..', 'packages', 'cli', 'bin', 'roamdesk.js');
const PASSWORD = 'bench-admin-password';

interface Running {
  readonly proc: ManagedProcess;
  readonly port: number;
  readonly remote: Remote;
  /** The data directory as the server was given it (a short link): its VMs' QMP sockets are named under it. */
  readonly servedDataDir: string;
}

/** A layer file of the workload (backing `v1.qcow2` etc.) as a store layer over `parent` (backing `<id>.qcow2`). */
export async function importWorkloadLayer(store: Store, layer: LayerImage, parent: ObjectInfo, tmp: string): Promise<ObjectInfo> {
  const copy = join(tmp, `rebased-${parent.id.slice(0, 8)}-${basename(layer.file)}`);
  await runCommand('cp', ['--reflink=auto', layer.path, copy]);
  await runCommand('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', `${parent.id}.qcow2`, '-F', 'qcow2', copy]);
  return store.importLayer(copy, parent.id);
}

export async function startServer(dataDir: string): Promise<Running> {
  const port = await freePort();
  // The server refuses a data directory too long for its VMs' UNIX sockets, and run directories here are deep:
  // it gets a short link to it (removed when it exits).
  await mkdir(dataDir, { recursive: true });
  const short = await mkdtemp(join(tmpdir(), 'rdb-'));
  const servedDataDir = join(short, 'data');
  await symlink(dataDir, servedDataDir);
  const proc = startProcess(process.execPath, [CLI, 'server', '--data', servedDataDir, '--listen', `127.0.0.1:${port}`, '--log-level', 'warn'], {
    env: { ...process.env, ROAMDESK_ADMIN_PASSWORD: PASSWORD },
  });
  void proc.exited.finally(() => rm(short, { recursive: true, force: true }));
  await waitForPort(port, 60_000, proc);
  const r = await fetch(`http://127.0.0.1:${port}/api/v1/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'admin', password: PASSWORD }),
  });
  if (!r.ok) throw new Error(`login to the bench server failed: ${r.status} ${await r.text()}`);
  const { token } = (await r.json()) as { token: string };
  return { proc, port, remote: { apiBase: `http://127.0.0.1:${port}/api/v1`, token }, servedDataDir };
}

/** What the server does once per object: compute (and cache) its manifest. */
async function warmManifests(s: Running, ids: readonly string[]): Promise<void> {
  for (const id of ids) {
    const r = await fetch(`${s.remote.apiBase}/objects/${id}/manifest`, { headers: { authorization: `Bearer ${s.remote.token}` } });
    if (!r.ok) throw new Error(`manifest of ${id}: ${r.status}`);
    await r.arrayBuffer();
  }
}

/** A device store holding `objects` already (hard links: objects are immutable and 0444). */
async function clientStore(dir: string, from: Store, objects: readonly ObjectInfo[]): Promise<Store> {
  const store = await Store.open(dir);
  for (const o of objects) await link(from.objectPath(o.id), store.objectPath(o.id));
  return store;
}

function describe(o: ObjectInfo): ObjectDescription {
  return { id: o.id, kind: o.kind, parent: o.parent, size: o.size, virtualSize: o.virtualSize };
}

/** A run's result; the CPU is also split between this process (the device) and the server, as phases. */
function result(report: TransferReport, m: Measurement, changedBytes: number): RunResult {
  return {
    seconds: m.seconds, cpuSeconds: m.cpuSeconds, changedBytes,
    bytesWritten: report.bytesTransferred, bytesRead: report.bytesTransferred, bytesOnWire: report.bytesOnWire,
    counters: { piecesRetried: report.piecesRetried, compression: report.compression ? 1 : 0, bytesSaved: report.bytesSaved },
    phases: { 'CPU device': m.cpuSplit.here, 'CPU server': m.cpuSplit.servers },
  };
}

interface DownloadSpec {
  readonly name: string;
  readonly group: GroupName;
  readonly description: string;
  /** Builds the server's store (untimed, once); returns the chain to download and what the device already holds. */
  readonly build: (w: Workload, store: Store, tmp: string) => Promise<{ chain: ObjectInfo[]; held: ObjectInfo[] }>;
  readonly changed: (w: Workload) => number;
  /** The workload file whose guest view the downloaded top must equal; null: nothing to check (not published). */
  readonly expect: ((w: Workload) => string) | null;
  readonly compression?: CompressionMode;
  readonly link?: number;
  readonly withoutVerification?: boolean;
}

function downloadScenario(spec: DownloadSpec): Scenario {
  let server: Running | undefined;
  let proxy: ThrottleProxy | undefined;
  let serverStore: Store | undefined;
  let chain: ObjectInfo[] = [];
  let held: ObjectInfo[] = [];
  let device: Store | undefined;
  return {
    name: spec.name, group: spec.group, description: spec.description,
    ...(spec.link !== undefined ? { linkBytesPerSecond: spec.link } : {}),
    async prepare(ctx) {
      const data = join(ctx.runDir, 'server');
      await mkdir(join(data, 'tmp'), { recursive: true });
      serverStore = await Store.open(join(data, 'store'));
      ({ chain, held } = await spec.build(ctx.workload, serverStore, join(data, 'tmp')));
      server = await startServer(data);
      await warmManifests(server, chain.map((o) => o.id));
      if (spec.link !== undefined) proxy = await startThrottleProxy({ targetPort: server.port, bytesPerSecond: spec.link });
    },
    async setup(ctx) {
      if (serverStore === undefined) throw new Error('not prepared');
      device = await clientStore(join(ctx.runDir, 'device'), serverStore, held);
    },
    async run(ctx) {
      if (server === undefined || device === undefined) throw new Error('not prepared');
      const remote = proxy === undefined ? server.remote : { ...server.remote, apiBase: `http://127.0.0.1:${proxy.port}/api/v1` };
      const meter = startMeter({ pids: [server.proc.pid] });
      const report = await downloadObjects({
        store: device, remote, objects: chain.map(describe), compression: spec.compression ?? 'auto',
        ...(spec.withoutVerification === true ? { benchmarkWithoutVerification: true } : {}),
      });
      const m = await meter.stop();
      if (report.compressionReason !== '' && ctx.runIndex === 0) ctx.log(report.compressionReason);
      return result(report, m, spec.changed(ctx.workload));
    },
    async verify(ctx) {
      if (spec.expect === null || device === undefined) return;
      const top = chain[chain.length - 1]!;
      await assertSameGuest(device.objectPath(top.id), spec.expect(ctx.workload));
    },
    async dispose() {
      await proxy?.close();
      await server?.proc.stop();
    },
  };
}

/**
 * Check-in's transfer: the device uploads its new layer; the server re-hashes, checks and publishes it. One
 * server serves every run, as the download scenarios' does (a server runs for months: a process started per
 * run would measure Node's start-up and first-touch of its memory, not the transfer); before each run the
 * uploaded layer is removed from its store, so every run uploads it in full.
 */
function uploadScenario(opts: { upgrade: boolean }): Scenario {
  let template: { store: Store; base: ObjectInfo; layer: ObjectInfo; checkin: ObjectInfo } | undefined;
  let server: Running | undefined;
  let serverStore: Store | undefined;
  let serverMeta = '';
  let device: Store | undefined;
  return {
    name: opts.upgrade ? 'roamdesk upload' : 'roamdesk upload, plain PUT', group: 'checkin',
    description: opts.upgrade
      ? 'device uploads its sealed check-in layer to a roamdesk server holding base + layer (running, the layer removed before each run); the server reads the pieces straight from its socket (upgraded connection), re-hashes, header-checks and qemu-img-checks it'
      : 'the same with the pieces in plain PUTs (what a proxy that drops Upgrade gets): the server receives them through node:http',
    async prepare(ctx) {
      const store = await Store.open(join(ctx.runDir, 'template'));
      await mkdir(join(ctx.runDir, 'tmp'));
      const base = await store.importImage(ctx.workload.base.path);
      const layer = await importWorkloadLayer(store, ctx.workload.layer, base, join(ctx.runDir, 'tmp'));
      const checkin = await importWorkloadLayer(store, ctx.workload.checkin, layer, join(ctx.runDir, 'tmp'));
      template = { store, base, layer, checkin };
      const data = join(ctx.runDir, 'server');
      serverStore = await clientStore(join(data, 'store'), store, [base, layer]);
      serverMeta = join(data, 'store', 'meta');
      server = await startServer(data);
    },
    async setup(ctx) {
      if (template === undefined || serverStore === undefined) throw new Error('not prepared');
      await rm(serverStore.objectPath(template.checkin.id), { force: true });
      await rm(join(serverMeta, `${template.checkin.id}.json`), { force: true });
      device = await clientStore(join(ctx.runDir, 'device'), template.store, [template.base, template.layer, template.checkin]);
    },
    async run(ctx) {
      if (server === undefined || device === undefined || template === undefined) throw new Error('not prepared');
      const meter = startMeter({ pids: [server.proc.pid] });
      const report = await uploadObjects({ store: device, remote: server.remote, objects: [describe(template.checkin)], upgrade: opts.upgrade });
      if (report.upgraded !== opts.upgrade) throw new Error(`expected ${opts.upgrade ? 'an upgraded' : 'a plain'} upload`);
      const m = await meter.stop();
      return result(report, m, ctx.workload.checkin.changedBytes);
    },
    async verify(ctx) {
      if (template === undefined || serverStore === undefined) return;
      if (!(await serverStore.has(template.checkin.id))) throw new Error('the server does not hold the uploaded layer');
      await assertSameGuest(serverStore.objectPath(template.checkin.id), ctx.workload.checkin.path);
    },
    async dispose() {
      await server?.proc.stop();
    },
  };
}

export function roamdeskScenarios(opts: { withThrottled: boolean } = { withThrottled: true }): Scenario[] {
  const baseAndLayer = async (w: Workload, store: Store, tmp: string) => {
    const base = await store.importImage(w.base.path);
    const layer = await importWorkloadLayer(store, w.layer, base, tmp);
    return { chain: [base, layer], held: [base] };
  };
  const scenarios: Scenario[] = [
    downloadScenario({
      name: 'roamdesk layer', group: 'checkout', description: 'roamdesk server → device: the device holds the base, fetches the layer (verified, published)',
      build: baseAndLayer, changed: (w) => w.layer.changedBytes, expect: (w) => w.layer.path,
    }),
    downloadScenario({
      name: 'roamdesk layer, 256 GiB sparse', group: 'checkout', description: 'the same on the 256 GiB sparse disk',
      build: async (w, store, tmp) => {
        const base = await store.importImage(w.sparse.base.path);
        const layer = await importWorkloadLayer(store, w.sparse.layer, base, tmp);
        return { chain: [base, layer], held: [base] };
      },
      changed: (w) => w.sparse.layer.changedBytes, expect: (w) => w.sparse.layer.path,
    }),
    downloadScenario({
      name: 'roamdesk base', group: 'replicate', description: 'roamdesk server → empty device: the whole base (verified, published)',
      build: async (w, store) => {
        const base = await store.importImage(w.base.path);
        return { chain: [base], held: [] };
      },
      changed: (w) => w.base.fileBytes, expect: (w) => w.base.path,
    }),
    downloadScenario({
      name: 'roamdesk base, unverified', group: 'replicate',
      description: 'the same with piece and object hashing off and nothing published (benchmark-only mode: what verification costs, R6)',
      build: async (w, store) => {
        const base = await store.importImage(w.base.path);
        return { chain: [base], held: [] };
      },
      changed: (w) => w.base.fileBytes, expect: null, withoutVerification: true,
    }),
    downloadScenario({
      name: 'roamdesk v2 difference', group: 'update',
      description: 'the server published v2 as a layer over v1 once (qemu-img rebase, untimed); the device holding v1 fetches that layer',
      build: async (w, store) => {
        const v1 = await store.importImage(w.base.path);
        const v2 = await store.importImage(w.v2.path);
        const diff = await store.importDifference(v1.id, v2.id);
        if (diff === null) throw new Error('v2 equals v1');
        return { chain: [v1, diff], held: [v1] };
      },
      changed: (w) => w.v2.changedBytes, expect: (w) => w.v2.path,
    }),
    uploadScenario({ upgrade: true }),
    uploadScenario({ upgrade: false }),
  ];
  if (opts.withThrottled) {
    for (const [group, link] of [['checkout-1gbit', LINK_1GBIT], ['checkout-100mbit', LINK_100MBIT]] as const) {
      for (const compression of ['auto', 'off'] as const) {
        scenarios.push(downloadScenario({
          name: `roamdesk layer @${group.slice(9)}, compression ${compression}`, group,
          description: `the check-out layer through the token-bucket proxy, compression ${compression}`,
          build: baseAndLayer, changed: (w) => w.layer.changedBytes, expect: (w) => w.layer.path, compression, link,
        }));
      }
    }
  }
  return scenarios;
}
