/**
 * Writes pieces of a local file as a frame stream: positional reads ahead of the writer into reused buffers,
 * optional per-piece zstd. Used by the server for downloads and by the device for uploads. `write` gets a
 * frame's header and payload together (one writev) and must resolve only once both were handed to the socket,
 * because buffers are reused afterwards.
 */
import type { FileHandle } from 'node:fs/promises';

import { compressedBound, PieceCodec } from './codec.ts';
import { forEachPiece, READ_AHEAD } from './file-reader.ts';
import { type BufferPools, encodeFrameHeader, FRAME_HEADER_BYTES } from './frames.ts';
import { type Manifest, pieceRange } from './manifest.ts';

/**
 * The exact length of an uncompressed frame stream of pieces first…first+count-1, so the server can send it
 * with a Content-Length (a compressed stream's length is known only once sent: that one is chunked).
 */
export function rawStreamLength(m: Pick<Manifest, 'size' | 'pieceSize'>, first: number, count: number): number {
  const last = pieceRange(m, first + count - 1);
  return count * FRAME_HEADER_BYTES + (last.offset + last.length - first * m.pieceSize);
}

export interface SendStats {
  pieces: number;
  rawBytes: number;
  wireBytes: number;
}

/**
 * `pools` lends the read and compression buffers: a sender serves many requests, and allocating (first
 * touching) 12+ MiB of fresh memory per request cost more CPU than the transfer itself on these VMs.
 */
export async function sendPieces(
  fh: FileHandle, m: Pick<Manifest, 'size' | 'pieceSize'>, indices: readonly number[], compress: boolean,
  write: (header: Buffer, payload: Buffer) => Promise<void>, pools: BufferPools, signal?: AbortSignal,
): Promise<SendStats> {
  const codec = compress ? new PieceCodec() : null;
  const out = compress ? pools.take(compressedBound(m.pieceSize)) : null;
  const buffers = Array.from({ length: READ_AHEAD }, () => pools.take(m.pieceSize));
  const stats: SendStats = { pieces: 0, rawBytes: 0, wireBytes: 0 };
  try {
    await forEachPiece(fh, m, indices, async (index, data) => {
      const { encoding, payload } = codec !== null && out !== null ? codec.encode(data, out) : { encoding: 0 as const, payload: data };
      const header = encodeFrameHeader({ index, encoding, payloadLength: payload.length, rawLength: data.length });
      await write(header, payload);
      stats.pieces++;
      stats.rawBytes += data.length;
      stats.wireBytes += header.length + payload.length;
    }, { signal, buffers });
  } finally {
    for (const b of buffers) pools.give(b);
    if (out !== null) pools.give(out);
  }
  return stats;
}
