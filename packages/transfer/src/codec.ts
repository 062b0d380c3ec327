/**
 * Per-piece zstd at level 1 (the fastest level that still pays on slow links; notes/performance.md). A piece
 * that does not shrink by at least 3 % travels raw, so incompressible data costs only the attempt.
 * The low-level zstd-napi binding is used on purpose: contexts are reused (allocation per call was the measured
 * slowdown), output goes into the caller's reused buffers, and decompression writes into a buffer of exactly
 * the frame's declared raw length — a zstd frame claiming a huge content size cannot make us allocate it
 * (the high-level Decompressor trusts that claim).
 */
import zstd from 'zstd-napi/binding.js';

import { TransferError } from './errors.ts';
import { type Encoding, ENCODING_RAW, ENCODING_ZSTD } from './frames.ts';

export const ZSTD_LEVEL = 1;

export function compressedBound(pieceSize: number): number {
  return zstd.compressBound(pieceSize);
}

export class PieceCodec {
  #cctx: InstanceType<typeof zstd.CCtx> | null = null;
  #dctx: InstanceType<typeof zstd.DCtx> | null = null;

  /** zstd of `raw` into `out` (at least compressedBound(raw.length) long), or raw when it does not pay. */
  encode(raw: Buffer, out: Buffer): { encoding: Encoding; payload: Buffer } {
    this.#cctx ??= new zstd.CCtx();
    const n = this.#cctx.compress(out, raw, ZSTD_LEVEL);
    if (n >= raw.length * 0.97) return { encoding: ENCODING_RAW, payload: raw };
    return { encoding: ENCODING_ZSTD, payload: out.subarray(0, n) };
  }

  /** The piece's raw bytes: `payload` itself, or decompressed into `out` (exactly `rawLength` bytes). */
  decode(encoding: Encoding, payload: Buffer, rawLength: number, out: Buffer): Buffer {
    if (encoding === ENCODING_RAW) return payload;
    if (encoding !== ENCODING_ZSTD) throw new TransferError('XFER_ERR_PROTOCOL', `unknown encoding ${String(encoding)}`);
    this.#dctx ??= new zstd.DCtx();
    let n: number;
    try {
      n = this.#dctx.decompress(out.subarray(0, rawLength), payload);
    } catch (e) {
      throw new TransferError('XFER_ERR_PROTOCOL', `a zstd piece does not decompress into its declared ${rawLength} bytes: ${(e as Error).message}`, {}, { cause: e });
    }
    if (n !== rawLength) throw new TransferError('XFER_ERR_PROTOCOL', `a zstd piece decompressed to ${n} bytes, the frame says ${rawLength}`);
    return out.subarray(0, n);
  }
}
