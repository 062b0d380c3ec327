/** VmProcess adapters: a child we spawned, or a process we adopted from its pidfile. */
import type { ChildProcess } from 'node:child_process';

import { isQemuFor, isRunning } from './proc.ts';
import type { ProcessExit, VmProcess } from './vm.ts';

/** A child of this Node process: the exit status is exact. */
export function childVmProcess(child: ChildProcess & { pid: number }): VmProcess {
  const exited = new Promise<ProcessExit>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode, statusUnknown: false });
      return;
    }
    child.once('exit', (code, signal) => resolve({ code, signal, statusUnknown: false }));
  });
  return {
    pid: child.pid,
    exited,
    kill: () => {
      // ChildProcess.kill targets this pid only, and is a no-op once Node has reaped it, so a
      // recycled pid can never be hit.
      child.kill('SIGKILL');
      return Promise.resolve();
    },
  };
}

/** How often an adopted process is checked: there is no exit notification for non-children. */
export const ADOPTED_POLL_MS = 200;

/** A QEMU from an earlier server run (detached). We poll /proc because it is not our child. */
export function adoptedVmProcess(pid: number, qmpSocket: string): VmProcess {
  const exited = new Promise<ProcessExit>((resolve) => {
    const check = async (): Promise<void> => {
      if (await isRunning(pid)) {
        // Not unref()ed: like a ChildProcess handle, a watched VM keeps the event loop alive.
        setTimeout(() => void check(), ADOPTED_POLL_MS);
        return;
      }
      resolve({ code: null, signal: null, statusUnknown: true });
    };
    void check();
  });
  return {
    pid,
    exited,
    kill: async () => {
      // Re-check identity right before the signal: the pid may have been recycled meanwhile.
      if (await isQemuFor(pid, qmpSocket)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    },
  };
}
