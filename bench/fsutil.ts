/** File-system steps every scenario needs: durable writes, cold caches, backing files beside a copied overlay. */
import { execFileSync } from 'node:child_process';
import { open, rm, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

import { runCommand } from './exec.ts';

/**
 * fsync of a file and of its directory: a copy counts as done when its data and its name are on disk, which is
 * what notes/performance.md timed ("every copy is timed up to and including fsync of the destination").
 */
export async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsyncDir(dirname(path));
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Empties the page cache (`sync; echo 3 > /proc/sys/vm/drop_caches`), so that the next read comes from the disk.
 * Only root can; returns false when it was not possible (the run is then "warm" and the report says so).
 */
export async function dropCaches(): Promise<boolean> {
  try {
    await runCommand('sync', []);
    await writeFile('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

/** Whether this process may drop caches (root, with a writable /proc/sys). Checked without dropping anything. */
export function canDropCaches(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    // Opening for writing is the real test: containers mount /proc/sys read-only even for root.
    execFileSync('sh', ['-c', ': >> /proc/sys/vm/drop_caches'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes a backing file visible beside a copied overlay: qcow2 backing names are relative to the overlay's own
 * directory (`-b v1.qcow2`), so a copy in another directory needs `<dir>/v1.qcow2` to resolve.
 */
export async function linkBeside(dir: string, target: string): Promise<string> {
  const link = join(dir, basename(target));
  await symlink(target, link);
  return link;
}

/** Removes a directory tree, ignoring one that is already gone. */
export async function removeTree(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true });
}
