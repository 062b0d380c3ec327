/**
 * Computing an object's manifest (one sequential read, BLAKE3 per piece) and caching it next to the store:
 * objects never change, so a manifest is computed once per (object, piece size). The cache is only a cache:
 * a cached file that does not parse, or disagrees with the object's size, is recomputed.
 */
import { mkdir, open, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

import type { SealOptions } from '@roamdesk/store';

import { forEachPiece } from './file-reader.ts';
import { pieceHasher } from './hash.ts';
import { DEFAULT_PIECE_SIZE, type Manifest, type ObjectKind, parseManifest, pieceCount } from './manifest.ts';
import { ObjectHasher, objectHasherReady } from './object-hasher.ts';

export interface ObjectMeta {
  readonly id: string;
  readonly kind: ObjectKind;
  readonly parent: string | null;
  readonly virtualSize: number;
}

export async function computeManifest(path: string, meta: ObjectMeta, pieceSize = DEFAULT_PIECE_SIZE, signal?: AbortSignal): Promise<Manifest> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const builder = new ManifestBuilder(pieceSize);
    // forEachPiece hands the pieces over in index order, as a seal's read pass would.
    await forEachPiece(fh, { size, pieceSize }, Array.from({ length: pieceCount(size, pieceSize) }, (_, i) => i), (_i, data) => builder.update(data), { signal });
    return builder.finish(meta);
  } finally {
    await fh.close();
  }
}

/**
 * A manifest built from an object's bytes as another pass reads them in order (a device's seal hashes the new
 * layer; this rides along), so the upload does not read the layer again. Same result as computeManifest.
 */
export class ManifestBuilder {
  readonly #pieces: string[] = [];
  #piece = pieceHasher();
  #inPiece = 0;
  #size = 0;

  constructor(readonly pieceSize = DEFAULT_PIECE_SIZE) {}

  update(data: Buffer): void {
    let pos = 0;
    while (pos < data.length) {
      const n = Math.min(this.pieceSize - this.#inPiece, data.length - pos);
      this.#piece.update(data.subarray(pos, pos + n));
      this.#inPiece += n;
      pos += n;
      if (this.#inPiece === this.pieceSize) this.#endPiece();
    }
    this.#size += data.length;
  }

  finish(meta: ObjectMeta): Manifest {
    if (this.#inPiece > 0) this.#endPiece();
    return parseManifest({ version: 1, id: meta.id, kind: meta.kind, parent: meta.parent, size: this.#size, virtualSize: meta.virtualSize, pieceSize: this.pieceSize, hash: 'blake3', pieces: this.#pieces });
  }

  #endPiece(): void {
    this.#pieces.push(this.#piece.digest());
    this.#piece = pieceHasher();
    this.#inPiece = 0;
  }
}

/**
 * Runs `seal` with a ManifestBuilder watching its read pass, and keeps the layer's manifest in `cache`: the
 * upload (device) or download (server) that follows then does not read the layer again. Only a cache: a
 * failure to keep it costs a later recomputation, never the seal. The seal's SHA-256 runs in a ready hashing
 * worker meanwhile (object-hasher.ts), so the two hashes take the time of the longer one, off a server's event loop.
 */
export async function sealWithManifest<T>(
  cache: ManifestCache, seal: (opts: Pick<SealOptions, 'onData' | 'sha256Offload'>) => Promise<T>, layerOf: (r: T) => ObjectMeta & { size: number },
): Promise<T> {
  const builder = new ManifestBuilder();
  // The layer's SHA-256 (its id) in a hashing worker, the manifest's BLAKE3 here: both at once. Only with a worker
  // ready: starting one costs more than it saves (measured on the 209 MB bench layer: 0.21 s here, 0.17 s with a
  // ready worker, 0.33 s with one to start).
  const offload = objectHasherReady() ? { sha256Offload: (path: string, size: number) => new ObjectHasher(path).digest(size) } : {};
  const r = await seal({ onData: (data) => builder.update(data), ...offload });
  const layer = layerOf(r);
  const m = builder.finish(layer);
  if (m.size === layer.size) await cache.put(m).catch(() => undefined);
  return r;
}

/** Manifests kept in memory: every piece request needs one, and parsing a large one per request adds up. */
const MEMORY_ENTRIES = 64;

export class ManifestCache {
  readonly #inflight = new Map<string, Promise<Manifest>>();
  readonly #memory = new Map<string, Manifest>();
  /** `dir` null: memory only (a device keeps the manifests of the layers it just sealed for their upload). */
  constructor(readonly dir: string | null) {}

  /** The manifest of the object file at `path` (computing and caching it on first use). */
  async get(path: string, meta: ObjectMeta & { size: number }, pieceSize = DEFAULT_PIECE_SIZE): Promise<Manifest> {
    const key = `${meta.id}-${pieceSize}`;
    const hit = this.#memory.get(key);
    if (hit !== undefined) return hit;
    const running = this.#inflight.get(key);
    if (running !== undefined) return running;
    const p = this.#load(path, meta, pieceSize, key).then((m) => {
      this.#remember(key, m);
      return m;
    }).finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, p);
    return p;
  }

  /** Keeps a manifest made elsewhere (ManifestBuilder) for the object it describes. */
  async put(m: Manifest): Promise<void> {
    const key = `${m.id}-${m.pieceSize}`;
    this.#remember(key, m);
    await this.#save(key, m);
  }

  #remember(key: string, m: Manifest): void {
    if (this.#memory.size >= MEMORY_ENTRIES) this.#memory.delete(this.#memory.keys().next().value ?? '');
    this.#memory.set(key, m);
  }

  async #load(path: string, meta: ObjectMeta & { size: number }, pieceSize: number, key: string): Promise<Manifest> {
    if (this.dir !== null) {
      try {
        const cached = parseManifest(JSON.parse(await readFile(join(this.dir, `${key}.json`), 'utf8')), { id: meta.id, kind: meta.kind, parent: meta.parent, size: meta.size });
        if (cached.pieceSize === pieceSize) return cached;
      } catch {
        // Missing or unusable: compute it again.
      }
    }
    const m = await computeManifest(path, meta, pieceSize);
    await this.#save(key, m);
    return m;
  }

  /** Best effort: the cache is only a cache. */
  async #save(key: string, m: Manifest): Promise<void> {
    if (this.dir === null) return;
    const tmp = join(this.dir, `.tmp-${randomBytes(8).toString('hex')}`);
    try {
      await mkdir(this.dir, { recursive: true });
      await writeFile(tmp, JSON.stringify(m));
      await rename(tmp, join(this.dir, `${key}.json`));
    } catch {
      await unlink(tmp).catch(() => undefined);
    }
  }
}
