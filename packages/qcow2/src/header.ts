// parseQcow2Header: the qcow2 header (docs/interop/qcow2.txt, "Header") from a file's leading bytes.
// It refuses what the spec forbids and what QEMU 7.2 refuses on open, and describes the rest; whether a file
// is *acceptable* (dirty, encrypted, backing name, QEMU's table size limits …) is the policy's decision
// (policy.ts), not the parser's.
// 64-bit fields stay bigint; 32-bit fields are numbers (always safe integers).

import {
  COMPAT_LAZY_REFCOUNTS, COMPRESSION_TYPE_OFFSET, CRYPT_AES, CRYPT_LUKS, CRYPT_NONE, INCOMPAT_COMPRESSION,
  INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY, INCOMPAT_EXTL2, INCOMPAT_KNOWN, L1_ENTRY_SIZE,
  MAX_BACKING_NAME_LENGTH, MAX_CLUSTER_BITS, MAX_FILE_OFFSET, MAX_REFCOUNT_ORDER, MAX_SNAPSHOTS, MIN_CLUSTER_BITS,
  QCOW2_MAGIC, SNAPSHOT_ENTRY_MIN_SIZE, V2_HEADER_LENGTH, V2_REFCOUNT_ORDER, V3_MIN_HEADER_LENGTH,
} from './constants.ts';
import {
  BackingNameInvalidError, BackingNameTooLongError, BadClusterBitsError, BadCompressionTypeError, BadCryptMethodError,
  BadHeaderLengthError, BadMagicError, BadOffsetError, BadRefcountOrderError, L1TableTooSmallError, NoRefcountTableError,
  type Qcow2Table, TooManySnapshotsError, UnsupportedVersionError,
} from './errors.ts';
import { readExtensions } from './extensions.ts';
import { HeaderReader } from './reader.ts';
import { decodeStrictUtf8, hex } from './text.ts';
import type { ParseOptions, Qcow2Header } from './types.ts';

const MAGIC_BYTES = new Uint8Array([0x51, 0x46, 0x49, 0xfb]);

/**
 * Parses a qcow2 header from the file's leading bytes.
 *
 * Throws only Qcow2Error subclasses for anything in `bytes`. When `bytes` is shorter than what the header
 * declares, throws Qcow2TruncatedError whose `data.needed` says how many leading bytes to read before
 * trying again (it may take a few rounds; reading QCOW2_MAX_HEADER_BYTES, or the whole file if smaller,
 * always suffices). With `opts.fileSize`, also checks that the L1 table, refcount table, snapshot table
 * and encryption header lie inside the file. A negative or fractional fileSize is a caller bug: RangeError.
 *
 * @example
 *   const header = parseQcow2Header(await readLeadingBytes(path, QCOW2_MAX_HEADER_BYTES), { fileSize });
 */
export function parseQcow2Header(bytes: Uint8Array, opts: ParseOptions = {}): Qcow2Header {
  const r = new HeaderReader(bytes, toFileSize(opts.fileSize));

  // Header bytes 0-3: magic "QFI\xfb". Checked before anything else so a short non-qcow2 buffer is
  // reported as "not qcow2" rather than "too short".
  const prefix = bytes.subarray(0, 4);
  if (prefix.some((b, i) => b !== MAGIC_BYTES[i])) throw new BadMagicError(hex(prefix));
  r.need(V2_HEADER_LENGTH, 'header');
  if (r.u32(0) !== QCOW2_MAGIC) throw new BadMagicError(hex(prefix));

  // Bytes 4-7: "Version number (valid values are 2 and 3)".
  const versionField = r.u32(4);
  if (versionField !== 2 && versionField !== 3) throw new UnsupportedVersionError(versionField);
  const version: 2 | 3 = versionField;

  // Bytes 20-23: cluster_bits, 9 (spec minimum) to 21 (QEMU's 2 MiB limit).
  const clusterBits = r.u32(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) throw new BadClusterBitsError(clusterBits, 'range');
  const clusterSize = 2 ** clusterBits;

  // Bytes 72-103 exist only in version 3; header_length (100-103) "at least 104 bytes and must be a multiple
  // of 8"; QEMU also refuses a header longer than the first cluster.
  let headerLength = V2_HEADER_LENGTH;
  let incompatibleFeatures = 0n;
  let compatibleFeatures = 0n;
  let autoclearFeatures = 0n;
  let refcountOrder = V2_REFCOUNT_ORDER;
  if (version === 3) {
    r.need(V3_MIN_HEADER_LENGTH, 'header');
    headerLength = r.u32(100);
    if (headerLength < V3_MIN_HEADER_LENGTH || headerLength % 8 !== 0 || headerLength > clusterSize) {
      throw new BadHeaderLengthError(headerLength, clusterSize);
    }
    r.need(headerLength, 'header');
    incompatibleFeatures = r.u64(72);
    compatibleFeatures = r.u64(80);
    autoclearFeatures = r.u64(88);
    refcountOrder = r.u32(96);
    if (refcountOrder > MAX_REFCOUNT_ORDER) throw new BadRefcountOrderError(refcountOrder);
  }

  // "Extended L2 Entries ... cluster_bits must be at least 14".
  const extendedL2 = (incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
  if (extendedL2 && clusterBits < 14) throw new BadClusterBitsError(clusterBits, 'extended-l2');

  const compressionType = readCompressionType(r, headerLength, incompatibleFeatures);

  // Bytes 32-35: crypt_method, "0 for no encryption, 1 for AES encryption, 2 for LUKS encryption".
  const cryptMethod = r.u32(32);
  if (cryptMethod !== CRYPT_NONE && cryptMethod !== CRYPT_AES && cryptMethod !== CRYPT_LUKS) {
    throw new BadCryptMethodError(cryptMethod);
  }

  const virtualSize = r.u64(24);
  const l1Size = r.u32(36);
  const l1TableOffset = r.u64(40);
  const refcountTableOffset = r.u64(48);
  const refcountTableClusters = r.u32(56);
  const nbSnapshots = r.u32(60);
  const snapshotsOffset = r.u64(64);
  const cluster = BigInt(clusterSize);

  // Tables: "Must be aligned to a cluster boundary"; a table at offset 0 would overwrite the header;
  // QEMU's qcow2_validate_table() also refuses a table ending past INT64_MAX.
  checkTable(r, 'l1', l1TableOffset, BigInt(l1Size) * BigInt(L1_ENTRY_SIZE), cluster);
  if (refcountTableClusters === 0) throw new NoRefcountTableError();
  checkTable(r, 'refcount', refcountTableOffset, BigInt(refcountTableClusters) * cluster, cluster);
  if (nbSnapshots > MAX_SNAPSHOTS) throw new TooManySnapshotsError(nbSnapshots, MAX_SNAPSHOTS);
  checkTable(r, 'snapshots', snapshotsOffset, BigInt(nbSnapshots) * BigInt(SNAPSHOT_ENTRY_MIN_SIZE), cluster);

  // QEMU (qcow2_do_open): "the L1 table must contain at least enough entries to put header.size bytes".
  // One L1 entry maps one L2 table: clusterSize / L2 entry size (8, or 16 with extended L2) clusters.
  const l2Bits = clusterBits - (extendedL2 ? 4 : 3);
  const l1Needed = (virtualSize + (1n << BigInt(clusterBits + l2Bits)) - 1n) >> BigInt(clusterBits + l2Bits);
  if (BigInt(l1Size) < l1Needed) {
    throw new L1TableTooSmallError({ l1Size, needed: String(l1Needed), virtualSize: String(virtualSize) });
  }

  // Bytes 8-15/16-19: backing file name, which the spec places after the extension area inside the first
  // cluster; QEMU refuses an offset past the cluster and a name longer than 1023 bytes or past the cluster.
  const backingOffset = r.u64(8);
  const backingSize = r.u32(16);
  const extStart = headerLength;
  let extEnd = clusterSize;
  if (backingOffset !== 0n) {
    const where = { table: 'backing-name' as const, offset: String(backingOffset), clusterSize };
    if (backingOffset < BigInt(extStart)) throw new BadOffsetError(where, 'overlaps-header');
    if (backingOffset > cluster) throw new BadOffsetError(where, 'outside-first-cluster');
    if (backingSize > MAX_BACKING_NAME_LENGTH) throw new BackingNameTooLongError(backingSize);
    if (backingOffset + BigInt(backingSize) > cluster) {
      throw new BadOffsetError({ ...where, end: String(backingOffset + BigInt(backingSize)) }, 'outside-first-cluster');
    }
    extEnd = Number(backingOffset);
  }

  const ext = readExtensions(r, extStart, extEnd, clusterSize, cryptMethod);

  let backing: Qcow2Header['backing'] = null;
  if (backingOffset !== 0n) {
    backing = { name: readBackingName(r, extEnd, backingSize), format: ext.backingFormat };
  }

  if (ext.cryptoHeader !== null) {
    checkTable(r, 'encryption-header', ext.cryptoHeader.offset, ext.cryptoHeader.length, cluster);
  }

  return {
    version,
    clusterBits,
    clusterSize,
    virtualSize,
    cryptMethod,
    encryption: cryptMethod === CRYPT_AES ? 'aes' : cryptMethod === CRYPT_LUKS ? 'luks' : 'none',
    l1Size,
    l1TableOffset,
    refcountTableOffset,
    refcountTableClusters,
    nbSnapshots,
    snapshotsOffset,
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    dirty: (incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
    corrupt: (incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n,
    hasExternalDataFile: (incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n,
    extendedL2,
    unknownIncompatibleFeatures: incompatibleFeatures & ~INCOMPAT_KNOWN,
    lazyRefcounts: (compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
    refcountOrder,
    headerLength,
    compressionType,
    backing,
    dataFile: ext.dataFile,
    cryptoHeader: ext.cryptoHeader,
    featureNames: ext.featureNames,
    extensions: ext.extensions,
  };
}

function toFileSize(fileSize: number | bigint | undefined): bigint | null {
  if (fileSize === undefined) return null;
  if (typeof fileSize === 'number' && !Number.isSafeInteger(fileSize)) {
    throw new RangeError(`fileSize must be a non-negative integer, got ${fileSize}`);
  }
  const n = BigInt(fileSize);
  if (n < 0n) throw new RangeError(`fileSize must be a non-negative integer, got ${n}`);
  return n;
}

/** "Additional fields", byte 104: compression_type, present only when header_length > 104. "If the
 *  incompatible bit 'Compression type' is set: the field must be present and non-zero ... Otherwise, this
 *  field must not be present or must be zero". */
function readCompressionType(r: HeaderReader, headerLength: number, incompatible: bigint): 'zlib' | 'zstd' {
  const type = headerLength > COMPRESSION_TYPE_OFFSET ? r.u8(COMPRESSION_TYPE_OFFSET) : 0;
  const bit = (incompatible & INCOMPAT_COMPRESSION) !== 0n;
  if (type > 1) throw new BadCompressionTypeError({ compressionType: type, compressionBit: bit }, 'unknown');
  if (bit !== (type !== 0)) throw new BadCompressionTypeError({ compressionType: type, compressionBit: bit }, 'bit-mismatch');
  return type === 1 ? 'zstd' : 'zlib';
}

/** Alignment, overlap with the header cluster, 64-bit overflow and (with a file size) end of file. */
function checkTable(r: HeaderReader, table: Qcow2Table, offset: bigint, size: bigint, cluster: bigint): void {
  const clusterSize = Number(cluster);
  if (offset % cluster !== 0n) throw new BadOffsetError({ table, offset: String(offset), clusterSize }, 'unaligned');
  if (size === 0n) return;
  if (offset === 0n) throw new BadOffsetError({ table, offset: '0', clusterSize }, 'overlaps-header');
  const end = offset + size;
  if (end > MAX_FILE_OFFSET) throw new BadOffsetError({ table, offset: String(offset), end: String(end) }, 'too-large');
  if (r.fileSize !== null && end > r.fileSize) {
    throw new BadOffsetError({ table, offset: String(offset), end: String(end), fileSize: String(r.fileSize) }, 'outside-file');
  }
}

function readBackingName(r: HeaderReader, offset: number, size: number): string {
  // QEMU never writes an offset with an empty name (rebase -b "" clears the offset): an empty name is
  // refused rather than read as "no backing file", so the two states cannot be confused.
  if (size === 0) throw new BackingNameInvalidError('empty');
  r.need(offset + size, 'backing file name');
  const name = decodeStrictUtf8(r.slice(offset, size));
  if (name === null) throw new BackingNameInvalidError('not-utf8');
  if (name.includes('\0')) throw new BackingNameInvalidError('nul');
  return name;
}
