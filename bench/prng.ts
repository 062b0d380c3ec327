/**
 * A seeded, fast, deterministic pseudo-random generator for the workload.
 *
 * Why AES-128-CTR and not a JS xorshift: the workload needs gigabytes of random bytes, and the AES-NI keystream from
 * node:crypto runs at several GB/s where a JS loop manages a few hundred MB/s. The same seed and label always give
 * the same stream, on every machine, so every bench run measures the same bytes.
 */
import { createCipheriv, createHash } from 'node:crypto';

/**
 * Keystream bytes per cipher call. Small on purpose: memory touched for the first time is very slow on the
 * project's VMs (125–180 MB/s, notes/performance.md), and buffers of 64 KiB are recycled by malloc where multi-MiB
 * ones are fresh mmaps every time.
 */
const CHUNK_BYTES = 1 << 16;
const ZEROS = Buffer.alloc(CHUNK_BYTES);

export class Rng {
  readonly #cipher: ReturnType<typeof createCipheriv>;
  #pool: Uint32Array = new Uint32Array(0);
  #next = 0;

  /** A stream named by `seed` and `label`: streams with different labels are independent. */
  constructor(seed: string, label: string) {
    const digest = createHash('sha256').update(seed).update('\0').update(label).digest();
    this.#cipher = createCipheriv('aes-128-ctr', digest.subarray(0, 16), digest.subarray(16, 32));
  }

  /** `n` fresh random bytes (a new buffer: it is the caller's to keep). Use fill() for large amounts. */
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    this.fill(out);
    return out;
  }

  /** Fills `out` with random bytes. */
  fill(out: Uint8Array): void {
    for (let at = 0; at < out.length; at += CHUNK_BYTES) {
      const n = Math.min(CHUNK_BYTES, out.length - at);
      const chunk = this.#cipher.update(n === CHUNK_BYTES ? ZEROS : ZEROS.subarray(0, n));
      out.set(chunk, at);
    }
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    if (this.#next >= this.#pool.length) {
      const raw = this.bytes(CHUNK_BYTES);
      this.#pool = new Uint32Array(raw.buffer, raw.byteOffset, raw.length >>> 2);
      this.#next = 0;
    }
    return this.#pool[this.#next++] ?? 0;
  }

  /** A uniform float in [0, 1). */
  float(): number {
    return this.u32() / 0x1_0000_0000;
  }

  /** A uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** A uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** A log-uniform integer in [lo, hi]: small values common, large ones possible (file and hole sizes). */
  logRange(lo: number, hi: number): number {
    const v = Math.exp(Math.log(lo) + this.float() * (Math.log(hi + 1) - Math.log(lo)));
    return Math.min(hi, Math.max(lo, Math.floor(v)));
  }

  /** Picks an index according to `weights` (need not sum to 1). */
  pick(weights: readonly number[]): number {
    const total = weights.reduce((a, b) => a + b, 0);
    let x = this.float() * total;
    for (let i = 0; i < weights.length; i++) {
      x -= weights[i] ?? 0;
      if (x < 0) return i;
    }
    return weights.length - 1;
  }
}
