// Elapsed time the user cannot wind back (reliability.md R8, §2.8): the offline grant allows at most
// `maxOfflineSeconds` without server contact, and setting the system clock back must not extend it.
//
// The device keeps, in `<ROAMDESK_HOME>/clock.json`, a counter of elapsed seconds and a "trusted wall clock":
//  - within one boot (same /proc/sys/kernel/random/boot_id) time advances by the /proc/uptime delta, which
//    the wall clock does not influence;
//  - across a reboot the uptime restarts, so the gap is taken from the wall clock, never negatively, and
//    measured from the highest wall time seen (a clock set back while powered off adds nothing);
//  - the trusted wall clock is max(wall clock, last trusted + elapsed delta): it never goes below the highest
//    value seen, and keeps advancing while the user's clock stands still or runs backwards.
// Expiry checks compare against the trusted values, so a clock set back makes nothing valid again.
//
// Limits: the file belongs to the user, who could edit it (View encrypts its expiry file with a built-in key;
// anything on the device can be undone by its owner). The server stays authoritative: a late check-in after
// a rollback is fenced by the lease generation whatever the device believes.

import { randomUUID } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { writeFileAtomic } from '../fsutil.ts';

/** Where the clock reads time. Injected in tests. */
export interface TimeSource {
  /** A value that changes at every boot (`/proc/sys/kernel/random/boot_id`). */
  bootId(): Promise<string>;
  /** Seconds since boot, not affected by wall clock changes (`/proc/uptime`, first field). */
  uptimeSeconds(): Promise<number>;
  /** The wall clock in milliseconds since the epoch (Date.now()). */
  wallMs(): number;
}

export const systemTime: TimeSource = {
  async bootId() {
    try {
      return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
    } catch {
      return 'unknown';
    }
  },
  async uptimeSeconds() {
    try {
      const first = (await readFile('/proc/uptime', 'utf8')).split(' ')[0] ?? '';
      const v = Number(first);
      if (Number.isFinite(v) && v >= 0) return v;
    } catch {
      // not Linux: fall through to Node's monotonic clock (per process, so only good within one run)
    }
    return performance.timeOrigin / 1000 + performance.now() / 1000;
  },
  wallMs: () => Date.now(),
};

/** The persisted state. */
export interface ClockState {
  version: 1;
  /** Random, chosen when the file is created: a reading from another (lost or replaced) file is not comparable. */
  epoch: string;
  bootId: string;
  /** /proc/uptime at the last sample. */
  uptime: number;
  /** Monotonic elapsed seconds since the device first sampled. */
  elapsed: number;
  /** The highest trustworthy wall time (ms since the epoch). */
  trustedWallMs: number;
}

/** One reading: both values only ever grow. */
export interface ClockReading {
  epoch: string;
  elapsed: number;
  trustedWallMs: number;
}

export const CLOCK_FILE = 'clock.json';

/** Pure: the next state after reading the sources. */
export function advance(prev: ClockState | null, now: { bootId: string; uptime: number; wallMs: number }, newEpoch: () => string = randomUUID): ClockState {
  if (prev === null) return { version: 1, epoch: newEpoch(), bootId: now.bootId, uptime: now.uptime, elapsed: 0, trustedWallMs: now.wallMs };
  let delta: number;
  if (now.bootId === prev.bootId && now.uptime >= prev.uptime) {
    delta = now.uptime - prev.uptime;
  } else {
    // A new boot (or an uptime that went backwards, which only a new boot does): the wall clock is all
    // there is, counted from the highest value seen and never negative.
    delta = Math.max(0, (now.wallMs - prev.trustedWallMs) / 1000);
  }
  const trustedWallMs = Math.max(now.wallMs, prev.trustedWallMs + delta * 1000);
  return { version: 1, epoch: prev.epoch, bootId: now.bootId, uptime: now.uptime, elapsed: prev.elapsed + delta, trustedWallMs };
}

function parseClock(text: string): ClockState | null {
  try {
    const v = JSON.parse(text) as Partial<ClockState>;
    if (
      v.version === 1 && typeof v.epoch === 'string' && typeof v.bootId === 'string' && typeof v.uptime === 'number' && Number.isFinite(v.uptime) &&
      typeof v.elapsed === 'number' && Number.isFinite(v.elapsed) && v.elapsed >= 0 &&
      typeof v.trustedWallMs === 'number' && Number.isFinite(v.trustedWallMs)
    ) {
      return { version: 1, epoch: v.epoch, bootId: v.bootId, uptime: v.uptime, elapsed: v.elapsed, trustedWallMs: v.trustedWallMs };
    }
  } catch {
    // fall through
  }
  return null;
}

/** The device's monotonic clock, persisted in one home directory. */
export class DeviceClock {
  readonly file: string;

  constructor(readonly home: string, private readonly time: TimeSource = systemTime) {
    this.file = join(home, CLOCK_FILE);
  }

  /**
   * Sample the sources, persist, and return the reading. A missing or unreadable file starts a new epoch;
   * readings taken before (a grant's contact point) are then not comparable (see `offlineElapsed`).
   */
  async now(): Promise<ClockReading> {
    let prev: ClockState | null = null;
    try {
      prev = parseClock(await readFile(this.file, 'utf8'));
    } catch {
      prev = null;
    }
    const next = advance(prev, { bootId: await this.time.bootId(), uptime: await this.time.uptimeSeconds(), wallMs: this.time.wallMs() });
    await mkdir(this.home, { recursive: true, mode: 0o700 });
    await writeFileAtomic(this.file, `${JSON.stringify(next)}\n`, 0o600);
    return { epoch: next.epoch, elapsed: next.elapsed, trustedWallMs: next.trustedWallMs };
  }
}

/**
 * Seconds without server contact, from the reading at the last contact to now. A reading from another clock
 * file (lost, deleted or replaced: another epoch) or one below the contact's is reported as Infinity — the grant
 * is then refused until the device reaches the server — never as a short time.
 */
export function offlineElapsed(contact: ClockReading, now: ClockReading): number {
  if (now.epoch !== contact.epoch || now.elapsed < contact.elapsed || now.trustedWallMs < contact.trustedWallMs) return Number.POSITIVE_INFINITY;
  return now.elapsed - contact.elapsed;
}
