/**
 * On-disk layout (see README.md):
 *
 *   <root>/objects/<id>.qcow2                 immutable image or layer, mode 0444, id = SHA-256 of the bytes
 *   <root>/objects/overlay-[<label>-]<16hex>.qcow2   writable overlay (same directory: sealing is link, not copy)
 *   <root>/objects/.tmp-<16hex>               partial object being written (removed by Store.open)
 *   <root>/meta/<id>.json                     sidecar metadata, mode 0444
 *   <root>/meta/.tmp-<16hex>                  partial sidecar
 *   <root>/incoming/                          objects being received piece by piece (owned by the transfer engine;
 *                                             kept across restarts so transfers resume; published with adopt())
 *
 * Paths are only ever built from names made by ids.ts after validation.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';

import { ChainBrokenError, InvalidOverlayError } from './errors.ts';
import { readHeader } from './header-io.ts';
import { assertObjectId, idFromObjectFileName, isOverlayFileName, objectFileName, sidecarFileName, type ObjectId } from './ids.ts';
import { decodeSidecar, type ObjectInfo } from './sidecar.ts';

/** A writable overlay on top of `parent`. */
export interface Overlay {
  path: string;
  parent: ObjectId;
}

export class Layout {
  readonly root: string;
  readonly objectsDir: string;
  readonly metaDir: string;
  readonly incomingDir: string;

  constructor(root: string) {
    this.root = resolve(root);
    this.objectsDir = join(this.root, 'objects');
    this.metaDir = join(this.root, 'meta');
    this.incomingDir = join(this.root, 'incoming');
  }

  objectPath(id: ObjectId): string {
    return join(this.objectsDir, objectFileName(id));
  }

  sidecarPath(id: ObjectId): string {
    return join(this.metaDir, sidecarFileName(id));
  }

  /** The overlay's path, checked to be an overlay file name directly inside objects/ (no traversal, no objects). */
  overlayPath(overlay: Overlay): string {
    assertObjectId(overlay.parent);
    const name = basename(overlay.path);
    const path = join(this.objectsDir, name);
    if (!isOverlayFileName(name) || resolve(overlay.path) !== path) {
      throw new InvalidOverlayError(`${JSON.stringify(overlay.path.slice(0, 200))} is not an overlay of the store at ${this.root}`, { path: overlay.path });
    }
    return path;
  }

  async exists(path: string): Promise<boolean> {
    try {
      await stat(path);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
  }

  async readSidecar(id: ObjectId): Promise<ObjectInfo | null> {
    try {
      return decodeSidecar(await readFile(this.sidecarPath(id), 'utf8'), id);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  /** ObjectInfo for a published object: its sidecar, or (for hand-copied objects) derived from its header. */
  async info(id: ObjectId): Promise<ObjectInfo | null> {
    assertObjectId(id);
    let st;
    try {
      st = await stat(this.objectPath(id));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    const sidecar = await this.readSidecar(id);
    if (sidecar !== null) return sidecar;
    const header = await readHeader(this.objectPath(id));
    let parent: ObjectId | null = null;
    if (header.backing !== null) {
      parent = idFromObjectFileName(header.backing.name);
      if (parent === null) throw new ChainBrokenError(`object ${id} has a backing name that is not an object: ${JSON.stringify(header.backing.name)}`, { id, backing: header.backing.name });
    }
    return {
      id,
      kind: parent === null ? 'image' : 'layer',
      parent,
      size: st.size,
      virtualSize: Number(header.virtualSize),
      createdAt: st.mtime.toISOString(),
    };
  }
}
