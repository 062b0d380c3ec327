// Paths for a desktop's files, built only from its validated UUID, never from its name or from request
// input (reliability.md §2.4). The prefix check is belt and braces: a UUID cannot escape, but this
// function is the one place that would need it if ids ever changed shape.

import { isUuid } from '@roamdesk/api';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import type { DataPaths } from '../config.ts';
import type { DesktopView } from '../db/repositories/desktops.ts';
import type { RuntimeDesktop } from '../ports.ts';

/** The store's overlay file names (packages/store/src/ids.ts): the only files overlay_path may name. */
const OVERLAY_NAME = /^overlay-(?:[a-z0-9][a-z0-9-]{0,31}-)?[0-9a-f]{16}\.qcow2$/;

export class UnsafePathError extends Error {
  readonly code = 'INTERNAL_UNSAFE_PATH';
}

export function desktopRunDir(paths: DataPaths, desktopId: string): string {
  if (!isUuid(desktopId)) throw new UnsafePathError('desktop id is not a UUID');
  const root = resolve(paths.vms);
  const dir = resolve(root, desktopId);
  if (!dir.startsWith(root + sep)) throw new UnsafePathError('desktop run dir escapes the vms directory');
  return dir;
}

/**
 * An overlay path as stored in the database: relative to the data directory, so the directory can move.
 * Accepts only a store overlay file directly in `<data>/store/objects/`.
 */
export function relativeOverlayPath(paths: DataPaths, overlayPath: string): string {
  return relative(resolve(paths.root), checkedOverlayPath(paths, resolve(overlayPath)));
}

/** The absolute overlay path of a database value, checked like a path from outside (the DB is not trusted to build paths). */
export function absoluteOverlayPath(paths: DataPaths, stored: string): string {
  return checkedOverlayPath(paths, resolve(paths.root, stored));
}

function checkedOverlayPath(paths: DataPaths, abs: string): string {
  if (dirname(abs) !== join(resolve(paths.store), 'objects') || !OVERLAY_NAME.test(basename(abs))) {
    throw new UnsafePathError('overlay path is not a store overlay of this data directory');
  }
  return abs;
}

export function toRuntimeDesktop(paths: DataPaths, d: DesktopView): RuntimeDesktop {
  const runDir = desktopRunDir(paths, d.id);
  return {
    id: d.id,
    name: d.name,
    imageId: d.image_id,
    topObjectId: d.top_object_id,
    memoryMiB: d.memory_mib,
    cpus: d.cpus,
    kernel: d.kernel,
    initrd: d.initrd,
    append: d.append,
    runDir,
    overlayPath: d.overlay_path === null ? null : absoluteOverlayPath(paths, d.overlay_path),
    leaseGeneration: Number(d.lease_generation),
  };
}
