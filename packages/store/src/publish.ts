/**
 * Publishing an object: sidecar first (durable), then the object's final name with no-clobber semantics.
 * Crash after the sidecar and before the link: an orphan sidecar (harmless: list() reads objects/, and a later
 * publish of the same id overwrites it; verify() reports it). The object name appears only when the bytes are
 * complete, fsynced and checked, and it appears atomically (link(2)).
 */
import { chmod } from 'node:fs/promises';

import { publishNoClobber, writeFileDurable } from './durable.ts';
import { sidecarFileName } from './ids.ts';
import type { Layout } from './layout.ts';
import { encodeSidecar, type ObjectInfo } from './sidecar.ts';

export interface Published {
  readonly info: ObjectInfo;
  /** False when an object with this id already existed; the source was then left in place. */
  readonly created: boolean;
}

/**
 * Publishes the complete, fsynced file at `source` as object `info.id`. With `keepSource` the old name stays
 * (sealLive removes it only after the next overlay's header names the new one).
 */
export async function publishObject(
  layout: Layout, source: string, info: Omit<ObjectInfo, 'createdAt'>, opts: { keepSource?: boolean } = {},
): Promise<Published> {
  const existing = await layout.info(info.id);
  if (existing !== null) return { info: existing, created: false };
  const full: ObjectInfo = { ...info, createdAt: new Date().toISOString() };
  await writeFileDurable(layout.metaDir, sidecarFileName(info.id), encodeSidecar(full));
  // Objects are immutable: read-only for everyone. (It is one inode, so this also applies to `source`.)
  await chmod(source, 0o444);
  const r = await publishNoClobber(source, layout.objectPath(info.id), opts);
  if (r === 'exists') {
    const raced = await layout.info(info.id);
    if (raced !== null) return { info: raced, created: false };
  }
  return { info: full, created: true };
}
