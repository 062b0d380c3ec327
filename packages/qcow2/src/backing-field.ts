/**
 * Where a qcow2 file's backing file name lies, from its first 24 bytes alone (qcow2 spec: magic at byte 0,
 * version at 4, backing_file_offset (u64) at 8, backing_file_size (u32) at 16, cluster_bits at 20; the name
 * lies inside the first cluster). For callers that ask "what does this file depend on" of many files and
 * should read that field, not a whole header (parseQcow2Header is what checks a file).
 */
import { MAX_BACKING_NAME_LENGTH, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, QCOW2_MAGIC } from './constants.ts';

/** Bytes backingNameField needs. */
export const BACKING_FIELD_HEAD_BYTES = 24;

/** The name's byte range, or null when there is none or `head` is not a qcow2 header with sane fields. */
export function backingNameField(head: Uint8Array): { offset: number; size: number } | null {
  if (head.length < BACKING_FIELD_HEAD_BYTES) return null;
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  if (v.getUint32(0) !== QCOW2_MAGIC) return null;
  const version = v.getUint32(4);
  const offset = v.getBigUint64(8);
  const size = v.getUint32(16);
  const clusterBits = v.getUint32(20);
  if ((version !== 2 && version !== 3) || offset === 0n || size === 0 || size > MAX_BACKING_NAME_LENGTH) return null;
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS || offset + BigInt(size) > 1n << BigInt(clusterBits)) return null;
  return { offset: Number(offset), size };
}
