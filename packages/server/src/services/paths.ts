// Paths for a desktop's files, built only from its validated UUID, never from its name or from request
// input (reliability.md §2.4). The prefix check is belt and braces: a UUID cannot escape, but this
// function is the one place that would need it if ids ever changed shape.

import { isUuid } from '@roamdesk/api';
import { join, resolve, sep } from 'node:path';
import type { DataPaths } from '../config.ts';
import type { DesktopView } from '../db/repositories/desktops.ts';
import type { RuntimeDesktop } from '../ports.ts';

export const OVERLAY_FILE = 'overlay.qcow2';

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

/** The overlay path as stored in the database: relative to the data directory, so the directory can move. */
export function relativeOverlayPath(desktopId: string): string {
  if (!isUuid(desktopId)) throw new UnsafePathError('desktop id is not a UUID');
  return join('vms', desktopId, OVERLAY_FILE);
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
    overlayPath: join(runDir, OVERLAY_FILE),
    leaseGeneration: Number(d.lease_generation),
  };
}
