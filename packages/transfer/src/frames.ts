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
 *
 * An upload over an upgraded connection (upgraded-receiver.ts) closes its stream with END_FRAME: the same
 * header with encoding 0xff and every other field zero.
 */
import { TransferError } from './errors.ts';
import { MAX_PIECE_SIZE } from './manifest.ts';

export const FRAME_HEADER_BYTES = 20;
const MAGIC = 0x52445031; // "RDP1"

export type Encoding = 0 | 1;
export const ENCODING_RAW: Encoding = 0;
export const ENCODING_ZSTD: Encoding = 1;

/** The end of a piece stream on an upgraded connection, where no HTTP framing says where the body stops. */
export const END_FRAME: Buffer = (() => {
  const b = Buffer.alloc(FRAME_HEADER_BYTES);
  b.writeUInt32BE(MAGIC, 0);
  b.writeUInt8(0xff, 8);
  return b;
})();

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
 * A receiver that takes payloads as they stream instead of whole: `start` sees each header and answers true
 * to receive that payload through `bytes` (views of the pushed chunk, valid during the call) and `end`.
 */
export interface DirectPayloads {
  start(h: FrameHeader): boolean;
  bytes(view: Buffer): void;
  end(h: FrameHeader): void;
}

/**
 * Splits a byte stream into frames, pushed chunk by chunk (the receiver's socket calls `push` with views into
 * its one reused read buffer, so every byte is copied out before `push` returns). Payloads are assembled into
 * pooled buffers and handed to `onFrame` as soon as they are whole; a stream that ends inside a header or a
 * payload is a protocol error, so a cut connection never yields a partial piece.
 */
export class FrameAssembler {
  readonly #header = Buffer.alloc(FRAME_HEADER_BYTES);
  #headerFill = 0;
  #current: { h: FrameHeader; buf: Buffer; fill: number } | null = null;
  /** A payload being handed to `direct` as it streams, and how much of it is still to come. */
  #direct: { h: FrameHeader; left: number } | null = null;
  #ended = false;

  constructor(private readonly pool: BufferPool, private readonly onFrame: (frame: Frame) => void, private readonly direct?: DirectPayloads) {}

  /** True once END_FRAME went by; any byte after it is a protocol error. */
  get ended(): boolean {
    return this.#ended;
  }

  push(chunk: Buffer, start = 0, end = chunk.length): void {
    let pos = start;
    if (this.#ended && pos < end) throw protocolError('bytes after the end of the piece stream');
    while (pos < end) {
      const direct = this.#direct;
      if (direct !== null) {
        const n = Math.min(direct.left, end - pos);
        direct.left -= n;
        this.direct!.bytes(chunk.subarray(pos, pos + n));
        pos += n;
        if (direct.left === 0) {
          this.#direct = null;
          this.direct!.end(direct.h);
        }
        continue;
      }
      let current = this.#current;
      if (current === null) {
        const n = Math.min(FRAME_HEADER_BYTES - this.#headerFill, end - pos);
        chunk.copy(this.#header, this.#headerFill, pos, pos + n);
        this.#headerFill += n;
        pos += n;
        if (this.#headerFill < FRAME_HEADER_BYTES) return;
        this.#headerFill = 0;
        if (this.#header.equals(END_FRAME)) {
          this.#ended = true;
          if (pos < end) throw protocolError('bytes after the end of the piece stream');
          return;
        }
        const h = decodeFrameHeader(this.#header);
        if (h.payloadLength > this.pool.size) throw protocolError(`frame payload of ${h.payloadLength} bytes exceeds the piece size ${this.pool.size}`);
        if (this.direct?.start(h) === true) {
          this.#direct = { h, left: h.payloadLength };
          continue;
        }
        current = { h, buf: this.pool.take(), fill: 0 };
        this.#current = current;
      }
      const n = Math.min(current.h.payloadLength - current.fill, end - pos);
      chunk.copy(current.buf, current.fill, pos, pos + n);
      current.fill += n;
      pos += n;
      if (current.fill === current.h.payloadLength) {
        this.#current = null;
        const { h, buf } = current;
        let released = false;
        this.onFrame({ ...h, payload: buf.subarray(0, h.payloadLength), release: () => { if (!released) { released = true; this.pool.give(buf); } } });
      }
    }
  }

  /** The stream ended: a protocol error unless it ended between frames. */
  end(): void {
    if (this.#current !== null || this.#direct !== null || this.#headerFill !== 0) {
      this.dispose();
      throw protocolError('the piece stream ended inside a frame (connection cut?)');
    }
  }

  /** Gives back the buffer of a half-assembled payload (the stream failed). */
  dispose(): void {
    if (this.#current !== null) this.pool.give(this.#current.buf);
    this.#current = null;
    this.#direct = null;
    this.#headerFill = 0;
  }
}
