/**
 * What the numbers were measured on. Absolute numbers only mean something next to this (a loaded, shared 2-core
 * VM is not a laptop), and the load average during the run says how much to trust them.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg, release, totalmem, version as kernelVersion } from 'node:os';

import { versionOf } from './exec.ts';
import { percentile, summarize } from './stats.ts';

export interface MachineInfo {
  readonly date: string;
  readonly cpuModel: string;
  readonly cores: number;
  readonly ramBytes: number;
  readonly kernel: string;
  /** File system type and device of the bench directory (where workload and copies live). */
  readonly fileSystem: string;
  readonly node: string;
  readonly qemuImg: string;
  readonly rsync: string;
  readonly root: boolean;
  readonly loadStart: readonly number[];
  loadEnd: readonly number[];
  /** 1-minute load average sampled every 5 s during the run. */
  loadSamples: { readonly median: number; readonly p90: number; readonly max: number } | undefined;
}

export function describeMachine(benchDir: string): MachineInfo {
  let cpuModel = 'unknown';
  try {
    cpuModel = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
  } catch {
    // Not Linux: keep 'unknown'.
  }
  let fileSystem = 'unknown';
  try {
    fileSystem = execFileSync('findmnt', ['-T', benchDir, '-no', 'FSTYPE,SOURCE'], { encoding: 'utf8' }).trim().replace(/\s+/, ' on ');
  } catch {
    // findmnt missing: keep 'unknown'.
  }
  return {
    date: new Date().toISOString(),
    cpuModel,
    cores: availableParallelism(),
    ramBytes: totalmem(),
    kernel: `${release()} (${kernelVersion()})`,
    fileSystem,
    node: process.version,
    qemuImg: versionOf('qemu-img'),
    rsync: versionOf('rsync'),
    root: process.getuid?.() === 0,
    loadStart: loadavg(),
    loadEnd: loadavg(),
    loadSamples: undefined,
  };
}

/** Samples the 1-minute load average until stopped; returns the summary. */
export function sampleLoad(): { stop(): { median: number; p90: number; max: number } | undefined } {
  const samples = [loadavg()[0] ?? 0];
  const timer = setInterval(() => samples.push(loadavg()[0] ?? 0), 5000);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      const s = summarize(samples);
      return s ? { median: s.median, p90: percentile(samples, 90) ?? s.max, max: s.max } : undefined;
    },
  };
}
