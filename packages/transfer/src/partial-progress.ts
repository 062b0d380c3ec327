/**
 * What an interrupted download left behind, read without touching it: for `roamdesk status` and the UI.
 *
 * A download assembles object `<id>` in `<store>/incoming/dl-<id>/` (download.ts, partial-object.ts). Its journal lists the
 * pieces that were verified and written; this reader counts them and reads nothing else. It never re-hashes
 * (a status must be instant on a 100 GB image) and never writes: the journal is only a hint, so the figure is
 * "verified when written". A crash can leave an entry whose bytes never reached the disk; the next download
 * re-checks every listed piece before it counts (PartialObject.open), so the worst case is a re-fetch.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { isObjectId, type Store } from '@roamdesk/store';

import { type Manifest, pieceRange } from './manifest.ts';
import { PartialObject } from './partial-object.ts';

export interface PartialProgress {
  readonly id: string;
  readonly size: number;
  readonly pieceSize: number;
  readonly piecesTotal: number;
  /** Distinct pieces the journal lists (each was verified against its hash before it was written). */
  readonly piecesVerified: number;
  readonly bytesVerified: number;
}

/** The directory a download of object `id` uses; null for anything but a 64-hex object id (paths come from ids only). */
export function downloadDir(store: Pick<Store, 'incomingDir'>, id: string): string | null {
  return isObjectId(id) ? join(store.incomingDir, `dl-${id}`) : null;
}

/**
 * The verified pieces of an interrupted download of object `id`, or null when there is none (no directory,
 * no readable manifest, or a manifest about another object). Read-only.
 */
export async function partialProgress(store: Pick<Store, 'incomingDir'>, id: string): Promise<PartialProgress | null> {
  const dir = downloadDir(store, id);
  if (dir === null) return null;
  const manifest = await PartialObject.readManifest(dir);
  if (manifest?.id !== id) return null;
  const size = await stat(join(dir, 'object.qcow2')).then((s) => s.size, () => null);
  // No data file, or one of another size: PartialObject.open would start over, so nothing counts.
  const indices = size === manifest.size ? await journalIndices(join(dir, 'journal'), manifest) : new Set<number>();
  let bytes = 0;
  for (const i of indices) bytes += pieceRange(manifest, i).length;
  return { id, size: manifest.size, pieceSize: manifest.pieceSize, piecesTotal: manifest.pieces.length, piecesVerified: indices.size, bytesVerified: bytes };
}

async function journalIndices(file: string, m: Manifest): Promise<Set<number>> {
  const out = new Set<number>();
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch {
    return out;
  }
  // Same reading as PartialObject: 4-byte little-endian indices; a torn last entry is ignored.
  for (let pos = 0; pos + 4 <= buf.length; pos += 4) {
    const i = buf.readUInt32LE(pos);
    if (i < m.pieces.length) out.add(i);
  }
  return out;
}
