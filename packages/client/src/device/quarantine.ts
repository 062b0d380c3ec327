// Quarantine: local work the server no longer wants (the lease moved away: rollback, cancelled check-out,
// revoked device, stale check-in) is never deleted. It moves to `<ROAMDESK_HOME>/quarantine/<desktop>-<time>/`:
//
//   quarantine.json   what it is: desktop, why, when, generation, the chain (image first), which layers were
//                     never sent, the overlay's file name, byte counts
//   README.txt        the same for humans, and how to get a disk out of it
//   objects/          the whole chain: image and layers hard-linked from the local store (no copy on one file
//                     system), the unsent layers and the overlay MOVED here; relative backing names resolve
//
// The directory is laid out as a store (objects/, meta/), so exporting it is the store's own exportChain
// (`qemu-img convert -f qcow2` through the headers' relative names, each link checked first).

import { copyFile, link, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';

import { Store } from '@roamdesk/store';

import { writeFileAtomic } from '../fsutil.ts';
import { DeviceError } from './errors.ts';
import { pendingLayers, type LocalDesktop } from './records.ts';

export const QUARANTINE_DIR = 'quarantine';
const ENTRY_RE = /^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,62}-\d{8}T\d{6}Z(?:-\d+)?$/;

export interface QuarantineEntry {
  version: 1;
  id: string;
  desktop: string;
  desktopId: string;
  reason: string;
  createdAt: string;
  generation: number;
  server: string;
  /** Image first; the last one is the newest sealed layer. */
  chain: string[];
  replicatedTop: string;
  /** Layers sealed here and never accepted by the server. */
  unsentLayers: string[];
  /** The overlay's file name in objects/ (null when there was none). */
  overlay: string | null;
  bytesUnsent: number;
  /** Where it lives. */
  path: string;
}

function stamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'EXDEV' && code !== 'EPERM') throw err;
    await copyFile(from, to);
  }
}

async function moveFile(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await copyFile(from, to);
    await rm(from, { force: true });
  }
}

/**
 * Move the desktop's local work into a new quarantine entry. The local VM must be stopped. The layers that the
 * server never accepted are removed from the local store afterwards (they live on in the entry); the image and
 * replicated layers stay in the store as well (they are shared, hard-linked).
 */
export async function quarantineDesktop(home: string, store: Store, rec: LocalDesktop, reason: string, now = new Date()): Promise<QuarantineEntry> {
  const root = join(home, QUARANTINE_DIR);
  await mkdir(root, { recursive: true, mode: 0o700 });
  let id = `${rec.name}-${stamp(now)}`;
  for (let n = 2; await stat(join(root, id)).then(() => true, () => false); n += 1) id = `${rec.name}-${stamp(now)}-${n}`;
  const dir = join(root, id);
  const objects = join(dir, 'objects');
  await mkdir(objects, { recursive: true, mode: 0o700 });

  const unsent = pendingLayers(rec);
  for (const o of rec.chain) await linkOrCopy(store.objectPath(o.id), join(objects, `${o.id}.qcow2`));
  let overlay: string | null = null;
  if (rec.overlay !== null && (await stat(rec.overlay.path).then(() => true, () => false))) {
    overlay = basename(rec.overlay.path);
    await moveFile(rec.overlay.path, join(objects, overlay));
  }
  const bytesUnsent = unsent.reduce((n, o) => n + o.size, 0) + (overlay !== null ? (await stat(join(objects, overlay))).size : 0);
  const entry: QuarantineEntry = {
    version: 1, id, desktop: rec.name, desktopId: rec.desktopId, reason, createdAt: now.toISOString(), generation: rec.generation,
    server: rec.server, chain: rec.chain.map((o) => o.id), replicatedTop: rec.replicatedTop, unsentLayers: unsent.map((o) => o.id),
    overlay, bytesUnsent, path: dir,
  };
  await writeFileAtomic(join(dir, 'quarantine.json'), `${JSON.stringify(entry, null, 2)}\n`, 0o600);
  await writeFile(join(dir, 'README.txt'), readme(entry), { mode: 0o600 });

  // The unsent layers now live here; drop them from the store, top first (a layer's child must go before it).
  for (const o of [...unsent].reverse()) await store.remove(o.id).catch(() => undefined);
  return entry;
}

function readme(e: QuarantineEntry): string {
  return [
    `Roamdesk quarantine ${e.id}`,
    '',
    `Desktop ${e.desktop} (${e.desktopId}) from ${e.server}, lease generation ${e.generation}.`,
    `Quarantined ${e.createdAt}: ${e.reason}.`,
    '',
    'The server no longer accepts this work, so it was moved here instead of being deleted.',
    `Unsent layers: ${e.unsentLayers.length === 0 ? 'none' : e.unsentLayers.join(', ')}`,
    `Overlay (writes since the last seal): ${e.overlay ?? 'none'}`,
    `Unsent bytes: ${e.bytesUnsent}`,
    `The last state the server holds: ${e.replicatedTop}`,
    '',
    'objects/ holds the whole chain (image first, relative backing names), so the disk as this device last saw it is',
    `  roamdesk quarantine export ${e.id} FILE.qcow2`,
    'which writes one standalone qcow2 (qemu-img convert of the chain). Nothing here is deleted automatically.',
    '',
  ].join('\n');
}

function root(home: string): string {
  return join(home, QUARANTINE_DIR);
}

export async function listQuarantine(home: string): Promise<QuarantineEntry[]> {
  let names: string[];
  try {
    names = await readdir(root(home));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: QuarantineEntry[] = [];
  for (const n of names.sort()) {
    if (!ENTRY_RE.test(n)) continue;
    try {
      out.push(await readEntry(home, n));
    } catch {
      // an unreadable entry is skipped in the list; `export` names the problem
    }
  }
  return out;
}

export async function readEntry(home: string, id: string): Promise<QuarantineEntry> {
  if (!ENTRY_RE.test(id)) throw new DeviceError('DEVICE_ERR_QUARANTINE', `${JSON.stringify(id.slice(0, 80))} is not a quarantine id`, { hint: 'roamdesk quarantine list shows the ids' });
  const dir = join(root(home), id);
  let text: string;
  try {
    text = await readFile(join(dir, 'quarantine.json'), 'utf8');
  } catch (err) {
    throw new DeviceError('DEVICE_ERR_QUARANTINE', `no quarantine entry ${id}`, { id, hint: 'roamdesk quarantine list shows the ids' }, { cause: err });
  }
  const e = JSON.parse(text) as QuarantineEntry;
  return { ...e, id, path: dir };
}

/** One standalone qcow2 of the entry's newest state (overlay if any, else the newest layer) at `file`. */
export async function exportQuarantine(home: string, id: string, file: string, opts: { onProgress?: (done: number, total: number) => void } = {}): Promise<{ file: string; top: string }> {
  const e = await readEntry(home, id);
  const top = e.chain.at(-1);
  if (top === undefined) throw new DeviceError('DEVICE_ERR_QUARANTINE', `quarantine ${id} has no chain`, { id });
  const store = await Store.open(e.path);
  const source = e.overlay !== null ? { path: join(e.path, 'objects', e.overlay), parent: top } : top;
  // Every link of the chain is checked against the qcow2 headers before qemu-img follows them.
  await store.chain(top);
  await store.exportChain(source, file, opts.onProgress !== undefined ? { onProgress: (p) => opts.onProgress?.(p.bytesDone, p.bytesTotal) } : {});
  return { file, top: e.overlay ?? top };
}
