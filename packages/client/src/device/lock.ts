// One lease operation per desktop at a time on this device (replicate, check-in, check-out, rollback): a lock
// file `<ROAMDESK_HOME>/locks/<name>.lock` created with O_EXCL, holding the owner's pid. A lock whose process is
// gone (killed mid-transfer) is taken over; a live one is DEVICE_ERR_BUSY naming the pid. The keeper beside a
// running local VM (keeper.ts) holds its own lock, `locks/keepers/<name>.lock`, for as long as it runs: one
// keeper per desktop, and `roamdesk status` finds it there.

import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { isValidName } from '@roamdesk/api/core';

import { DeviceError } from './errors.ts';

export interface Lock {
  release(): Promise<void>;
}

interface Holder {
  pid: number;
  what: string;
  since: string | null;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function lockFile(home: string, name: string, kind: 'desktop' | 'keeper'): string {
  if (!isValidName(name)) throw new DeviceError('DEVICE_ERR_STATE_INVALID', 'not a desktop name', { name: String(name).slice(0, 80) });
  return kind === 'desktop' ? join(home, 'locks', `${name}.lock`) : join(home, 'locks', 'keepers', `${name}.lock`);
}

/** The live process holding a lock file; null when none does (absent, half-written or its process gone). */
async function liveHolder(file: string): Promise<Holder | null> {
  let holder: { pid?: unknown; what?: unknown; since?: unknown };
  try {
    holder = JSON.parse(await readFile(file, 'utf8')) as typeof holder;
  } catch {
    // Absent, or half-written by a process killed between open and write: stale.
    return null;
  }
  const pid = typeof holder.pid === 'number' ? holder.pid : null;
  if (pid === null || !alive(pid)) return null;
  return { pid, what: typeof holder.what === 'string' ? holder.what : 'an operation', since: typeof holder.since === 'string' ? holder.since : null };
}

async function takeLock(file: string, what: string, busy: (holder: Holder) => DeviceError): Promise<Lock> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
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
    const holder = await liveHolder(file);
    if (holder !== null) throw busy(holder);
    await rm(file, { force: true });
  }
  throw new DeviceError('DEVICE_ERR_BUSY', `cannot take the lock ${file}`, { file });
}

/** What the keeper's replications hold the desktop lock as (a user's command waits for such a round: lockDesktop `waitForScheduled`). */
export const SCHEDULED_REPLICATION = 'scheduled replication';

export interface LockWait {
  /** How long to wait for a scheduled replication that holds the desktop; anything else is BUSY at once. */
  waitForScheduledMs: number;
  /** Told once when the wait begins. */
  onWait?: (holder: { pid: number; what: string; since: string | null }) => void;
  signal?: AbortSignal;
}

export async function lockDesktop(home: string, name: string, what: string, wait?: LockWait): Promise<Lock> {
  const file = lockFile(home, name, 'desktop');
  const busy = (h: Holder): DeviceError =>
    new DeviceError('DEVICE_ERR_BUSY', `desktop ${name} is busy: another roamdesk process (pid ${h.pid}) is running ${h.what} on it`, {
      desktop: name,
      pid: h.pid,
      what: h.what,
      since: h.since,
      hint: 'wait for it to finish (one replication or check-in at a time), or stop that process',
    });
  const deadline = Date.now() + (wait?.waitForScheduledMs ?? 0);
  let told = false;
  for (;;) {
    try {
      return await takeLock(file, what, busy);
    } catch (err) {
      // A round of scheduled replication is short and ends by itself: a user's command waits for it, rather
      // than fail because of something it did not start.
      const holder = err instanceof DeviceError && err.code === 'DEVICE_ERR_BUSY' ? err.data : null;
      if (wait === undefined || holder?.['what'] !== SCHEDULED_REPLICATION || Date.now() > deadline || wait.signal?.aborted === true) throw err;
      if (!told) {
        told = true;
        wait.onWait?.({ pid: Number(holder['pid']), what: SCHEDULED_REPLICATION, since: typeof holder['since'] === 'string' ? holder['since'] : null });
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/** The keeper's lock: DEVICE_ERR_BUSY when another keeper of this desktop runs. */
export async function lockKeeper(home: string, name: string): Promise<Lock> {
  return takeLock(lockFile(home, name, 'keeper'), 'keeper', (h) =>
    new DeviceError('DEVICE_ERR_BUSY', `desktop ${name} already has a keeper (pid ${h.pid})`, { desktop: name, pid: h.pid, since: h.since }));
}

/** The pid of the keeper running for `name`, or null. */
export async function keeperPid(home: string, name: string): Promise<number | null> {
  return (await liveHolder(lockFile(home, name, 'keeper')))?.pid ?? null;
}
