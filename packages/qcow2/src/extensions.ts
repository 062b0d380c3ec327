// Walks the header extension area (docs/interop/qcow2.txt, "Header extensions") and decodes the extensions
// this package understands. Structural rules enforced here, each from the spec or QEMU's qcow2_read_extensions():
//  - the area starts right after the header (header_length; 72 for version 2) and ends where the backing
//    file name starts, or at the end of the first cluster when there is none;
//  - each extension is type (4), length (4), data, padding to a multiple of 8, all inside the area;
//  - the area ends with an extension of type 0 (QEMU always writes it; we require it, so a header that
//    runs into the backing name or off the cluster is refused rather than guessed at);
//  - "each header extension type shall appear at most once".

import {
  BITMAPS_EXT_LENGTH, CRYPT_LUKS, CRYPTO_HEADER_EXT_LENGTH, EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_CRYPTO_HEADER,
  EXT_DATA_FILE, EXT_END, EXT_FEATURE_TABLE, FEATURE_TABLE_ENTRY, MAX_BACKING_FORMAT_LENGTH,
} from './constants.ts';
import { BadHeaderExtensionError } from './errors.ts';
import { alignUp8, type HeaderReader } from './reader.ts';
import { decodeStrictUtf8 } from './text.ts';
import type { Qcow2Extension, Qcow2FeatureName } from './types.ts';

export interface ExtensionArea {
  extensions: Qcow2Extension[];
  backingFormat: string | null;
  dataFile: string | null;
  cryptoHeader: { offset: bigint; length: bigint } | null;
  featureNames: Qcow2FeatureName[];
}

const FEATURE_KINDS = ['incompatible', 'compatible', 'autoclear'] as const;

export function readExtensions(
  r: HeaderReader, start: number, end: number, clusterSize: number, cryptMethod: number,
): ExtensionArea {
  const area: ExtensionArea = { extensions: [], backingFormat: null, dataFile: null, cryptoHeader: null, featureNames: [] };
  const seen = new Set<number>();
  let off = start;
  // Terminates: every pass advances `off` by at least 8 and `end` is at most one cluster (2 MiB).
  for (;;) {
    if (off + 8 > end) throw new BadHeaderExtensionError({ type: EXT_END, offset: off, end }, 'no-end-marker');
    r.need(off + 8, 'header extensions');
    const type = r.u32(off);
    const length = r.u32(off + 4);
    if (type === EXT_END) break;
    const dataOff = off + 8;
    const next = dataOff + alignUp8(length);
    if (next > end) throw new BadHeaderExtensionError({ type, offset: off, length, end }, 'too-long');
    if (seen.has(type)) throw new BadHeaderExtensionError({ type, offset: off, length }, 'duplicate');
    seen.add(type);
    r.need(dataOff + length, 'header extensions');
    const data = r.slice(dataOff, length);
    area.extensions.push({ type, length, offset: off });
    switch (type) {
      case EXT_BACKING_FORMAT:
        area.backingFormat = readName(data, type, off, MAX_BACKING_FORMAT_LENGTH);
        break;
      case EXT_DATA_FILE:
        area.dataFile = readName(data, type, off, Number.MAX_SAFE_INTEGER);
        break;
      case EXT_CRYPTO_HEADER:
        area.cryptoHeader = readCryptoHeader(r, dataOff, length, off, clusterSize, cryptMethod);
        break;
      case EXT_FEATURE_TABLE:
        area.featureNames = readFeatureTable(data, off);
        break;
      case EXT_BITMAPS:
        // Only the length is checked: bitmaps are an autoclear feature, safe to ignore, and QEMU rejects other lengths.
        if (length !== BITMAPS_EXT_LENGTH) throw new BadHeaderExtensionError({ type, offset: off, length }, 'bad-length');
        break;
      default:
        // "other - Unknown header extension, can be safely ignored"
        break;
    }
    off = next;
  }
  // "The full disk encryption header must be present if, and only if, the 'crypt_method' header requires metadata."
  if (cryptMethod === CRYPT_LUKS && area.cryptoHeader === null) {
    throw new BadHeaderExtensionError({ type: EXT_CRYPTO_HEADER, offset: start }, 'luks-without-header');
  }
  return area;
}

/** "String header extensions": the length is the string length, not NUL-terminated. */
function readName(data: Uint8Array, type: number, offset: number, maxLength: number): string {
  if (data.length > maxLength) throw new BadHeaderExtensionError({ type, offset, length: data.length }, 'bad-length');
  const s = decodeStrictUtf8(data);
  if (s === null || s === '' || s.includes('\0')) {
    throw new BadHeaderExtensionError({ type, offset, length: data.length }, 'bad-string');
  }
  return s;
}

function readCryptoHeader(
  r: HeaderReader, dataOff: number, length: number, offset: number, clusterSize: number, cryptMethod: number,
): { offset: bigint; length: bigint } {
  const type = EXT_CRYPTO_HEADER;
  if (cryptMethod !== CRYPT_LUKS) throw new BadHeaderExtensionError({ type, offset, length }, 'without-luks');
  if (length !== CRYPTO_HEADER_EXT_LENGTH) throw new BadHeaderExtensionError({ type, offset, length }, 'bad-length');
  const hdrOffset = r.u64(dataOff);
  // "Offset into the image file at which the encryption header starts in bytes. Must be aligned to a cluster boundary."
  if (hdrOffset % BigInt(clusterSize) !== 0n) throw new BadHeaderExtensionError({ type, offset, length }, 'unaligned-offset');
  return { offset: hdrOffset, length: r.u64(dataOff + 8) };
}

/** "Feature name table": 48-byte entries of type (0 incompatible, 1 compatible, 2 autoclear), bit, name.
 *  The names are informational (used in messages), so entries with an unknown type are skipped. */
function readFeatureTable(data: Uint8Array, offset: number): Qcow2FeatureName[] {
  if (data.length % FEATURE_TABLE_ENTRY !== 0) {
    throw new BadHeaderExtensionError({ type: EXT_FEATURE_TABLE, offset, length: data.length }, 'bad-length');
  }
  const names: Qcow2FeatureName[] = [];
  const decoder = new TextDecoder('utf-8', { fatal: false });
  for (let i = 0; i < data.length; i += FEATURE_TABLE_ENTRY) {
    const kind = FEATURE_KINDS[data[i] ?? 255];
    const bit = data[i + 1] ?? 255;
    if (kind === undefined || bit > 63) continue;
    const raw = data.subarray(i + 2, i + FEATURE_TABLE_ENTRY);
    const nul = raw.indexOf(0);
    names.push({ kind, bit, name: decoder.decode(nul === -1 ? raw : raw.subarray(0, nul)) });
  }
  return names;
}
