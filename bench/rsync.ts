/**
 * rsync as the peer to beat: a daemon on 127.0.0.1 (the setup notes/performance.md measured, so the transfer really
 * crosses a TCP socket between two processes) and a client whose `--stats` give the bytes on the wire.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { pidCpuSeconds } from './cpu.ts';
import { freePort, runCommand, startProcess, waitForPort, type ManagedProcess } from './exec.ts';

export interface RsyncModule {
  readonly path: string;
  readonly readOnly: boolean;
}

export interface RsyncDaemon {
  readonly port: number;
  readonly pid: number;
  /** rsync:// URL of a path inside a module. */
  url(module: string, path: string): string;
  /** CPU seconds of the daemon and the per-connection servers it has reaped. */
  cpuSeconds(): number;
  stop(): Promise<void>;
}

/** Starts `rsync --daemon --no-detach` on a free port of 127.0.0.1 with a config written into `confDir`. */
export async function startRsyncDaemon(confDir: string, modules: Readonly<Record<string, RsyncModule>>): Promise<RsyncDaemon> {
  const port = await freePort();
  const conf = [
    'use chroot = no',
    'max connections = 8',
    `log file = ${join(confDir, 'rsyncd.log')}`,
    // As root the daemon would drop to "nobody", who may not write the run directory.
    ...(process.getuid?.() === 0 ? ['uid = root', 'gid = root'] : []),
    ...Object.entries(modules).flatMap(([name, m]) => [`[${name}]`, `  path = ${m.path}`, `  read only = ${m.readOnly ? 'yes' : 'no'}`]),
  ].join('\n');
  const confPath = join(confDir, 'rsyncd.conf');
  await writeFile(confPath, `${conf}\n`);
  const proc: ManagedProcess = startProcess('rsync', ['--daemon', '--no-detach', `--config=${confPath}`, `--port=${port}`, '--address=127.0.0.1']);
  try {
    await waitForPort(port, 10_000, proc);
  } catch (e) {
    await proc.stop();
    throw e;
  }
  return {
    port,
    pid: proc.pid,
    url: (module, path) => `rsync://127.0.0.1:${port}/${module}/${path}`,
    cpuSeconds: () => pidCpuSeconds(proc.pid) ?? 0,
    stop: () => proc.stop(),
  };
}

/** Numbers from `rsync --stats`, from the client's point of view. */
export interface RsyncStats {
  readonly sentBytes: number;
  readonly receivedBytes: number;
  /** Bytes sent as new data (not matched in the basis file). */
  readonly literalBytes: number;
  /** Bytes the receiver rebuilt from its basis file. */
  readonly matchedBytes: number;
  readonly totalFileBytes: number;
}

/** Runs the rsync client with `--stats` added and parses them. */
export async function runRsync(args: readonly string[]): Promise<RsyncStats> {
  const r = await runCommand('rsync', ['--stats', ...args]);
  return parseRsyncStats(r.stdout);
}

/** Parses `rsync --stats` output (numbers may carry thousands separators). */
export function parseRsyncStats(out: string): RsyncStats {
  const num = (label: string): number => {
    const m = new RegExp(`${label}:\\s*([\\d,.]+)`).exec(out);
    if (!m?.[1]) throw new Error(`rsync --stats: no "${label}" in output: ${out.slice(0, 500)}`);
    return Number(m[1].replace(/[^\d]/g, ''));
  };
  return {
    sentBytes: num('Total bytes sent'),
    receivedBytes: num('Total bytes received'),
    literalBytes: num('Literal data'),
    matchedBytes: num('Matched data'),
    totalFileBytes: num('Total file size'),
  };
}
