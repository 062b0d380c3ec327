/**
 * Copy-and-hash with positional reads into a few reused 1 MiB buffers (notes/performance.md: several positional
 * reads in flight reach 2.6 GB/s where a stream pipeline costs 2.6× the floor; fresh large allocations are slow
 * on these VMs, so buffers are allocated once per call). SHA-256 is node:crypto (≈1 GB/s with SHA-NI).
 * The hash covers exactly the bytes written, so what we publish is what we hashed even if the source changes.
 */
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';

import { StoreAbortedError } from './errors.ts';
import { ProgressMeter, type ProgressCallback } from './progress.ts';

const CHUNK = 1024 * 1024;
const IN_FLIGHT = 4;

export interface HashCopyOptions {
  readonly onProgress?: ProgressCallback | undefined;
  readonly signal?: AbortSignal | undefined;
  /** Progress total; the copy itself runs to EOF. */
  readonly expectedBytes?: number;
  /** Sees every byte in order (a view, valid during the call): another digest made in the same read pass. */
  readonly onData?: ((data: Buffer) => void) | undefined;
  /** false: read (for onData) without hashing; `sha256` is then ''. */
  readonly hash?: boolean;
}

export interface HashCopyResult {
  readonly sha256: string;
  readonly bytes: number;
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new StoreAbortedError('aborted', {}, { cause: signal.reason });
}

/** Reads `src` to EOF, hashing every byte, and writes the same bytes at the same offsets to `dst` (if given). */
export async function copyAndHash(src: FileHandle, dst: FileHandle | null, opts: HashCopyOptions = {}): Promise<HashCopyResult> {
  const total = opts.expectedBytes ?? (await src.stat()).size;
  const meter = new ProgressMeter(total, opts.onProgress);
  const hash = createHash('sha256');
  const hashing = opts.hash !== false;
  const slots = Array.from({ length: IN_FLIGHT }, () => ({ buf: Buffer.allocUnsafe(CHUNK), write: Promise.resolve() }));
  const reads: Promise<number>[] = [];
  let nextReadPos = 0;
  const startRead = (slotIndex: number): void => {
    const slot = slots[slotIndex]!;
    const pos = nextReadPos;
    nextReadPos += CHUNK;
    // The slot's buffer is reused only after its previous write finished.
    const read = slot.write.then(async () => (await src.read(slot.buf, 0, CHUNK, pos)).bytesRead);
    // Awaited in order below; the no-op handler only stops an early rejection counting as unhandled.
    read.catch(() => undefined);
    reads[slotIndex] = read;
  };
  for (let i = 0; i < IN_FLIGHT; i++) startRead(i);

  let done = 0;
  let eof = false;
  try {
    for (let i = 0; !eof; i = (i + 1) % IN_FLIGHT) {
      throwIfAborted(opts.signal);
      const n = await reads[i]!;
      const slot = slots[i]!;
      if (n > 0) {
        const data = slot.buf.subarray(0, n);
        if (hashing) hash.update(data);
        opts.onData?.(data);
        if (dst !== null) {
          const pos = done;
          const write = dst.write(data, 0, n, pos).then(() => undefined);
          write.catch(() => undefined);
          slot.write = write;
        }
        done += n;
        meter.update(done);
      }
      // A short read is EOF for a regular file; reads already issued beyond it return 0 and are ignored.
      if (n < CHUNK) eof = true;
      else startRead(i);
    }
  } finally {
    // Never leave a read or write running against handles the caller is about to close.
    await Promise.allSettled([...reads, ...slots.map((s) => s.write)]);
  }
  await Promise.all(slots.map((s) => s.write));
  meter.update(done, true);
  return { sha256: hashing ? hash.digest('hex') : '', bytes: done };
}

/** SHA-256 of a file's bytes. */
export async function hashFile(path: string, opts: HashCopyOptions = {}): Promise<HashCopyResult> {
  const fh = await open(path, 'r');
  try {
    return await copyAndHash(fh, null, opts);
  } finally {
    await fh.close();
  }
}

/** Hashes the file at `path` (`size` bytes) somewhere else, e.g. a worker thread; resolves with its SHA-256. */
export type Sha256Offload = (path: string, size: number) => Promise<string>;

/**
 * A seal's read pass over a file nothing writes any more: its SHA-256, with `onData` seeing every byte. With
 * `offload`, the SHA-256 is computed there, in parallel with this thread's pass for `onData` (a transfer manifest's
 * BLAKE3): on a server sealing a 200 MB layer, 0.2 s of hashing leaves the event loop.
 */
export async function sealHash(path: string, opts: { onData?: ((data: Buffer) => void) | undefined; offload?: Sha256Offload | undefined }): Promise<HashCopyResult> {
  const fh = await open(path, 'r');
  try {
    if (opts.offload === undefined) return await copyAndHash(fh, null, { onData: opts.onData });
    const size = (await fh.stat()).size;
    const digest = opts.offload(path, size);
    digest.catch(() => undefined);
    if (opts.onData !== undefined) {
      const { bytes } = await copyAndHash(fh, null, { onData: opts.onData, hash: false });
      if (bytes !== size) throw new Error(`${path} changed while it was sealed (${size} bytes, then ${bytes})`);
    }
    return { sha256: await digest, bytes: size };
  } finally {
    await fh.close();
  }
}
