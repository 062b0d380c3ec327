/**
 * Adaptive compression (notes/performance.md §2): zstd-1 runs at 200–480 MB/s here, below loopback and disk
 * speed, so compressing a fast link only slows it; on a slow link it pays by the compression ratio. Whether it
 * pays also depends on who is short of CPU, which no formula knows — so the controller measures both:
 *   warm-up (uncompressed; the first requests pay for connections, cold caches, first-touch memory)
 *   → a window uncompressed → a window compressed → keep the faster (raw bytes delivered per second).
 * A link already faster than this machine compresses (timed on the samples) skips the compressed window: a
 * sender compressing each request at about that speed cannot deliver more, and on a fast link the trial itself
 * costs (measured on the bench's 209 MB layer over loopback: 0.62–0.72 s with the trial against 0.42–0.54 s
 * without). So does data that does not compress (ratio < 1.1 on the sampled pieces) — but only on a link that is
 * not slow: two or three 1 MiB samples of a transfer of hundreds are a guess (on the bench's layer, which zstd-1
 * packs 1.3×, they said 1.01× in four runs of five, and the 100 Mbit/s check-out then took 16.9 s instead of
 * 13.6 s), while on a slow link the trial costs next to nothing: the compressor is idle most of the time, and a
 * piece that does not shrink travels raw. There the measured rates decide. The decision then holds for the rest
 * of the transfer; frames still fall back to raw piece by piece when zstd does not pay.
 */
import { compressedBound, PieceCodec } from './codec.ts';

export type CompressionMode = 'auto' | 'on' | 'off';

const WARMUP_BYTES = 8 * 1024 * 1024;
/** A window ends after this many raw bytes, or after WINDOW_MS with at least MIN_WINDOW_BYTES. */
const WINDOW_BYTES = 24 * 1024 * 1024;
const WINDOW_MS = 1500;
const MIN_WINDOW_BYTES = 4 * 1024 * 1024;
const MAX_SAMPLES = 4;
const SAMPLE_EVERY = 8;
/**
 * A sample is this much of the middle of a piece: zstd-1's ratio on 1 MiB is within about 8 % of its ratio on
 * the whole 4 MiB piece (bench layer: 1.24 vs 1.35), at a quarter of the cost. Whole pieces cost the sender about
 * 60 ms of CPU per transfer, on its critical path (a 41 MB check-in takes about 0.35 s).
 */
const SAMPLE_BYTES = 1024 * 1024;
const MARGIN = 1.1;
/**
 * A link this many times slower than zstd-1 compresses here (or, before that was timed, slower than
 * SLOW_LINK_BYTES_PER_S) is slow: a compressed trial costs it little, and the samples' ratio does not skip it.
 */
const SLOW_FACTOR = 4;
const SLOW_LINK_BYTES_PER_S = 50e6;

type Phase = 'warmup' | 'raw' | 'zstd' | 'decided';

interface Window {
  t0: number;
  bytes: number;
}

export class CompressionController {
  #on: boolean;
  #phase: Phase;
  #warm = 0;
  #window: Window | null = null;
  #rawRate = 0;
  #sampleCalls = 0;
  readonly #samples = { bytes: 0, packed: 0, n: 0, ms: 0, timedBytes: 0 };
  readonly #codec = new PieceCodec();
  #out: Buffer | null = null;
  /** Why the current decision was made (for logs, reports and the benchmark). */
  reason: string;

  constructor(readonly mode: CompressionMode, private readonly now: () => number = () => performance.now()) {
    this.#on = mode === 'on';
    this.#phase = mode === 'auto' ? 'warmup' : 'decided';
    this.reason = mode === 'auto' ? 'transfer too short to measure the link: uncompressed' : `compression ${mode} by request`;
  }

  get compress(): boolean {
    return this.#on;
  }

  /**
   * zstd's ratio on the middle of a few real pieces (cheap: at most four MiB per transfer). Every SAMPLE_EVERY-th
   * call only, from the second on: an object's first bytes are qcow2 metadata (tables, mostly zeros) that compress
   * far better than its data — sampling them said 5.8× for a layer that compresses 1.3×.
   */
  sample(whole: Buffer): void {
    if (this.#phase === 'decided' || this.#samples.n >= MAX_SAMPLES || whole.length < 64 * 1024) return;
    if (this.#sampleCalls++ % SAMPLE_EVERY !== 1) return;
    const at = Math.max(0, Math.floor((whole.length - SAMPLE_BYTES) / 2));
    const piece = whole.subarray(at, at + SAMPLE_BYTES);
    if (this.#out === null || this.#out.length < compressedBound(piece.length)) this.#out = Buffer.allocUnsafe(compressedBound(piece.length));
    const t0 = this.now();
    const { payload } = this.#codec.encode(piece, this.#out);
    // The first call pays for the context and the output buffer's first touch: not timed.
    if (this.#samples.n > 0) {
      this.#samples.ms += this.now() - t0;
      this.#samples.timedBytes += piece.length;
    }
    this.#samples.bytes += piece.length;
    this.#samples.packed += payload.length;
    this.#samples.n++;
  }

  /** True until the decision is made: the caller keeps requests small so a switch takes effect quickly. */
  get measuring(): boolean {
    return this.#phase !== 'decided';
  }

  /** Bytes per second zstd-1 compressed the samples here (0 before any sample). */
  get #compressRate(): number {
    return this.#samples.ms > 0 ? this.#samples.timedBytes / (this.#samples.ms / 1000) : 0;
  }

  get #ratio(): number {
    return this.#samples.packed > 0 ? this.#samples.bytes / this.#samples.packed : 1;
  }

  /** A piece of `rawBytes` arrived (or was sent), compressed or not. */
  record(rawBytes: number, compressed: boolean): void {
    const t = this.now();
    switch (this.#phase) {
      case 'decided':
        return;
      case 'warmup':
        this.#warm += rawBytes;
        if (this.#warm >= WARMUP_BYTES) this.#phase = 'raw';
        return;
      case 'raw':
      case 'zstd': {
        // Frames of the other encoding may still arrive from requests started before the switch: ignore them.
        if (compressed !== (this.#phase === 'zstd')) return;
        if (this.#window === null) {
          this.#window = { t0: t, bytes: 0 };
          return;
        }
        this.#window.bytes += rawBytes;
        const ms = t - this.#window.t0;
        if (this.#window.bytes < WINDOW_BYTES && !(ms >= WINDOW_MS && this.#window.bytes >= MIN_WINDOW_BYTES)) return;
        const rate = this.#window.bytes / (Math.max(1, ms) / 1000);
        this.#window = null;
        if (this.#phase === 'raw') {
          this.#rawRate = rate;
          const slow = this.#compressRate > 0 ? rate * SLOW_FACTOR < this.#compressRate : rate < SLOW_LINK_BYTES_PER_S;
          if (this.#samples.n > 0 && this.#ratio < MARGIN && !slow) this.#decide(false, `data compresses only ${this.#ratio.toFixed(2)}×`);
          else if (this.#compressRate > 0 && rate > this.#compressRate * MARGIN) {
            this.#decide(false, `${mb(rate)} uncompressed, faster than zstd-1 compresses here (${mb(this.#compressRate)})`);
          } else {
            this.#phase = 'zstd';
            this.#on = true;
          }
        } else {
          this.#decide(rate > this.#rawRate * MARGIN, `${mb(this.#rawRate)} uncompressed vs ${mb(rate)} with zstd-1 (ratio ${this.#ratio.toFixed(2)})`);
        }
        return;
      }
    }
  }

  /** Forces the decision from measured rates (bytes/s). Exposed for tests and for callers that know the link. */
  decideFromRates(rawRate: number, zstdRate: number): void {
    this.#rawRate = rawRate;
    this.#decide(zstdRate > rawRate * MARGIN, `${mb(rawRate)} uncompressed vs ${mb(zstdRate)} with zstd-1`);
  }

  #decide(on: boolean, why: string): void {
    this.#phase = 'decided';
    this.#on = on;
    this.reason = `${why}: compression ${on ? 'on' : 'off'}`;
  }
}

function mb(n: number): string {
  return `${(n / 1e6).toFixed(0)} MB/s`;
}
