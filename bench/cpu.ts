/**
 * Wall time and CPU time (user + sys) of a transfer, over every process that took part.
 *
 * - This process: process.cpuUsage() (all its threads, libuv's pool included).
 * - Children it ran to completion (cp, rsync client, qemu-img): their CPU is added to this process's cutime/cstime
 *   in /proc/self/stat once they are reaped, which Node does before it emits 'exit'.
 * - Servers it started (rsync daemon, a Roamdesk server): /proc/<pid>/stat utime+stime plus cutime+cstime (the
 *   per-connection children they forked and reaped). Read these before stopping the server: once we reap the server
 *   itself, its time moves into our own cutime and would be counted twice.
 * Linux only. Resolution is one clock tick (10 ms).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let clockTicks: number | undefined;

/** USER_HZ, the unit of /proc/<pid>/stat times (100 on every Linux we run on; asked once to be sure). */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

interface ProcTimes {
  /** utime + stime, seconds. */
  readonly own: number;
  /** cutime + cstime (reaped children), seconds. */
  readonly children: number;
}

/** CPU times from /proc/<pid>/stat, or undefined when the process is gone. */
function procTimes(pid: number | 'self'): ProcTimes | undefined {
  let raw: string;
  try {
    raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses: fields are counted after its closing ')'.
  const fields = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
  const tick = (i: number): number => Number(fields[i] ?? 0) / ticksPerSecond();
  // fields[0] is field 3 (state), so utime (14) is fields[11], stime 12, cutime 13, cstime 14.
  return { own: tick(11) + tick(12), children: tick(13) + tick(14) };
}

/** CPU seconds of this process so far (all threads). */
export function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** CPU seconds of this process's children that have exited and been reaped. */
export function reapedChildrenCpuSeconds(): number {
  return procTimes('self')?.children ?? 0;
}

/** CPU seconds of a running process and of the children it reaped, or undefined when it is gone. */
export function pidCpuSeconds(pid: number): number | undefined {
  const t = procTimes(pid);
  return t === undefined ? undefined : t.own + t.children;
}

/** Peak resident memory (VmHWM) of a running process, in bytes, or undefined. */
export function peakRssOfPid(pid: number | 'self'): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] === undefined ? undefined : Number(m[1]) * 1024;
  } catch {
    return undefined;
  }
}

/** Pids of the live children of `pid` (its main thread's), from /proc. */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Waits (up to `timeoutMs`) until `pid` has no children left, so that the CPU of a server's per-connection
 * process, which exits just after the client sees the end of the transfer, is in the server's cutime.
 */
export async function settleChildren(pid: number, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (childrenOf(pid).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
}

export interface Measurement {
  readonly seconds: number;
  readonly cpuSeconds: number;
  /** cpuSeconds split: this process and the children it reaped (the client side), and the servers given. */
  readonly cpuSplit: { readonly here: number; readonly servers: number };
}

export interface Meter {
  /** Stops the clock, then waits for the servers' children to be reaped and reads everyone's CPU time. */
  stop(): Promise<Measurement>;
}

/**
 * Starts measuring: wall clock, this process, its reaped children, and the given server pids.
 *
 * @example
 * const meter = startMeter({ pids: [daemon.pid] });
 * await runCommand('rsync', [...]);
 * await fsyncFile(dest);
 * const { seconds, cpuSeconds } = await meter.stop();
 */
export function startMeter(opts: { pids?: readonly number[] } = {}): Meter {
  const pids = opts.pids ?? [];
  const here = (): number => selfCpuSeconds() + reapedChildrenCpuSeconds();
  const servers = (): number => pids.reduce((sum, p) => sum + (pidCpuSeconds(p) ?? 0), 0);
  const here0 = here();
  const servers0 = servers();
  const t0 = performance.now();
  return {
    async stop() {
      const seconds = (performance.now() - t0) / 1000;
      for (const p of pids) await settleChildren(p);
      const split = { here: Math.max(0, here() - here0), servers: Math.max(0, servers() - servers0) };
      return { seconds, cpuSeconds: split.here + split.servers, cpuSplit: split };
    },
  };
}
