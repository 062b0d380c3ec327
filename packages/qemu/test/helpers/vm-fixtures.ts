/** Shared setup for runner tests: a temp dir with a blank qcow2 chain, and a VmConfig without a guest. */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { VmConfig } from '../../src/index.ts';

export const haveQemu =
  spawnSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' }).status === 0 &&
  spawnSync('qemu-img', ['--version'], { stdio: 'ignore' }).status === 0;
export const skipReason = haveQemu ? false : 'qemu-system-x86_64 / qemu-img not found: apt-get install qemu-system-x86 qemu-utils';

export interface TestDir {
  dir: string;
  runDir: string;
  config: VmConfig;
  remove(): Promise<void>;
}

/** base.qcow2 (64 MiB, blank) + overlay.qcow2 on it, made by qemu-img with explicit formats. */
export async function makeTestDir(name = 'vm', overrides: Partial<VmConfig> = {}): Promise<TestDir> {
  const dir = await mkdtemp(join(tmpdir(), 'rd-qemu-'));
  const base = join(dir, 'base.qcow2');
  const overlay = join(dir, 'overlay.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', overlay]);
  const config: VmConfig = {
    name,
    memoryMiB: 64,
    cpus: 1,
    accel: 'tcg',
    tcgTbSizeMiB: 16,
    disk: { nodes: [{ nodeName: 'base', path: base }, { nodeName: 'overlay', path: overlay }], cache: 'unsafe' },
    ...overrides,
  };
  return { dir, runDir: join(dir, 'run'), config, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** True while `pid` is alive (not a zombie). */
export function alive(pid: number): boolean {
  const r = spawnSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' });
  return r.status === 0 && !r.stdout.trim().startsWith('Z');
}

export async function waitGone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !alive(pid);
}
