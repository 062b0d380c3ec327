/** Prepares a VM's run dir: private (0700), a real directory, and not in use by a live QEMU. */
import { chmod, lstat, mkdir } from 'node:fs/promises';

import { QemuRunDirError } from '../errors.ts';
import { runPaths } from '../run-paths.ts';
import { removeFiles } from './files.ts';
import { isQemuFor, readPidFile } from './proc.ts';

export async function prepareRunDir(runDir: string): Promise<void> {
  if (!runDir.startsWith('/')) throw new QemuRunDirError(`Run dir must be an absolute path: ${runDir}`, { runDir });
  try {
    await mkdir(runDir, { recursive: true, mode: 0o700 });
    const st = await lstat(runDir);
    if (!st.isDirectory()) throw new QemuRunDirError(`Run dir ${runDir} is not a directory (or is a symlink)`, { runDir });
    if (typeof process.getuid === 'function' && st.uid !== process.getuid()) {
      throw new QemuRunDirError(`Run dir ${runDir} belongs to another user`, { runDir });
    }
    // mkdir's mode is filtered by the umask and ignored for an existing dir: set it explicitly.
    await chmod(runDir, 0o700);
  } catch (err) {
    if (err instanceof QemuRunDirError) throw err;
    throw new QemuRunDirError(`Cannot prepare run dir ${runDir}: ${(err as Error).message}`, { runDir }, { cause: err });
  }
  const paths = runPaths(runDir);
  const pid = await readPidFile(paths.pid);
  if (pid !== null && (await isQemuFor(pid, paths.qmp))) {
    throw new QemuRunDirError(`Run dir ${runDir} is in use by a running QEMU (pid ${pid})`, { runDir, pid });
  }
  // Leftovers of a VM that is gone: a stale socket would make QEMU fail to bind.
  await removeFiles([paths.qmp, paths.vnc, paths.pid]);
}
