/**
 * Durable file publication (DESIGN.md "Data path rules"; notes/reliability.md R1, R7):
 * temp file in the same directory → write → fsync → publish (link with no-clobber, or rename) → fsync the
 * directory. A partial file never appears under a final name. A write or fsync error discards the temp file and
 * rethrows: after an fsync EIO the page cache may already be marked clean, so retrying fsync could "succeed"
 * with the data lost (fsyncgate); the only safe answer is to drop the artifact.
 */
import { constants, type FileHandle, link, open, rename, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';

import { newTempFileName } from './ids.ts';

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function fsyncPath(path: string): Promise<void> {
  // fsync(2) works on a read-only descriptor: it flushes the inode's dirty pages, whoever wrote them.
  const fh = await open(path, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Removes a file; a missing file is fine (idempotent cleanup). */
export async function discard(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

export interface TempFile {
  readonly path: string;
  readonly handle: FileHandle;
}

/** A new, exclusive (O_EXCL), owner-only temp file in `dir`. */
export async function createTemp(dir: string): Promise<TempFile> {
  const path = join(dir, newTempFileName());
  const handle = await open(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600);
  return { path, handle };
}

/**
 * Gives the inode at `from` the name `to` unless `to` exists (link(2) fails with EEXIST: no-clobber, atomic),
 * then removes `from` and fsyncs the directory. Node has no renameat2(RENAME_NOREPLACE); link+unlink is the
 * portable equivalent. A crash between link and unlink leaves `from` as an extra name for the same bytes.
 * Returns 'exists' (and leaves `from` alone) when `to` already exists.
 */
export async function publishNoClobber(from: string, to: string, opts: { keepSource?: boolean } = {}): Promise<'published' | 'exists'> {
  try {
    await link(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return 'exists';
    throw e;
  }
  if (opts.keepSource !== true) await unlink(from);
  await fsyncDir(join(to, '..'));
  return 'published';
}

/** Writes a small file durably under `name` in `dir` (replacing an older one atomically with rename). */
export async function writeFileDurable(dir: string, name: string, data: string | Uint8Array, mode = 0o444): Promise<void> {
  const tmp = await createTemp(dir);
  try {
    try {
      await tmp.handle.writeFile(data);
      await tmp.handle.chmod(mode);
      await tmp.handle.sync();
    } finally {
      await tmp.handle.close();
    }
    await rename(tmp.path, join(dir, name));
  } catch (e) {
    await discard(tmp.path);
    throw e;
  }
  await fsyncDir(dir);
}

/** Bytes an unprivileged writer may still use in the file system holding `dir` (null: statfs cannot tell). */
export async function freeSpace(dir: string): Promise<number | null> {
  const fs = await statfs(dir).catch(() => null);
  return fs === null ? null : fs.bavail * fs.bsize;
}

/** A byte count as the space messages say it: `12.3 MB` (decimal, as df -H). */
export function formatMB(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}
