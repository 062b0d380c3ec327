// One lease operation per desktop at a time on this device (replicate, check-in, check-out, rollback): a lock
// file `<ROAMDESK_HOME>/locks/<name>.lock` created with O_EXCL, holding the owner's pid. A lock whose process is
// gone (killed mid-transfer) is taken over; a live one is DEVICE_ERR_BUSY naming the pid.

import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { isValidName } from '@roamdesk/api/core';

import { DeviceError } from './errors.ts';

export interface Lock {
  release(): Promise<void>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function lockDesktop(home: string, name: string, what: string): Promise<Lock> {
  if (!isValidName(name)) throw new DeviceError('DEVICE_ERR_STATE_INVALID', 'not a desktop name', { name: String(name).slice(0, 80) });
  const dir = join(home, 'locks');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `${name}.lock`);
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      const fh = await open(file, 'wx', 0o600);
      try {
        await fh.writeFile(`${JSON.stringify({ pid: process.pid, what, since: new Date().toISOString() })}\n`);
      } finally {
        await fh.close();
      }
      let released = false;
      return {
        release: async () => {
          if (released) return;
          released = true;
          await rm(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder: { pid?: unknown; what?: unknown; since?: unknown } = {};
    try {
      holder = JSON.parse(await readFile(file, 'utf8')) as typeof holder;
    } catch {
      // Half-written by a process killed between open and write: treat as stale.
    }
    const pid = typeof holder.pid === 'number' ? holder.pid : null;
    if (pid !== null && alive(pid)) {
      throw new DeviceError('DEVICE_ERR_BUSY', `desktop ${name} is busy: another roamdesk process (pid ${pid}) is running ${typeof holder.what === 'string' ? holder.what : 'an operation'} on it`, {
        desktop: name,
        pid,
        since: holder.since ?? null,
        hint: 'wait for it to finish (one replication or check-in at a time), or stop that process',
      });
    }
    await rm(file, { force: true });
  }
  throw new DeviceError('DEVICE_ERR_BUSY', `cannot lock desktop ${name}`, { desktop: name });
}
