/**
 * verify(): re-hash every object (restic-style "check --read-data") and check the structure:
 * id = SHA-256 of the bytes; header backing = the sidecar's parent, by id-based relative name, format qcow2;
 * parents present; overlays' backing present; and leftovers (orphan sidecars, temp files, stray files, overlay
 * names that are extra links of a published layer).
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { detectFormat, parseHeader, readLeadingBytesOf } from './header-io.ts';
import { idFromObjectFileName, idFromSidecarFileName, isOverlayFileName, isTempFileName, objectFileName, type ObjectId } from './ids.ts';
import type { Layout } from './layout.ts';
import { hashFile } from './hash-copy.ts';
import { ProgressMeter, type ProgressCallback } from './progress.ts';

export type VerifyProblemKind =
  | 'bad-hash'
  | 'bad-header'
  | 'missing-parent'
  | 'header-mismatch'
  | 'missing-sidecar'
  | 'orphan-sidecar'
  | 'orphan-overlay'
  | 'stale-overlay-link'
  | 'temp-file'
  | 'stray-file';

export interface VerifyProblem {
  readonly kind: VerifyProblemKind;
  /** File name inside objects/ or meta/. */
  readonly name: string;
  readonly detail: string;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly objects: number;
  readonly overlays: number;
  readonly bytesHashed: number;
  readonly problems: readonly VerifyProblem[];
}

export interface VerifyOptions {
  readonly onProgress?: ProgressCallback;
  readonly signal?: AbortSignal;
}

type BackingCheck = { readonly ok: true; readonly backing: string | null } | { readonly ok: false; readonly detail: string };

async function backingOf(path: string): Promise<BackingCheck> {
  try {
    const lead = await readLeadingBytesOf(path);
    if (detectFormat(lead) !== 'qcow2') return { ok: false, detail: 'not qcow2' };
    const h = parseHeader(lead);
    if (h.backing === null) return { ok: true, backing: null };
    if (h.backing.format !== 'qcow2') return { ok: false, detail: `backing format ${String(h.backing.format)}` };
    return { ok: true, backing: h.backing.name };
  } catch (e) {
    return { ok: false, detail: (e as Error).message };
  }
}

export async function verify(layout: Layout, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const problems: VerifyProblem[] = [];
  const names = (await readdir(layout.objectsDir)).sort();
  const ids = new Set<ObjectId>();
  const overlays: string[] = [];
  for (const name of names) {
    const id = idFromObjectFileName(name);
    if (id !== null) ids.add(id);
    else if (isOverlayFileName(name)) overlays.push(name);
    else if (isTempFileName(name)) problems.push({ kind: 'temp-file', name, detail: 'left by an interrupted write' });
    else problems.push({ kind: 'stray-file', name, detail: 'not an object, overlay or temp file' });
  }

  let total = 0;
  const inodes = new Map<number, ObjectId>();
  for (const id of ids) {
    const st = await stat(layout.objectPath(id));
    total += st.size;
    inodes.set(st.ino, id);
  }
  const meter = new ProgressMeter(total, opts.onProgress);
  let done = 0;

  for (const id of ids) {
    const name = objectFileName(id);
    const path = layout.objectPath(id);
    const base = done;
    const { sha256, bytes } = await hashFile(path, {
      signal: opts.signal,
      onProgress: (p) => meter.update(base + p.bytesDone),
    });
    done += bytes;
    if (sha256 !== id) problems.push({ kind: 'bad-hash', name, detail: `content hashes to ${sha256}` });

    const b = await backingOf(path);
    if (!b.ok) {
      problems.push({ kind: 'bad-header', name, detail: b.detail });
      continue;
    }
    const headerParent = b.backing === null ? null : idFromObjectFileName(b.backing);
    if (b.backing !== null && headerParent === null) {
      problems.push({ kind: 'header-mismatch', name, detail: `backing name ${JSON.stringify(b.backing)} is not an object name` });
    }
    if (headerParent !== null && !ids.has(headerParent)) {
      problems.push({ kind: 'missing-parent', name, detail: `parent ${headerParent} is not in the store` });
    }
    const sidecar = await layout.readSidecar(id);
    if (sidecar === null) {
      problems.push({ kind: 'missing-sidecar', name, detail: 'no valid meta/<id>.json' });
    } else if (sidecar.parent !== headerParent) {
      problems.push({ kind: 'header-mismatch', name, detail: `header names parent ${String(headerParent)}, sidecar says ${String(sidecar.parent)}` });
    }
  }

  for (const name of overlays) {
    const path = join(layout.objectsDir, name);
    const st = await stat(path);
    const linked = inodes.get(st.ino);
    if (linked !== undefined) {
      problems.push({ kind: 'stale-overlay-link', name, detail: `an extra name of layer ${linked} (interrupted seal); remove it once no overlay header names it` });
      continue;
    }
    const b = await backingOf(path);
    if (!b.ok) problems.push({ kind: 'orphan-overlay', name, detail: b.detail });
    else if (b.backing === null) problems.push({ kind: 'orphan-overlay', name, detail: 'has no backing file' });
    else {
      const parent = idFromObjectFileName(b.backing);
      const resolves = parent !== null ? ids.has(parent) : overlays.includes(b.backing);
      if (!resolves) problems.push({ kind: 'orphan-overlay', name, detail: `backing ${JSON.stringify(b.backing)} is not in the store` });
    }
  }

  for (const name of await readdir(layout.metaDir)) {
    const id = idFromSidecarFileName(name);
    if (id !== null && !ids.has(id)) problems.push({ kind: 'orphan-sidecar', name, detail: 'no object with this id' });
    else if (id === null && isTempFileName(name)) problems.push({ kind: 'temp-file', name: `meta/${name}`, detail: 'left by an interrupted write' });
  }
  meter.update(done, true);
  return { ok: problems.length === 0, objects: ids.size, overlays: overlays.length, bytesHashed: done, problems };
}
