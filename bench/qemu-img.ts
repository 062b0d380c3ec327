/**
 * The qemu-img calls the bench needs, with explicit formats (never probed). qemu-img is the correctness oracle:
 * after every transfer the destination must show the same guest view as the source.
 */
import { runCommand } from './exec.ts';

/** A verification failed: the run is counted as failed and reported loudly. */
export class VerifyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VerifyError';
  }
}

/**
 * `qemu-img compare`: the guest views of two images (each with its whole backing chain, resolved from the header's
 * relative names) must be equal. File bytes may differ (a committed diff, a re-laid-out qcow2).
 */
export async function assertSameGuest(a: string, b: string, opts: { formatA?: 'qcow2' | 'raw'; formatB?: 'qcow2' | 'raw' } = {}): Promise<void> {
  const r = await runCommand('qemu-img', ['compare', '-f', opts.formatA ?? 'qcow2', '-F', opts.formatB ?? 'qcow2', a, b], { okCodes: [0, 1] });
  if (r.code === 1) {
    const detail = (r.stdout + r.stderr).trim();
    throw new VerifyError(`qemu-img compare: guest views differ: ${a} vs ${b}${detail ? ` (${detail})` : ''}`);
  }
}

/** `cmp`: the two files hold the same bytes (a plain copy of an overlay must be exact). */
export async function assertSameBytes(a: string, b: string): Promise<void> {
  const r = await runCommand('cmp', ['--silent', a, b], { okCodes: [0, 1] });
  if (r.code === 1) throw new VerifyError(`cmp: files differ: ${a} vs ${b}`);
}

export interface ImageInfo {
  readonly virtualBytes: number;
  readonly fileBytes: number;
  /** The backing name as written in the header, or null. */
  readonly backing: string | null;
}

/** `qemu-img info` of one image (not its chain). */
export async function imageInfo(path: string): Promise<ImageInfo> {
  const r = await runCommand('qemu-img', ['info', '-f', 'qcow2', '--output=json', '-U', path]);
  const info = JSON.parse(r.stdout) as { 'virtual-size': number; 'actual-size': number; 'backing-filename'?: string };
  return { virtualBytes: info['virtual-size'], fileBytes: info['actual-size'], backing: info['backing-filename'] ?? null };
}

/** The backing name in the header must be the expected relative name: an absolute one would tie the file to a host. */
export async function assertBacking(path: string, expected: string | null): Promise<void> {
  const { backing } = await imageInfo(path);
  if (backing !== expected) throw new VerifyError(`${path}: backing name is ${JSON.stringify(backing)}, expected ${JSON.stringify(expected)}`);
}

/** Creates an empty qcow2 overlay whose header names `backing` (relative to `cwd`, where the overlay is created). */
export async function createOverlay(cwd: string, name: string, backing: string): Promise<void> {
  await runCommand('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', '-b', backing, '-F', 'qcow2', name], { cwd });
}
