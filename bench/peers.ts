/**
 * The peers: cp, rsync and the qemu-img pipeline on the same workload files, the numbers Roamdesk must beat
 * (notes/performance.md, "Transfer anchors"). Each copy is timed up to and including fsync of the destination and
 * verified afterwards: same bytes (cmp) where the tool copies a file, same guest view (qemu-img compare, with the
 * right backing chain linked beside the copy) always.
 */
import { copyFile, mkdir, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';

import { startMeter } from './cpu.ts';
import { runCommand } from './exec.ts';
import { fsyncFile, linkBeside } from './fsutil.ts';
import { assertBacking, assertSameBytes, assertSameGuest, createOverlay } from './qemu-img.ts';
import { runRsync, startRsyncDaemon, type RsyncDaemon } from './rsync.ts';
import type { GroupName, RunContext, Scenario } from './scenario.ts';
import { LINK_1GBIT, startThrottleProxy, type ThrottleProxy } from './throttle-proxy.ts';
import type { ImageFile, Workload } from './workload.ts';

/** The files a copy needs beside it so that its backing chain resolves (relative backing names). */
type ChainOf = (w: Workload) => readonly ImageFile[];

interface CopyTask {
  readonly name: string;
  readonly group: GroupName;
  readonly peer?: 'cp' | 'rsync';
  /** The file to deliver. */
  readonly source: (w: Workload) => ImageFile;
  /** Its backing chain, linked beside the copy before verifying. */
  readonly chain: ChainOf;
  /** The task's changed guest bytes (the floor of T_phys). */
  readonly changed: (w: Workload) => number;
  /** cmp the copy against the source (cheap for layers; a base is checked by qemu-img compare alone). */
  readonly exact: boolean;
}

/** Checks a delivered file: exact bytes when asked, the relative backing name, and the guest view of its chain. */
async function verifyCopy(ctx: RunContext, task: CopyTask, dest: string): Promise<void> {
  const src = task.source(ctx.workload);
  for (const img of task.chain(ctx.workload)) await linkBeside(ctx.runDir, img.path);
  if (task.exact) await assertSameBytes(dest, src.path);
  await assertBacking(dest, src.backing);
  await assertSameGuest(dest, src.path);
}

/** `cp SRC DEST` and fsync, source cold. */
function cpScenario(task: CopyTask): Scenario {
  return {
    name: task.name,
    group: task.group,
    ...(task.peer ? { peer: task.peer } : {}),
    description: 'cp to a fresh destination, cold source, fsync',
    async run(ctx) {
      const src = task.source(ctx.workload);
      const dest = join(ctx.runDir, basename(src.file));
      const meter = startMeter();
      await runCommand('cp', [src.path, dest]);
      await fsyncFile(dest);
      const m = await meter.stop();
      // A local copy has no wire; its "wire" is the bytes a transfer of the whole file would send.
      return { ...m, bytesWritten: src.fileBytes, bytesRead: src.fileBytes, bytesOnWire: src.fileBytes, changedBytes: task.changed(ctx.workload) };
    },
    verify: (ctx) => verifyCopy(ctx, task, join(ctx.runDir, basename(task.source(ctx.workload).file))),
  };
}

interface RsyncPull extends CopyTask {
  /** Put in place at the destination name before the run (the client's old copy, used as rsync's basis). */
  readonly basis?: (w: Workload) => ImageFile;
  readonly flags: readonly string[];
  /** Through the token-bucket proxy at this many bytes/s. */
  readonly linkBytesPerSecond?: number;
}

/** The client pulls from an rsync daemon on 127.0.0.1 serving the workload directory (read-only). */
function rsyncPullScenario(task: RsyncPull): Scenario {
  let daemon: RsyncDaemon | undefined;
  let proxy: ThrottleProxy | undefined;
  const destOf = (ctx: RunContext): string => join(ctx.runDir, basename(task.source(ctx.workload).file));
  const how = task.basis ? 'onto the old file as basis' : 'to a fresh destination';
  return {
    name: task.name,
    group: task.group,
    ...(task.peer ? { peer: task.peer } : {}),
    ...(task.linkBytesPerSecond ? { linkBytesPerSecond: task.linkBytesPerSecond } : {}),
    description: `rsync daemon pull ${task.flags.join(' ')} ${how}${task.linkBytesPerSecond ? ` via a ${(task.linkBytesPerSecond * 8) / 1e9} Gbit/s proxy` : ''}, cold, fsync`.replace(/ +/g, ' '),
    async setup(ctx) {
      const conf = join(ctx.runDir, '.rsyncd');
      await mkdir(conf);
      daemon = await startRsyncDaemon(conf, { src: { path: ctx.workload.dir, readOnly: true } });
      if (task.linkBytesPerSecond) proxy = await startThrottleProxy({ targetPort: daemon.port, bytesPerSecond: task.linkBytesPerSecond });
      if (task.basis) {
        await copyFile(task.basis(ctx.workload).path, destOf(ctx));
        await fsyncFile(destOf(ctx));
      }
    },
    async run(ctx) {
      if (!daemon) throw new Error('no rsync daemon');
      const src = task.source(ctx.workload);
      const port = proxy?.port ?? daemon.port;
      const url = `rsync://127.0.0.1:${port}/src/${src.file}`;
      const meter = startMeter({ pids: [daemon.pid] });
      const stats = await runRsync(['-I', ...task.flags, url, destOf(ctx)]);
      await fsyncFile(destOf(ctx));
      const m = await meter.stop();
      const basisBytes = task.basis ? task.basis(ctx.workload).fileBytes : 0;
      const counters: Record<string, number> = { literalBytes: stats.literalBytes, matchedBytes: stats.matchedBytes };
      if (proxy) Object.assign(counters, { proxyUpBytes: proxy.counters().up, proxyDownBytes: proxy.counters().down });
      return {
        ...m,
        // The receiver writes a whole new file (temp file + rename) and reads its basis; the sender reads the source.
        bytesWritten: stats.totalFileBytes,
        bytesRead: stats.totalFileBytes + basisBytes,
        bytesOnWire: stats.sentBytes + stats.receivedBytes,
        changedBytes: task.changed(ctx.workload),
        counters,
      };
    },
    verify: (ctx) => verifyCopy(ctx, task, destOf(ctx)),
    async teardown() {
      await proxy?.close();
      await daemon?.stop();
      proxy = undefined;
      daemon = undefined;
    },
  };
}

/**
 * Check-in as notes/performance.md measured it: the server holds the checked-out layer; the client's copy of the
 * layer has grown by its new writes; rsync pushes the client's file onto the server's (as `--inplace`, or default).
 */
function rsyncCheckinScenario(name: string, flags: readonly string[], peer?: 'rsync'): Scenario {
  let daemon: RsyncDaemon | undefined;
  const serverDir = (ctx: RunContext): string => join(ctx.runDir, 'server');
  const serverFile = (ctx: RunContext): string => join(serverDir(ctx), 'layer.qcow2');
  return {
    name,
    group: 'checkin',
    ...(peer ? { peer } : {}),
    description: `rsync push ${flags.join(' ') || '(default: temp file + rename)'} of the client's grown layer onto the server's layer.qcow2, fsync`,
    async setup(ctx) {
      await mkdir(serverDir(ctx));
      await copyFile(ctx.workload.layer.path, serverFile(ctx));
      await fsyncFile(serverFile(ctx));
      await linkBeside(serverDir(ctx), ctx.workload.base.path);
      const conf = join(ctx.runDir, '.rsyncd');
      await mkdir(conf);
      daemon = await startRsyncDaemon(conf, { server: { path: serverDir(ctx), readOnly: false } });
    },
    async run(ctx) {
      if (!daemon) throw new Error('no rsync daemon');
      const client = ctx.workload.clientLayer;
      const meter = startMeter({ pids: [daemon.pid] });
      const stats = await runRsync(['-I', ...flags, client.path, daemon.url('server', 'layer.qcow2')]);
      await fsyncFile(serverFile(ctx));
      const m = await meter.stop();
      const inplace = flags.includes('--inplace');
      return {
        ...m,
        // --inplace rewrites only the blocks that differ; the default mode writes a whole new file.
        bytesWritten: inplace ? stats.literalBytes : stats.totalFileBytes,
        bytesRead: client.fileBytes + ctx.workload.layer.fileBytes,
        bytesOnWire: stats.sentBytes + stats.receivedBytes,
        changedBytes: ctx.workload.checkin.changedBytes,
        counters: { literalBytes: stats.literalBytes, matchedBytes: stats.matchedBytes },
      };
    },
    async verify(ctx) {
      const client = ctx.workload.clientLayer;
      await assertSameBytes(serverFile(ctx), client.path);
      await assertBacking(serverFile(ctx), client.backing);
      await assertSameGuest(serverFile(ctx), client.path);
    },
    async teardown() {
      await daemon?.stop();
      daemon = undefined;
    },
  };
}

/**
 * The qemu-img pipeline for a base update (notes/performance.md): the server computes v2 − v1 as an overlay of v1
 * (`create -b v2`, then a safe `rebase -b v1` that compares contents), the diff is shipped (cp + fsync), and the
 * client commits it into its copy of v1. The guest view then equals v2; the file bytes differ.
 */
function qemuImgUpdateScenario(): Scenario {
  const serverDir = (ctx: RunContext): string => join(ctx.runDir, 'server');
  const clientDir = (ctx: RunContext): string => join(ctx.runDir, 'client');
  return {
    name: 'qemu-img pipeline v1→v2',
    group: 'update',
    description: 'server: create -b v2 + safe rebase -b v1 (diff); cp diff + fsync; client: commit into its v1 + fsync',
    async setup(ctx) {
      await mkdir(serverDir(ctx));
      await mkdir(clientDir(ctx));
      await linkBeside(serverDir(ctx), ctx.workload.base.path);
      await linkBeside(serverDir(ctx), ctx.workload.v2.path);
      const clientBase = join(clientDir(ctx), 'v1.qcow2');
      await copyFile(ctx.workload.base.path, clientBase);
      await fsyncFile(clientBase);
    },
    async run(ctx) {
      const w = ctx.workload;
      const diff = join(serverDir(ctx), 'diff.qcow2');
      const shipped = join(clientDir(ctx), 'diff.qcow2');
      const clientBase = join(clientDir(ctx), 'v1.qcow2');
      const meter = startMeter();
      const t0 = performance.now();
      await createOverlay(serverDir(ctx), 'diff.qcow2', 'v2.qcow2');
      await runCommand('qemu-img', ['rebase', '-f', 'qcow2', '-b', 'v1.qcow2', '-F', 'qcow2', 'diff.qcow2'], { cwd: serverDir(ctx) });
      await fsyncFile(diff);
      const t1 = performance.now();
      await runCommand('cp', [diff, shipped]);
      await fsyncFile(shipped);
      const t2 = performance.now();
      await runCommand('qemu-img', ['commit', '-q', '-f', 'qcow2', '-d', shipped]);
      await fsyncFile(clientBase);
      const t3 = performance.now();
      const m = await meter.stop();
      const diffBytes = (await stat(diff)).size;
      return {
        ...m,
        // The diff is written three times (made, shipped, committed); the safe rebase reads both bases in full.
        bytesWritten: 3 * diffBytes,
        bytesRead: w.base.fileBytes + w.v2.fileBytes + 2 * diffBytes,
        bytesOnWire: diffBytes,
        changedBytes: w.v2.changedBytes,
        phases: { diff: (t1 - t0) / 1000, ship: (t2 - t1) / 1000, commit: (t3 - t2) / 1000 },
        counters: { diffBytes },
      };
    },
    async verify(ctx) {
      await assertSameGuest(join(clientDir(ctx), 'v1.qcow2'), ctx.workload.v2.path);
    },
  };
}

const none: ChainOf = () => [];
const onBase: ChainOf = (w) => [w.base];
const onSparseBase: ChainOf = (w) => [w.sparse.base];

/** Every peer scenario, in report order. `withThrottled` adds the 1 Gbit/s proxy group. */
export function peerScenarios(opts: { withThrottled: boolean } = { withThrottled: true }): Scenario[] {
  const layer = (w: Workload): ImageFile => w.layer;
  const layerChanged = (w: Workload): number => w.layer.changedBytes;
  const sparseLayer = (w: Workload): ImageFile => w.sparse.layer;
  const sparseChanged = (w: Workload): number => w.sparse.layer.changedBytes;
  const base = (w: Workload): ImageFile => w.base;
  const baseBytes = (w: Workload): number => w.base.allocatedBytes;
  const v2 = (w: Workload): ImageFile => w.v2;
  const v2Changed = (w: Workload): number => w.v2.changedBytes;
  const checkinChanged = (w: Workload): number => w.checkin.changedBytes;

  const scenarios: Scenario[] = [
    cpScenario({ name: 'cp layer', group: 'checkout', peer: 'cp', source: layer, chain: onBase, changed: layerChanged, exact: true }),
    rsyncPullScenario({ name: 'rsync layer', group: 'checkout', peer: 'rsync', source: layer, chain: onBase, changed: layerChanged, exact: true, flags: [] }),
    cpScenario({ name: 'cp layer, 256 GiB sparse', group: 'checkout', source: sparseLayer, chain: onSparseBase, changed: sparseChanged, exact: true }),
    rsyncPullScenario({ name: 'rsync layer, 256 GiB sparse', group: 'checkout', source: sparseLayer, chain: onSparseBase, changed: sparseChanged, exact: true, flags: [] }),

    rsyncCheckinScenario('rsync push --inplace', ['--inplace'], 'rsync'),
    rsyncCheckinScenario('rsync push', []),
    cpScenario({ name: 'cp client layer', group: 'checkin', peer: 'cp', source: (w) => w.clientLayer, chain: onBase, changed: checkinChanged, exact: true }),
    cpScenario({
      name: 'cp check-in overlay', group: 'checkin', source: (w) => w.checkin, chain: (w) => [w.layer, w.base], changed: checkinChanged, exact: true,
    }),

    cpScenario({ name: 'cp base', group: 'replicate', peer: 'cp', source: base, chain: none, changed: baseBytes, exact: false }),
    rsyncPullScenario({ name: 'rsync base', group: 'replicate', peer: 'rsync', source: base, chain: none, changed: baseBytes, exact: false, flags: [] }),

    rsyncPullScenario({
      name: 'rsync v1→v2, v1 as basis', group: 'update', peer: 'rsync', source: v2, chain: none, changed: v2Changed, exact: false, flags: [], basis: base,
    }),
    qemuImgUpdateScenario(),
    cpScenario({ name: 'cp v2', group: 'update', peer: 'cp', source: v2, chain: none, changed: v2Changed, exact: false }),
  ];
  if (opts.withThrottled) {
    scenarios.push(rsyncPullScenario({
      name: 'rsync layer @1 Gbit/s', group: 'checkout-1gbit', peer: 'rsync', source: layer, chain: onBase, changed: layerChanged, exact: true, flags: [],
      linkBytesPerSecond: LINK_1GBIT,
    }));
  }
  return scenarios;
}
