/** Small file helpers for the run dir. */
import { open, rm } from 'node:fs/promises';

/**
 * The last `bytes` bytes of a file as UTF-8 ('' when it does not exist; other errors are thrown). Reads only the
 * tail: logs grow. Callers that only want a diagnostic (a crash report) add `.catch(() => '')`.
 */
export async function readTail(path: string, bytes = 4096): Promise<string> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
  try {
    const { size } = await fh.stat();
    const length = Math.min(size, Math.max(0, bytes));
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, size - length);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}

export async function removeFiles(paths: string[]): Promise<void> {
  await Promise.all(paths.map((p) => rm(p, { force: true })));
}
