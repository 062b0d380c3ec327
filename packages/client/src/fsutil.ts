// Durable file replacement: a reader sees the old file or the new one, never a partial one, and a crash
// after we return cannot lose the new content (DESIGN.md, data path rules).

import { randomBytes } from 'node:crypto';
import { link, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** A temp name in the same directory as `file` (rename is only atomic within one file system). */
export function tempPathFor(file: string): string {
  return join(dirname(file), `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
}

/** fsync a directory so a rename in it survives a crash. Some file systems refuse; that is not fatal. */
export async function fsyncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // EISDIR/EINVAL/EPERM on exotic file systems: the data itself was fsynced already.
  } finally {
    await fh?.close();
  }
}

/**
 * Move a finished, fsynced temp file to its final name. Without `overwrite`, `link` + unlink gives an
 * atomic no-clobber: it fails with EEXIST if the target appeared meanwhile, where rename would replace it.
 */
export async function publishFile(temp: string, file: string, overwrite: boolean): Promise<void> {
  if (overwrite) {
    await rename(temp, file);
  } else {
    await link(temp, file);
    await rm(temp, { force: true });
  }
  await fsyncDir(dirname(file));
}

/** Write `content` to `file` atomically (temp + fsync + rename + directory fsync) with the given mode. */
export async function writeFileAtomic(file: string, content: string, mode: number): Promise<void> {
  const temp = tempPathFor(file);
  try {
    // 'wx' + mode: the file is created with its final permissions; no window where the secret is readable.
    const fh = await open(temp, 'wx', mode);
    try {
      await fh.writeFile(content, 'utf8');
      await fh.chmod(mode); // the umask may have narrowed it; it must not have widened it, but be exact
      await fh.sync();
    } finally {
      await fh.close();
    }
    await publishFile(temp, file, true);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}
