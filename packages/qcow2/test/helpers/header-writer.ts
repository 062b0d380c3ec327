// A tiny qcow2 header *writer* for tests: builds the leading bytes of an image from a description, laid out
// the way QEMU's qcow2_update_header() does (header, extensions, end marker, backing name). It deliberately
// shares no code with src/, so a round trip through parseQcow2Header checks the parser against an
// independent reading of docs/interop/qcow2.txt.

export interface ExtensionSpec {
  type: number;
  data: Uint8Array;
}

export interface HeaderSpec {
  version: 2 | 3;
  clusterBits: number;
  virtualSize: bigint;
  cryptMethod: number;
  /** Default: the smallest L1 table that maps virtualSize. */
  l1Size?: number | undefined;
  l1TableOffset: bigint;
  refcountTableOffset: bigint;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: bigint;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  /** Version 3 only. 104 omits compression_type; QEMU writes 112. */
  headerLength: number;
  compressionType: number;
  /** Written as extension 0xe2792aca before the others. */
  backingFormat?: string | undefined;
  /** Written as extension 0x44415441 after the backing format. */
  dataFile?: string | undefined;
  extensions: ExtensionSpec[];
  /** Raw bytes (or UTF-8 text) stored after the end marker; sets backing_file_offset/size. */
  backingName?: string | Uint8Array | undefined;
  /** Leave out the end-of-extensions marker (QEMU always writes it). */
  omitEndMarker?: boolean | undefined;
}

export const EXT = {
  backingFormat: 0xe2792aca,
  featureTable: 0x6803f857,
  bitmaps: 0x23852875,
  cryptoHeader: 0x0537be77,
  dataFile: 0x44415441,
} as const;

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

export function l1EntriesFor(virtualSize: bigint, clusterBits: number, extendedL2 = false): number {
  const shift = BigInt(clusterBits + clusterBits - (extendedL2 ? 4 : 3));
  return Number((virtualSize + (1n << shift) - 1n) >> shift);
}

/** A clean version 3 image header, 64 KiB clusters, 1 MiB, laid out like `qemu-img create -f qcow2`. */
export function baseSpec(overrides: Partial<HeaderSpec> = {}): HeaderSpec {
  const clusterBits = overrides.clusterBits ?? 16;
  const c = 1n << BigInt(clusterBits);
  return {
    version: 3,
    clusterBits,
    virtualSize: 1n << 20n,
    cryptMethod: 0,
    l1TableOffset: 3n * c,
    refcountTableOffset: c,
    refcountTableClusters: 1,
    nbSnapshots: 0,
    snapshotsOffset: 0n,
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: 112,
    compressionType: 0,
    extensions: [],
    ...overrides,
  };
}

/** A layer as Roamdesk expects one: version 3, backing format qcow2, backing name `parent`. */
export function layerSpec(parent: string, overrides: Partial<HeaderSpec> = {}): HeaderSpec {
  return baseSpec({ backingFormat: 'qcow2', backingName: parent, ...overrides });
}

/** Encodes a feature name table (48-byte entries). */
export function featureTable(entries: readonly { kind: 0 | 1 | 2; bit: number; name: string }[]): Uint8Array {
  const out = new Uint8Array(entries.length * 48);
  entries.forEach((e, i) => {
    out[i * 48] = e.kind;
    out[i * 48 + 1] = e.bit;
    out.set(utf8(e.name).subarray(0, 46), i * 48 + 2);
  });
  return out;
}

/** Encodes a full disk encryption header pointer (offset, length). */
export function cryptoHeaderExt(offset: bigint, length: bigint): Uint8Array {
  const out = new Uint8Array(16);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, offset);
  v.setBigUint64(8, length);
  return out;
}

/** Serialises `spec` into the image's leading bytes (at least 512, as a caller would read). */
export function writeHeader(spec: HeaderSpec): Uint8Array {
  const headerLength = spec.version === 2 ? 72 : spec.headerLength;
  const exts: ExtensionSpec[] = [];
  if (spec.backingFormat !== undefined) exts.push({ type: EXT.backingFormat, data: utf8(spec.backingFormat) });
  if (spec.dataFile !== undefined) exts.push({ type: EXT.dataFile, data: utf8(spec.dataFile) });
  exts.push(...spec.extensions);

  let size = headerLength;
  for (const e of exts) size += 8 + Math.ceil(e.data.length / 8) * 8;
  if (spec.omitEndMarker !== true) size += 8;
  const backing = typeof spec.backingName === 'string' ? utf8(spec.backingName) : spec.backingName;
  const backingOffset = backing === undefined ? 0 : size;
  if (backing !== undefined) size += backing.length;

  const buf = new Uint8Array(Math.max(size, 512));
  const v = new DataView(buf.buffer);
  buf.set([0x51, 0x46, 0x49, 0xfb], 0);
  v.setUint32(4, spec.version);
  v.setBigUint64(8, BigInt(backingOffset));
  v.setUint32(16, backing?.length ?? 0);
  v.setUint32(20, spec.clusterBits);
  v.setBigUint64(24, spec.virtualSize);
  v.setUint32(32, spec.cryptMethod);
  const extendedL2 = (spec.incompatibleFeatures & (1n << 4n)) !== 0n;
  v.setUint32(36, spec.l1Size ?? l1EntriesFor(spec.virtualSize, spec.clusterBits, extendedL2));
  v.setBigUint64(40, spec.l1TableOffset);
  v.setBigUint64(48, spec.refcountTableOffset);
  v.setUint32(56, spec.refcountTableClusters);
  v.setUint32(60, spec.nbSnapshots);
  v.setBigUint64(64, spec.snapshotsOffset);
  if (spec.version === 3) {
    v.setBigUint64(72, spec.incompatibleFeatures);
    v.setBigUint64(80, spec.compatibleFeatures);
    v.setBigUint64(88, spec.autoclearFeatures);
    v.setUint32(96, spec.refcountOrder);
    v.setUint32(100, headerLength);
    if (headerLength > 104) buf[104] = spec.compressionType;
  }
  let off = headerLength;
  for (const e of exts) {
    v.setUint32(off, e.type);
    v.setUint32(off + 4, e.data.length);
    buf.set(e.data, off + 8);
    off += 8 + Math.ceil(e.data.length / 8) * 8;
  }
  if (spec.omitEndMarker !== true) off += 8; // type 0, length 0: already zero
  if (backing !== undefined) buf.set(backing, backingOffset);
  return buf;
}
