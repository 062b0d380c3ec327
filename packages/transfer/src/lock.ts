/**
 * A per-object receive lock (`incoming/<dir>.lock`, holding the owner's pid): two processes of one device
 * (a prefetch and a check-out whose chains share an image) must not write the same partial object. A lock
 * left by a process that no longer runs is taken over.
 */
import { readFileSync } from 'node:fs';
import { open, readFile, unlink } from 'node:fs/promises';

import { TransferError } from './errors.ts';

/** A process that exists and is not a zombie (a killed child not yet reaped still answers kill(pid, 0)). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true; // no /proc: trust kill(0)
  }
}

export async function acquireLock(path: string, what: string): Promise<{ release(): Promise<void> }> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(path, 'wx', 0o600);
      await fh.writeFile(String(process.pid));
      await fh.close();
      return { release: () => unlink(path).catch(() => undefined) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
    if (Number.isSafeInteger(pid) && pid > 0 && alive(pid)) {
      throw new TransferError('XFER_ERR_BUSY', `${what} is being received by process ${pid}; wait for it or stop it`, { pid });
    }
    // Stale (its process is gone) or being written this instant by a process that then died: take it over.
    await unlink(path).catch(() => undefined);
  }
  throw new TransferError('XFER_ERR_BUSY', `${what} is locked by another process`);
}
