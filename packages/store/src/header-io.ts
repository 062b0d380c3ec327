/** Reads and parses a qcow2 header from a file, in TypeScript, before any QEMU tool opens the file. */
import { type FileHandle, open } from 'node:fs/promises';

import { backingNameField, detectImageFormat, parseQcow2Header, QCOW2_MAX_HEADER_BYTES, type ImageFormat, type Qcow2Header } from '@roamdesk/qcow2';

export interface LeadingBytes {
  readonly bytes: Uint8Array;
  readonly fileSize: number;
}

/**
 * The first min(size, QCOW2_MAX_HEADER_BYTES) bytes: parseQcow2Header's documented sufficient amount (the
 * header, its extensions and the backing name all lie in the first cluster, at most 2 MiB).
 */
export async function readLeadingBytes(fh: FileHandle): Promise<LeadingBytes> {
  const fileSize = (await fh.stat()).size;
  const bytes = Buffer.alloc(Math.min(fileSize, QCOW2_MAX_HEADER_BYTES));
  const got = await readAt(fh, bytes, 0);
  return { bytes: bytes.subarray(0, got), fileSize };
}

/** Fills `buf` from `position` on; the bytes read, fewer than buf.length only where the file ends. */
export async function readAt(fh: FileHandle, buf: Buffer, position: number): Promise<number> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

export async function readLeadingBytesOf(path: string): Promise<LeadingBytes> {
  const fh = await open(path, 'r');
  try {
    return await readLeadingBytes(fh);
  } finally {
    await fh.close();
  }
}

export function detectFormat(lead: LeadingBytes): ImageFormat {
  return detectImageFormat(lead.bytes);
}

export function parseHeader(lead: LeadingBytes): Qcow2Header {
  return parseQcow2Header(lead.bytes, { fileSize: lead.fileSize });
}

export async function readHeader(path: string): Promise<Qcow2Header> {
  return parseHeader(await readLeadingBytesOf(path));
}

/** Enough for the header's fixed fields and, with the default 64 KiB clusters, the backing name too. */
const BACKING_PROBE_BYTES = 4096;

/**
 * The backing file name of the qcow2 file at `path`, reading only the bytes that hold it (backingNameField):
 * null when it has none or is not a qcow2 file whose name field is sane. For "does anything depend on X" asked
 * of every file in the store, where a full header read (up to 2 MiB each) made one removal cost gigabytes.
 */
export async function readBackingName(path: string): Promise<string | null> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(BACKING_PROBE_BYTES);
    const got = await readAt(fh, head, 0);
    const field = backingNameField(head.subarray(0, got));
    if (field === null) return null;
    const { offset, size } = field;
    if (offset + size <= got) return head.toString('utf8', offset, offset + size);
    const name = Buffer.alloc(size);
    return (await readAt(fh, name, offset)) === size ? name.toString('utf8') : null;
  } finally {
    await fh.close();
  }
}
