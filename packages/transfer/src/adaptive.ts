/**
 * Adaptive compression (notes/performance.md §2): zstd-1 runs at 200–480 MB/s here, below loopback and disk
 * speed, so compressing a fast link only slows it; on a slow link it pays by the compression ratio. The
 * controller starts uncompressed and, after a warm-up (first requests pay for connections, cold caches and
 * first-touch memory), measures the delivered rate over a probe window while sampling zstd's speed and ratio
 * on real pieces. Compression goes on when the predicted compressed rate, min(compressor, link × ratio),
 * beats the measured rate by a margin. The decision then holds for the rest of the transfer.
 */
import { compressedBound, PieceCodec } from './codec.ts';

export type CompressionMode = 'auto' | 'on' | 'off';

const WARMUP_BYTES = 8 * 1024 * 1024;
const PROBE_BYTES = 32 * 1024 * 1024;
const MAX_SAMPLES = 4;
const MARGIN = 1.25;

export class CompressionController {
  #on: boolean;
  #decided: boolean;
  #wire = 0;
  #probeStart: { t: number; wire: number } | null = null;
  readonly #samples = { bytes: 0, packed: 0, ms: 0, n: 0 };
  readonly #codec = new PieceCodec();
  #out: Buffer | null = null;
  /** Why the current decision was made (for logs, reports and the benchmark). */
  reason: string;

  constructor(readonly mode: CompressionMode, private readonly now: () => number = () => performance.now()) {
    this.#on = mode === 'on';
    this.#decided = mode !== 'auto';
    this.reason = mode === 'auto' ? 'transfer too short to measure the link: uncompressed' : `compression ${mode} by request`;
  }

  get compress(): boolean {
    return this.#on;
  }

  /** Measures zstd's speed and ratio on a real piece (a few samples, spread over the probe). */
  sample(piece: Buffer): void {
    if (this.#decided || this.#samples.n >= MAX_SAMPLES || piece.length < 64 * 1024) return;
    if (this.#out === null || this.#out.length < compressedBound(piece.length)) this.#out = Buffer.allocUnsafe(compressedBound(piece.length));
    const t0 = this.now();
    const { payload } = this.#codec.encode(piece, this.#out);
    this.#samples.ms += Math.max(0.01, this.now() - t0);
    this.#samples.bytes += piece.length;
    this.#samples.packed += payload.length;
    this.#samples.n++;
  }

  /** `wireBytes` more crossed the link uncompressed (all requests in flight together). */
  record(wireBytes: number): void {
    if (this.#decided) return;
    this.#wire += wireBytes;
    if (this.#wire < WARMUP_BYTES) return;
    if (this.#probeStart === null) {
      this.#probeStart = { t: this.now(), wire: this.#wire };
      return;
    }
    const bytes = this.#wire - this.#probeStart.wire;
    if (bytes < PROBE_BYTES || this.#samples.n === 0) return;
    this.decide(bytes / (Math.max(1, this.now() - this.#probeStart.t) / 1000));
  }

  /** `linkRate`: bytes/s delivered by all requests together. Exposed for tests. */
  decide(linkRate: number): void {
    if (this.#decided) return;
    this.#decided = true;
    const s = this.#samples;
    const rate = s.ms > 0 ? (s.bytes / s.ms) * 1000 : 0;
    const ratio = s.packed > 0 ? s.bytes / s.packed : 1;
    const predicted = Math.min(rate, linkRate * ratio);
    this.#on = predicted > linkRate * MARGIN;
    const mb = (n: number): string => `${(n / 1e6).toFixed(0)} MB/s`;
    this.reason = `measured ${mb(linkRate)}; zstd-1 ${mb(rate)} at ratio ${ratio.toFixed(2)}: compression ${this.#on ? 'on' : 'off'}`;
  }
}
