// Test helpers: real qemu-img/qemu-io via spawnSync, header patching, directory snapshots, a recording qemu-img.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdtemp, open, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const haveQemuImg = spawnSync('qemu-img', ['--version']).status === 0;
export const haveQemuIo = spawnSync('qemu-io', ['--version']).status === 0;
export const haveQemu = spawnSync('qemu-system-x86_64', ['--version']).status === 0;

export function sh(cmd: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function mustSh(cmd: string, args: string[]): string {
  const r = sh(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function sha256File(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

export async function poke(path: string, offset: number, bytes: number[]): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(Uint8Array.from(bytes), 0, bytes.length, offset);
  } finally {
    await fh.close();
  }
}

/** Sets bits in the qcow2 v3 incompatible_features field (header bytes 72–79, big-endian). */
export async function setIncompatibleBits(path: string, bits: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 79);
    b[0] = b[0]! | bits;
    await fh.write(b, 0, 1, 79);
  } finally {
    await fh.close();
  }
}

/** Every file under a directory, recursively, with its SHA-256: to prove a failed operation changed nothing. */
export async function snapshotDir(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = join(e.parentPath, e.name);
    out[p.slice(dir.length)] = await sha256File(p);
  }
  return out;
}

/** A qemu-img that logs every invocation to `log` and then runs the real one. */
export async function recordingQemuImg(dir: string): Promise<{ binary: string; calls: () => Promise<string[]> }> {
  const log = join(dir, 'qemu-img-calls.log');
  const binary = join(dir, 'qemu-img-recording');
  await writeFile(log, '');
  await writeFile(binary, `#!/bin/sh\nprintf '%s\\n' "$*" >> '${log}'\nexec qemu-img "$@"\n`);
  await chmod(binary, 0o755);
  return { binary, calls: async () => (await readFile(log, 'utf8')).split('\n').filter((l) => l !== '') };
}
