/**
 * The wire format of a piece batch (both directions): a sequence of frames, each a 20-byte header followed
 * by the payload. One HTTP request carries many pieces (notes/performance.md: casync's one request per chunk
 * gave 20 MB/s), and per-frame encoding lets compression be chosen piece by piece.
 *
 *   offset  size  field
 *   0       4     magic "RDP1"
 *   4       4     piece index (u32 BE)
 *   8       1     encoding: 0 raw, 1 zstd
 *   9       3     zero
 *   12      4     payload length (u32 BE)
 *   16      4     raw (decoded) length (u32 BE)
 */
import { TransferError } from './errors.ts';
import { MAX_PIECE_SIZE } from './manifest.ts';

export const FRAME_HEADER_BYTES = 20;
const MAGIC = 0x52445031; // "RDP1"

export type Encoding = 0 | 1;
export const ENCODING_RAW: Encoding = 0;
export const ENCODING_ZSTD: Encoding = 1;

export interface FrameHeader {
  readonly index: number;
  readonly encoding: Encoding;
  readonly payloadLength: number;
  readonly rawLength: number;
}

export function encodeFrameHeader(h: FrameHeader): Buffer {
  const b = Buffer.alloc(FRAME_HEADER_BYTES);
  b.writeUInt32BE(MAGIC, 0);
  b.writeUInt32BE(h.index, 4);
  b.writeUInt8(h.encoding, 8);
  b.writeUInt32BE(h.payloadLength, 12);
  b.writeUInt32BE(h.rawLength, 16);
  return b;
}

function protocolError(message: string, data: Record<string, unknown> = {}): TransferError {
  return new TransferError('XFER_ERR_PROTOCOL', message, data);
}

export function decodeFrameHeader(b: Buffer): FrameHeader {
  if (b.readUInt32BE(0) !== MAGIC) throw protocolError('not a Roamdesk piece frame (bad magic)');
  const encoding = b.readUInt8(8);
  if (encoding !== 0 && encoding !== 1) throw protocolError(`unknown piece encoding ${encoding}`);
  if (b.readUIntBE(9, 3) !== 0) throw protocolError('reserved frame bytes are not zero');
  const payloadLength = b.readUInt32BE(12);
  const rawLength = b.readUInt32BE(16);
  // Bounded before anything is allocated: a peer cannot make us reserve more than one piece.
  if (rawLength === 0 || rawLength > MAX_PIECE_SIZE || payloadLength === 0 || payloadLength > MAX_PIECE_SIZE + 1024) {
    throw protocolError(`frame lengths out of range (payload ${payloadLength}, raw ${rawLength})`);
  }
  if (encoding === 0 && payloadLength !== rawLength) throw protocolError('raw frame whose payload and raw lengths differ');
  return { index: b.readUInt32BE(4), encoding, payloadLength, rawLength };
}

export interface Frame extends FrameHeader {
  /** The payload (a view into a reused buffer: valid until `release()`). */
  readonly payload: Buffer;
  release(): void;
}

/** Reused payload buffers, so a long transfer does not allocate (and first-touch) fresh memory per piece. */
export class BufferPool {
  readonly #free: Buffer[] = [];
  constructor(readonly size: number, private readonly max = 16) {}
  take(): Buffer {
    return this.#free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }
  give(b: Buffer): void {
    if (this.#free.length < this.max && b.length === this.size) this.#free.push(b);
  }
}

/** Pools by buffer size, shared by everything one sender or receiver does over its lifetime. */
export class BufferPools {
  readonly #pools = new Map<number, BufferPool>();
  constructor(private readonly maxPerSize = 32) {}
  take(size: number): Buffer {
    return this.pool(size).take();
  }
  give(b: Buffer): void {
    this.#pools.get(b.length)?.give(b);
  }
  pool(size: number): BufferPool {
    let p = this.#pools.get(size);
    if (p === undefined) {
      p = new BufferPool(size, this.maxPerSize);
      this.#pools.set(size, p);
    }
    return p;
  }
}

/**
 * Splits a byte stream into frames. Payloads are assembled into pooled buffers; a truncated stream (ends
 * inside a header or payload) is a protocol error, so a cut connection never yields a partial piece.
 */
export async function* readFrames(source: AsyncIterable<Buffer | Uint8Array | string> | Iterable<Buffer>, pool: BufferPool): AsyncGenerator<Frame> {
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  let headerFill = 0;
  let current: { h: FrameHeader; buf: Buffer; fill: number } | null = null;
  for await (const chunkLike of source) {
    const chunk = typeof chunkLike === 'string' ? Buffer.from(chunkLike) : Buffer.isBuffer(chunkLike) ? chunkLike : Buffer.from(chunkLike.buffer, chunkLike.byteOffset, chunkLike.byteLength);
    let pos = 0;
    while (pos < chunk.length) {
      if (current === null) {
        const n = Math.min(FRAME_HEADER_BYTES - headerFill, chunk.length - pos);
        chunk.copy(header, headerFill, pos, pos + n);
        headerFill += n;
        pos += n;
        if (headerFill < FRAME_HEADER_BYTES) break;
        headerFill = 0;
        const h = decodeFrameHeader(header);
        if (h.payloadLength > pool.size) throw protocolError(`frame payload of ${h.payloadLength} bytes exceeds the piece size ${pool.size}`);
        current = { h, buf: pool.take(), fill: 0 };
      }
      const n = Math.min(current.h.payloadLength - current.fill, chunk.length - pos);
      chunk.copy(current.buf, current.fill, pos, pos + n);
      current.fill += n;
      pos += n;
      if (current.fill === current.h.payloadLength) {
        const { h, buf } = current;
        current = null;
        let released = false;
        yield { ...h, payload: buf.subarray(0, h.payloadLength), release: () => { if (!released) { released = true; pool.give(buf); } } };
      }
    }
  }
  if (current !== null || headerFill !== 0) {
    if (current !== null) pool.give(current.buf);
    throw protocolError('the piece stream ended inside a frame (connection cut?)');
  }
}
