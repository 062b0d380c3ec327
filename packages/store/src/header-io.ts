/** Reads and parses a qcow2 header from a file, in TypeScript, before any QEMU tool opens the file. */
import { type FileHandle, open } from 'node:fs/promises';

import { backingNameField, detectImageFormat, parseQcow2Header, QCOW2_MAX_HEADER_BYTES, Qcow2TruncatedError, type ImageFormat, type Qcow2Header } from '@roamdesk/qcow2';

export interface LeadingBytes {
  readonly bytes: Uint8Array;
  readonly fileSize: number;
}

/** What a header with QEMU's default 64 KiB clusters needs (header, extensions, backing name): read at once. */
const FIRST_READ_BYTES = 64 * 1024;

/**
 * The leading bytes parseQcow2Header needs: the first 64 KiB, and more only when the header declares things beyond
 * them (its first cluster may be up to 2 MiB: QCOW2_MAX_HEADER_BYTES, the documented sufficient amount). Not 2 MiB
 * every time: memory touched for the first time is slow here (notes/performance.md), and a 2 MiB read cost 10–20 ms
 * of every upload's completion.
 */
export async function readLeadingBytes(fh: FileHandle): Promise<LeadingBytes> {
  const fileSize = (await fh.stat()).size;
  const most = Math.min(fileSize, QCOW2_MAX_HEADER_BYTES);
  let want = Math.min(most, FIRST_READ_BYTES);
  for (;;) {
    const bytes = Buffer.allocUnsafe(want);
    const got = await readAt(fh, bytes, 0);
    const lead = { bytes: bytes.subarray(0, got), fileSize };
    if (got < want || want >= most) return lead;
    const needed = bytesNeeded(lead);
    if (needed <= got) return lead;
    want = Math.min(most, Math.max(needed, 2 * want));
  }
}

/** How many leading bytes the header parser asks for (Qcow2TruncatedError); 0 when these suffice or it is no qcow2. */
function bytesNeeded(lead: LeadingBytes): number {
  try {
    parseHeader(lead);
    return 0;
  } catch (e) {
    const needed = e instanceof Qcow2TruncatedError ? e.data['needed'] : 0;
    return typeof needed === 'number' ? needed : 0;
  }
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
