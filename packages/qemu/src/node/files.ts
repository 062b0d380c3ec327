/** Small file helpers for the run dir. */
import { open, rm } from 'node:fs/promises';

/** The last `bytes` of a file as UTF-8 ('' if missing). */
export async function readTail(path: string, bytes = 4096): Promise<string> {
  let handle;
  try {
    handle = await open(path, 'r');
    const { size } = await handle.stat();
    const start = Math.max(0, size - bytes);
    const buf = Buffer.alloc(size - start);
    await handle.read(buf, 0, buf.length, start);
    return buf.toString('utf8');
  } catch {
    return '';
  } finally {
    await handle?.close();
  }
}

export async function removeFiles(paths: string[]): Promise<void> {
  await Promise.all(paths.map((p) => rm(p, { force: true })));
}
