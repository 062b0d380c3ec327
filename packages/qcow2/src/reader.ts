// Bounds-checked big-endian reads over the leading bytes of an image ("All numbers in qcow2 are stored in
// Big Endian byte order"). Every read first asks need(): a short buffer becomes Qcow2TruncatedError (read
// more and retry), a short *file* becomes FileTruncatedError (reading more cannot help).

import { FileTruncatedError, Qcow2TruncatedError } from './errors.ts';

export class HeaderReader {
  private readonly view: DataView;

  constructor(readonly bytes: Uint8Array, readonly fileSize: bigint | null) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Ensures the first `end` bytes are available; `what` names the structure for the message. */
  need(end: number, what: string): void {
    if (this.fileSize !== null && BigInt(end) > this.fileSize) {
      throw new FileTruncatedError({ needed: end, fileSize: String(this.fileSize), what });
    }
    if (end > this.bytes.length) {
      throw new Qcow2TruncatedError({ needed: end, have: this.bytes.length, what });
    }
  }

  u8(off: number): number {
    return this.view.getUint8(off);
  }

  u32(off: number): number {
    return this.view.getUint32(off, false);
  }

  u64(off: number): bigint {
    return this.view.getBigUint64(off, false);
  }

  slice(off: number, len: number): Uint8Array {
    return this.bytes.subarray(off, off + len);
  }
}

export function alignUp8(n: number): number {
  return Math.ceil(n / 8) * 8;
}
