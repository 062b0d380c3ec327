/**
 * Live sealing: the VM keeps running; its writes move to a new overlay and the old one becomes a layer.
 *
 *  1. `qemu-img create -f qcow2 -b <old overlay's file name> -F qcow2 -u <new> <size>`: a RELATIVE backing name
 *     (blockdev-snapshot-sync would write an absolute or json: name — notes/guest.md §4 traps 1–2). `-u` because
 *     the VM holds the old overlay's write lock, so qemu-img may not open it.
 *  2. QMP blockdev-add {driver: qcow2, node-name: <new>, file: {driver: file, filename}, backing: null}, with the
 *     options every writable top node gets (WRITABLE_NODE_OPTIONS: zero writes and discards become zero clusters).
 *  3. QMP blockdev-snapshot {node: <active>, overlay: <new>}: guest writes now land in <new>; QEMU flushes the old
 *     node and reopens it read-only (its fd becomes O_RDONLY; qemu-img can then open it without -U).
 *  4. Hash the old overlay and publish it as `<hash>.qcow2` by link(2), KEEPING the old name.
 *  5. QMP change-backing-file: <new>'s header now names `<hash>.qcow2`.
 *  The old overlay name stays, a second link to the layer (`retired` in the result), until the VM has stopped:
 *  QEMU keeps the old node open under that file name and opens it again by name when a later blockdev-snapshot
 *  reopens the chain read-only (QEMU 7.2 file-posix reopen). Without it the NEXT live seal of the same VM fails
 *  ("Could not open '…overlay-….qcow2'"). `Store.removeRetired` removes it once the VM is gone.
 *
 * Crash safety (what a restart finds):
 *  - during 1–2: an unused new overlay file (verify() lists it; nothing references it). The VM runs on as before.
 *  - after 3, before 4: the VM writes into <new>, whose header names the old overlay by its file name, which
 *    exists: the chain is valid on disk. The caller's record of the overlay is stale; QEMU's block graph
 *    (query-block) is the truth: `resumeLiveSeal` runs steps 4–5 while the VM runs, and sealing <old> offline
 *    later is safe too (it is now read-only for QEMU). A blockdev-snapshot whose answer was lost may have taken
 *    effect: <new> is deleted on failure only when query-block still shows the old top node.
 *  - after 4, before 5: the layer exists, and the old name still exists (same inode), so <new>'s header still
 *    resolves. This is why the old name is kept until 5 succeeded. `resumeLiveSeal` finishes it (4 again is a no-op).
 *  - after 5: the old name is a redundant extra link to the layer (verify() reports it as a stale link until
 *    the caller removes it). If step 5 fails, <new>'s header still names it: it must stay.
 *
 * QEMU 7.2 detail: change-backing-file's `device` must be the ROOT NODE NAME of the device's tree (now <new>),
 * not the qdev id: blockdev-attached devices have an anonymous BlockBackend, and the lookup is by backend name or
 * node name only. `vm.device` (the qdev id) is used to verify, via query-block, that `activeNode` really is the
 * device's top node before anything is changed.
 */
import { stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

import { checkUntrustedLayer } from '@roamdesk/qcow2';
import { type QemuImg, WRITABLE_NODE_OPTIONS } from '@roamdesk/qemu';
import type { QmpBlockInfo, QmpClient } from '@roamdesk/qmp';

import { discard, fsyncDir, fsyncPath } from './durable.ts';
import { ParentMissingError, SealFailedError, type SealStep } from './errors.ts';
import { sealHash } from './hash-copy.ts';
import type { SealOptions } from './seal.ts';
import { readHeader } from './header-io.ts';
import { isOverlayFileName, newOverlayFileName, objectFileName } from './ids.ts';
import type { Layout, Overlay } from './layout.ts';
import { publishObject } from './publish.ts';
import type { ObjectInfo } from './sidecar.ts';

interface Ctx {
  readonly layout: Layout;
  readonly img: QemuImg;
}

export interface LiveVm {
  /** Only `execute` is used. */
  readonly qmp: Pick<QmpClient, 'execute'>;
  /** The qdev id of the disk device (e.g. "disk0"). */
  readonly device: string;
  /** The node name of the overlay the device writes to now. */
  readonly activeNode: string;
}

export interface LiveSealResult {
  readonly layer: ObjectInfo;
  /** The new writable overlay; its parent is the new layer. */
  readonly overlay: Overlay;
  /** Node name of the new overlay in the VM. */
  readonly activeNode: string;
  /** The old overlay's path, now a second link to the layer: the running VM may reopen it by name. Remove it with `Store.removeRetired` once the VM has stopped. */
  readonly retired: string;
}

async function step<T>(name: SealStep, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (e instanceof SealFailedError) throw e;
    throw new SealFailedError(`live seal failed at ${name}: ${(e as Error).message}`, { step: name }, { cause: e });
  }
}

function deviceMatches(qdev: string | undefined, device: string): boolean {
  if (qdev === undefined) return false;
  return qdev === device || qdev.startsWith(`/machine/peripheral/${device}/`);
}

export async function sealLive(ctx: Ctx, overlay: Overlay, vm: LiveVm, opts: { label?: string } & SealOptions = {}): Promise<LiveSealResult> {
  const oldPath = ctx.layout.overlayPath(overlay);
  if (!(await ctx.layout.exists(ctx.layout.objectPath(overlay.parent)))) throw new ParentMissingError(overlay.parent, oldPath);

  // Precondition: activeNode is the device's top node and is the file we were given.
  const top = await topNodeFile(vm);
  if (top !== null && top !== oldPath) {
    throw new SealFailedError(`node ${vm.activeNode} is ${top}, not ${oldPath}`, { step: 'precondition', file: top });
  }
  const oldHeader = await readHeader(oldPath);

  // 1. The next overlay, backing = the old overlay's file name (relative, resolved in objects/).
  const newName = newOverlayFileName(opts.label);
  const newPath = join(ctx.layout.objectsDir, newName);
  const newNode = `rd-${newName.slice(-22, -6)}`; // "rd-<16 hex>": unique, a valid QEMU node name
  await step('create-overlay', async () => {
    await ctx.img.create(newPath, {
      backing: { name: basename(oldPath), format: 'qcow2' },
      size: Number(oldHeader.virtualSize),
      unsafe: true,
    });
    await fsyncPath(newPath);
    await fsyncDir(ctx.layout.objectsDir);
  });
  // 2–3. Attach it and switch guest writes to it. Until blockdev-snapshot returns, a failure leaves the VM as it was.
  try {
    await step('blockdev-add', () => vm.qmp.execute('blockdev-add', {
      driver: 'qcow2', 'node-name': newNode, ...WRITABLE_NODE_OPTIONS, file: { driver: 'file', filename: newPath, discard: 'unmap' }, backing: null,
    }));
    await step('blockdev-snapshot', () => vm.qmp.execute('blockdev-snapshot', { node: vm.activeNode, overlay: newNode }));
  } catch (e) {
    // The command may have taken effect although its answer was lost (the monitor connection broke): then the guest
    // writes into <new> already, and deleting it would lose them. Only a VM that shows its old top node gets it back.
    const stillOld = await vm.qmp.execute('query-block').then((b) => topOf(b, vm.device)?.['node-name'] === vm.activeNode, () => false);
    if (stillOld) {
      await vm.qmp.execute('blockdev-del', { 'node-name': newNode }).catch(() => undefined);
      await discard(newPath);
    }
    throw e;
  }

  return finish(ctx, overlay, { path: newPath, node: newNode }, vm, opts);
}

/**
 * Steps 4–5, for a seal whose blockdev-snapshot is done: `next` is the overlay the guest writes into now, resting on
 * the old one (by its name, or by the layer id after step 5). Both steps may run again: publishing an id that exists
 * does nothing, and change-backing-file writes the same name.
 */
async function finish(ctx: Ctx, overlay: Overlay, next: { path: string; node: string }, vm: LiveVm, opts: SealOptions): Promise<LiveSealResult> {
  const oldPath = ctx.layout.overlayPath(overlay);
  // 4. The old overlay is now read-only in QEMU: check its header as we would any layer, hash, publish (keep name).
  const layer = await step('publish', async () => {
    const header = await readHeader(oldPath);
    checkUntrustedLayer(header, objectFileName(overlay.parent));
    const check = await ctx.img.check(oldPath, { noBacking: true, forceShare: true });
    if (check.status !== 'ok') throw new SealFailedError(`qemu-img check reports the old overlay ${check.status}`, { step: 'publish', report: check.report });
    await fsyncPath(oldPath);
    const { sha256, bytes } = await sealHash(oldPath, { onData: opts.onData, offload: opts.sha256Offload });
    const r = await publishObject(ctx.layout, oldPath, {
      id: sha256, kind: 'layer', parent: overlay.parent, size: bytes, virtualSize: Number(header.virtualSize),
    }, { keepSource: true });
    return r.info;
  });

  // 5. Name the layer by id in the new overlay's header (QEMU rewrites the header and flushes it).
  await step('change-backing-file', () => vm.qmp.execute('change-backing-file', {
    device: next.node, 'image-node-name': next.node, 'backing-file': objectFileName(layer.id),
  }));
  await fsyncPath(next.path);
  return { layer, overlay: { path: next.path, parent: layer.id }, activeNode: next.node, retired: oldPath };
}

/**
 * Finishes a live seal that was interrupted after its blockdev-snapshot (the process died, or a later step failed)
 * while the VM still runs: the guest writes into an overlay that rests on `overlay`, which the caller's record still
 * names. Steps 4–5 run on it, so the writes made since are not left out of the chain. Null when the device's top
 * node is `overlay` itself: nothing was interrupted. `vm.activeNode` is the device's top node now.
 */
export async function resumeLiveSeal(ctx: Ctx, overlay: Overlay, vm: LiveVm, opts: SealOptions = {}): Promise<LiveSealResult | null> {
  const oldPath = ctx.layout.overlayPath(overlay);
  const top = await topNodeFile(vm);
  if (top === oldPath) return null;
  const refuse = (why: string): SealFailedError =>
    new SealFailedError(`the VM's disk is ${top ?? 'a node without a plain file name'}, ${why}`, { step: 'precondition', file: top, overlay: oldPath });
  if (top === null || dirname(top) !== ctx.layout.objectsDir || !isOverlayFileName(basename(top))) throw refuse(`not ${oldPath} nor an overlay in ${ctx.layout.objectsDir}`);
  const backing = (await readHeader(top)).backing?.name ?? null;
  const mine = await stat(oldPath);
  const restsOnOld = backing !== null && !backing.includes('/') && (backing === basename(oldPath) ||
    await stat(join(ctx.layout.objectsDir, backing)).then((b) => b.ino === mine.ino && b.dev === mine.dev, () => false));
  if (!restsOnOld) throw refuse(`which does not rest on ${oldPath}`);
  return finish(ctx, overlay, { path: top, node: vm.activeNode }, vm, opts);
}

function topOf(blocks: readonly QmpBlockInfo[], device: string): QmpBlockInfo['inserted'] {
  return blocks.find((b) => deviceMatches(b.qdev, device) || b.device === device)?.inserted;
}

/**
 * Checks that `vm.activeNode` is the device's top node and answers its file's path. Null when QEMU reports a json:
 * pseudo-filename (a node opened with explicit child options) that names no plain file.
 */
async function topNodeFile(vm: LiveVm): Promise<string | null> {
  return step('precondition', async () => {
    const inserted = topOf(await vm.qmp.execute('query-block'), vm.device);
    if (inserted?.['node-name'] !== vm.activeNode) {
      throw new SealFailedError(`device ${vm.device} does not have ${vm.activeNode} as its top node`, { step: 'precondition', found: inserted?.['node-name'] ?? null });
    }
    return plainFileName(inserted.file);
  });
}

/** `json:{"driver":"qcow2","file":{"driver":"file","filename":"/x"}}` → "/x" (QEMU's pseudo-filenames); a path as is. */
function plainFileName(file: string): string | null {
  if (!file.startsWith('json:')) return file;
  try {
    const o = JSON.parse(file.slice(5)) as { file?: { driver?: unknown; filename?: unknown } };
    return o.file?.driver === 'file' && typeof o.file.filename === 'string' ? o.file.filename : null;
  } catch {
    return null;
  }
}

/**
 * Remove a live seal's `retired` name once no VM has it open. Only an overlay-named file in objects/ that is a
 * second link (a published layer holds the other) is removed: never a writable overlay's only name.
 */
export async function removeRetired(layout: Layout, path: string): Promise<boolean> {
  if (dirname(path) !== layout.objectsDir || !isOverlayFileName(basename(path))) {
    throw new SealFailedError(`${path} is not a retired overlay name in ${layout.objectsDir}`, { step: 'retire', path });
  }
  const st = await stat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    throw e;
  });
  if (st === null) return false;
  if (st.nlink < 2) throw new SealFailedError(`${path} is the only name of its file, not a retired one`, { step: 'retire', path });
  await discard(path);
  await fsyncDir(layout.objectsDir);
  return true;
}
