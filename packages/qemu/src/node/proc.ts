/** Process facts from /proc, used to tell "our QEMU" from a recycled pid. Linux only. */
import { readFile } from 'node:fs/promises';

/** argv of `pid`, or null if it is gone. */
export async function readCmdline(pid: number): Promise<string[] | null> {
  try {
    const raw = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0').filter((s, i, all) => s !== '' || i < all.length - 1);
  } catch {
    return null;
  }
}

/** True while `pid` exists and is not a zombie. */
export async function isRunning(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Field 3, after the parenthesised command name (which may itself contain spaces or parens).
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/**
 * True if `pid` is a QEMU started for `qmpSocket`: its argv[0] names qemu-system-* and it listens
 * on that socket. The socket path lives in the run dir, so this ties the pid to the run dir.
 */
export async function isQemuFor(pid: number, qmpSocket: string): Promise<boolean> {
  const argv = await readCmdline(pid);
  if (!argv || !(await isRunning(pid))) return false;
  const exe = argv[0]?.split('/').at(-1) ?? '';
  return exe.startsWith('qemu-system-') && argv.includes(`unix:${qmpSocket},server=on,wait=off`);
}

export async function readPidFile(path: string): Promise<number | null> {
  try {
    const pid = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isInteger(pid) && pid > 1 ? pid : null;
  } catch {
    return null;
  }
}
