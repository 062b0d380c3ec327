// Finds QEMU processes serving a QMP socket inside our vms/ directory, whatever their pidfile says. After a
// crash a run dir can lose its pidfile (or be removed) while its QEMU lives on: such a VM is found only here.
// Linux /proc only; a process is ours only if its argv names a QMP socket in *our* run dirs.

import { readdir } from 'node:fs/promises';
import { resolve } from 'node:path';

import { isRunning, readCmdline } from '@roamdesk/qemu';

export interface QemuProcess {
  pid: number;
  /** The run dir's name (the desktop id). */
  desktopId: string;
  qmpSocket: string;
}

export function qemuOf(argv: readonly string[], vmsDir: string): Omit<QemuProcess, 'pid'> | null {
  const exe = argv[0]?.split('/').at(-1) ?? '';
  if (!exe.startsWith('qemu-system-')) return null;
  const prefix = `unix:${resolve(vmsDir)}/`;
  for (const arg of argv) {
    const m = arg.startsWith(prefix) ? /^([0-9a-f-]{36})\/qmp\.sock,server=on,wait=off$/.exec(arg.slice(prefix.length)) : null;
    if (m?.[1] !== undefined) return { desktopId: m[1], qmpSocket: `${resolve(vmsDir)}/${m[1]}/qmp.sock` };
  }
  return null;
}

export async function findQemuProcesses(vmsDir: string): Promise<QemuProcess[]> {
  const out: QemuProcess[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const argv = await readCmdline(pid);
    const q = argv === null ? null : qemuOf(argv, vmsDir);
    if (q !== null) out.push({ pid, ...q });
  }
  return out;
}

/**
 * SIGKILL an orphan QEMU of ours and wait (up to `timeoutMs`) until it is gone. Identity is re-checked right
 * before the signal so a pid recycled since the scan is never hit.
 */
export async function killOrphan(p: QemuProcess, vmsDir: string, timeoutMs = 10_000): Promise<boolean> {
  const argv = await readCmdline(p.pid);
  if (argv === null || qemuOf(argv, vmsDir)?.qmpSocket !== p.qmpSocket) return true;
  try {
    process.kill(p.pid, 'SIGKILL');
  } catch {
    return true;
  }
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await isRunning(p.pid))) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}
