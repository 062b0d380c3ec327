/**
 * Seeds: folders that may already hold an object's bytes (an old check-out, a USB copy, another store).
 * A candidate is a file named `<id>.qcow2` (directly, under objects/, or under store/objects/), or any
 * `*.qcow2` directly in the folder with exactly the object's size whose first piece matches. Nothing from a
 * seed is trusted: every piece is verified against the manifest before it counts, so a wrong seed costs
 * only a read.
 */
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { readFully } from './file-reader.ts';
import { pieceHash } from './hash.ts';
import { type Manifest, pieceRange } from './manifest.ts';

async function sizeOf(path: string): Promise<number | null> {
  try {
    const st = await stat(path);
    return st.isFile() ? st.size : null;
  } catch {
    return null;
  }
}

async function firstPieceMatches(path: string, m: Manifest): Promise<boolean> {
  const fh = await open(path, 'r').catch(() => null);
  if (fh === null) return false;
  try {
    const { length } = pieceRange(m, 0);
    const data = await readFully(fh, Buffer.allocUnsafe(length), length, 0);
    return pieceHash(data) === m.pieces[0];
  } catch {
    return false;
  } finally {
    await fh.close();
  }
}

/** Candidate files in `seeds` for the object of manifest `m`, best first. */
export async function findSeedFiles(seeds: readonly string[], m: Manifest): Promise<string[]> {
  const out: string[] = [];
  for (const dir of seeds) {
    for (const p of [join(dir, `${m.id}.qcow2`), join(dir, 'objects', `${m.id}.qcow2`), join(dir, 'store', 'objects', `${m.id}.qcow2`)]) {
      if ((await sizeOf(p)) === m.size && !out.includes(p)) out.push(p);
    }
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      if (!name.endsWith('.qcow2')) continue;
      const p = join(dir, name);
      if (out.includes(p) || (await sizeOf(p)) !== m.size) continue;
      if (await firstPieceMatches(p, m)) out.push(p);
    }
  }
  return out;
}
