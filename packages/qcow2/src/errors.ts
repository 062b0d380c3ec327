// Every failure this package reports, one class per failure a caller can act on.
//
// Qcow2Error                                 (abstract base: code, message, data)
// ├── UnsupportedImageFormatError            QCOW2_ERR_UNSUPPORTED_IMAGE_FORMAT   detectImageFormat: a known format we do not take
// ├── Qcow2TruncatedError                    QCOW2_ERR_TRUNCATED                  the buffer is too short: read data.needed bytes and retry
// ├── Qcow2HeaderError                       (abstract: the bytes are not a qcow2 header QEMU could open; thrown by parseQcow2Header)
// │   ├── BadMagicError                      QCOW2_ERR_BAD_MAGIC
// │   ├── UnsupportedVersionError            QCOW2_ERR_UNSUPPORTED_VERSION        version is neither 2 nor 3
// │   ├── FileTruncatedError                 QCOW2_ERR_FILE_TRUNCATED             the header reaches past the end of the file
// │   ├── BadHeaderLengthError               QCOW2_ERR_BAD_HEADER_LENGTH
// │   ├── BadClusterBitsError                QCOW2_ERR_BAD_CLUSTER_BITS
// │   ├── BadRefcountOrderError              QCOW2_ERR_BAD_REFCOUNT_ORDER
// │   ├── BadCryptMethodError                QCOW2_ERR_BAD_CRYPT_METHOD
// │   ├── BadCompressionTypeError            QCOW2_ERR_BAD_COMPRESSION_TYPE
// │   ├── BadOffsetError                     QCOW2_ERR_BAD_OFFSET                 unaligned, overlapping the header, or outside the file
// │   ├── NoRefcountTableError               QCOW2_ERR_NO_REFCOUNT_TABLE
// │   ├── L1TableTooSmallError               QCOW2_ERR_L1_TABLE_TOO_SMALL
// │   ├── TooManySnapshotsError              QCOW2_ERR_TOO_MANY_SNAPSHOTS
// │   ├── BackingNameTooLongError            QCOW2_ERR_BACKING_NAME_TOO_LONG
// │   ├── BackingNameInvalidError            QCOW2_ERR_BACKING_NAME_INVALID       empty, not UTF-8, or contains NUL
// │   └── BadHeaderExtensionError            QCOW2_ERR_BAD_HEADER_EXTENSION
// └── Qcow2PolicyError                       (abstract: a well-formed header our policy refuses; thrown by checkUntrustedLayer/checkImageHeader)
//     ├── VersionNotAllowedError             QCOW2_ERR_VERSION_NOT_ALLOWED        e.g. a version 2 layer
//     ├── CorruptImageError                  QCOW2_ERR_CORRUPT_IMAGE
//     ├── DirtyImageError                    QCOW2_ERR_DIRTY_IMAGE
//     ├── UnknownIncompatibleFeatureError    QCOW2_ERR_UNKNOWN_INCOMPATIBLE_FEATURE
//     ├── ExternalDataFileError              QCOW2_ERR_EXTERNAL_DATA_FILE
//     ├── EncryptedError                     QCOW2_ERR_ENCRYPTED
//     ├── VirtualSizeTooLargeError           QCOW2_ERR_VIRTUAL_SIZE_TOO_LARGE
//     ├── VirtualSizeMismatchError           QCOW2_ERR_VIRTUAL_SIZE_MISMATCH
//     ├── L1TableTooLargeError               QCOW2_ERR_L1_TABLE_TOO_LARGE
//     ├── RefcountTableTooLargeError         QCOW2_ERR_REFCOUNT_TABLE_TOO_LARGE
//     ├── SnapshotsPresentError              QCOW2_ERR_SNAPSHOTS_PRESENT
//     ├── BackingMissingError                QCOW2_ERR_BACKING_MISSING
//     ├── BackingFormatNotQcow2Error         QCOW2_ERR_BACKING_FORMAT_NOT_QCOW2
//     │   └── BackingFormatMissingError      QCOW2_ERR_BACKING_FORMAT_MISSING
//     ├── BackingNameMismatchError           QCOW2_ERR_BACKING_NAME_MISMATCH
//     └── UnexpectedBackingError             QCOW2_ERR_UNEXPECTED_BACKING         an image (bottom of a chain) names a backing file
//
// `code` is stable and is what callers (the api/ error catalog) switch on; messages may be reworded.
// `data` is JSON-safe so the server can send it as is: 64-bit quantities are decimal strings, never bigint.
// Untrusted strings (backing names …) appear raw in `data` and escaped by quote() in the message.

import { hex32, quote } from './text.ts';

export type Qcow2ErrorData = Readonly<Record<string, unknown>>;

export abstract class Qcow2Error extends Error {
  readonly code: string;
  readonly data: Qcow2ErrorData;

  protected constructor(code: string, message: string, data: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.data = Object.freeze({ ...data });
  }

  /** The shape the server and CLI report: `{ name, code, message, data }`. */
  toJSON(): { name: string; code: string; message: string; data: Qcow2ErrorData } {
    return { name: this.name, code: this.code, message: this.message, data: this.data };
  }
}

/** The bytes are not a qcow2 header that QEMU could open (spec or QEMU open-time check violated). */
export abstract class Qcow2HeaderError extends Qcow2Error {}

/** The header is well-formed, but the policy for this kind of file refuses it. */
export abstract class Qcow2PolicyError extends Qcow2Error {}

type Opts = ErrorOptions | undefined;

// ---- format detection -------------------------------------------------------------------------------

export class UnsupportedImageFormatError extends Qcow2Error {
  constructor(format: string, description: string, options?: Opts) {
    super('QCOW2_ERR_UNSUPPORTED_IMAGE_FORMAT',
      `the disk image is in ${description} format, which is not supported: convert it to qcow2 or raw first`,
      { format }, options);
  }
}

// ---- short input ------------------------------------------------------------------------------------

export class Qcow2TruncatedError extends Qcow2Error {
  /** `needed`: read at least this many leading bytes and parse again (QCOW2_MAX_HEADER_BYTES always suffices). */
  constructor(data: { needed: number; have: number; what: string }, options?: Opts) {
    super('QCOW2_ERR_TRUNCATED',
      `only ${data.have} bytes of the image were given but reading its ${data.what} needs the first ${data.needed} bytes`,
      data, options);
  }
}

// ---- malformed headers ------------------------------------------------------------------------------

export class BadMagicError extends Qcow2HeaderError {
  constructor(found: string, options?: Opts) {
    super('QCOW2_ERR_BAD_MAGIC', `the file is not a qcow2 image: it starts with bytes ${found || '(none)'} instead of 'QFI\\xfb'`,
      { found, expected: '51 46 49 fb' }, options);
  }
}

export class UnsupportedVersionError extends Qcow2HeaderError {
  constructor(version: number, options?: Opts) {
    const hint = version === 1 ? ' (version 1 is the old qcow format; convert it with qemu-img convert -O qcow2)' : '';
    super('QCOW2_ERR_UNSUPPORTED_VERSION', `the image is qcow2 version ${version}, but only versions 2 and 3 exist${hint}`,
      { version, supported: [2, 3] }, options);
  }
}

export class FileTruncatedError extends Qcow2HeaderError {
  constructor(data: { needed: number; fileSize: string; what: string }, options?: Opts) {
    super('QCOW2_ERR_FILE_TRUNCATED',
      `the image file is truncated: it is ${data.fileSize} bytes long but its ${data.what} needs the first ${data.needed} bytes`,
      data, options);
  }
}

export class BadHeaderLengthError extends Qcow2HeaderError {
  constructor(headerLength: number, clusterSize: number, options?: Opts) {
    super('QCOW2_ERR_BAD_HEADER_LENGTH',
      `the image header declares a length of ${headerLength} bytes, but a version 3 header must be at least 104 bytes, `
      + `a multiple of 8 and fit in the first cluster (${clusterSize} bytes)`,
      { headerLength, clusterSize }, options);
  }
}

export class BadClusterBitsError extends Qcow2HeaderError {
  constructor(clusterBits: number, reason: 'range' | 'extended-l2', options?: Opts) {
    const why = reason === 'range'
      ? 'it must be between 9 and 21 (512 bytes to 2 MiB clusters)'
      : 'images with extended L2 entries need at least 14 (16 KiB clusters)';
    super('QCOW2_ERR_BAD_CLUSTER_BITS', `the image's cluster_bits is ${clusterBits}, but ${why}`,
      { clusterBits, reason }, options);
  }
}

export class BadRefcountOrderError extends Qcow2HeaderError {
  constructor(refcountOrder: number, options?: Opts) {
    super('QCOW2_ERR_BAD_REFCOUNT_ORDER',
      `the image's refcount_order is ${refcountOrder}, but it may not exceed 6 (64-bit reference counts)`,
      { refcountOrder, max: 6 }, options);
  }
}

export class BadCryptMethodError extends Qcow2HeaderError {
  constructor(cryptMethod: number, options?: Opts) {
    super('QCOW2_ERR_BAD_CRYPT_METHOD',
      `the image declares encryption method ${cryptMethod}, which does not exist (0 none, 1 AES, 2 LUKS)`,
      { cryptMethod }, options);
  }
}

export class BadCompressionTypeError extends Qcow2HeaderError {
  constructor(data: { compressionType: number; compressionBit: boolean }, reason: 'unknown' | 'bit-mismatch', options?: Opts) {
    const msg = reason === 'unknown'
      ? `the image declares compression type ${data.compressionType}, which is unknown (0 zlib, 1 zstd)`
      : `the image's compression type (${data.compressionType}) disagrees with its compression-type feature bit `
        + `(${data.compressionBit ? 'set' : 'clear'}): the bit must be set exactly when the type is not zlib`;
    super('QCOW2_ERR_BAD_COMPRESSION_TYPE', msg, { ...data, reason }, options);
  }
}

export type Qcow2Table = 'l1' | 'refcount' | 'snapshots' | 'backing-name' | 'encryption-header';
const TABLE_NAMES: Record<Qcow2Table, string> = {
  'l1': 'L1 table',
  'refcount': 'refcount table',
  'snapshots': 'snapshot table',
  'backing-name': 'backing file name',
  'encryption-header': 'encryption header',
};

export class BadOffsetError extends Qcow2HeaderError {
  constructor(
    data: { table: Qcow2Table; offset: string; end?: string; fileSize?: string; clusterSize?: number },
    reason: 'unaligned' | 'overlaps-header' | 'outside-file' | 'outside-first-cluster' | 'too-large',
    options?: Opts,
  ) {
    const what = TABLE_NAMES[data.table];
    const msg = {
      'unaligned': `the image's ${what} starts at byte ${data.offset}, which is not a multiple of the cluster size (${data.clusterSize ?? '?'})`,
      'overlaps-header': `the image's ${what} at byte ${data.offset} overlaps the image header`,
      'outside-file': `the image's ${what} (bytes ${data.offset} to ${data.end ?? '?'}) lies beyond the end of the file `
        + `(${data.fileSize ?? '?'} bytes): the file is truncated or its header is corrupt`,
      'outside-first-cluster': `the image's ${what} (bytes ${data.offset} to ${data.end ?? '?'}) does not fit in the first cluster `
        + `(${data.clusterSize ?? '?'} bytes)`,
      'too-large': `the image's ${what} at byte ${data.offset} ends beyond the largest possible file offset (2^63 - 1)`,
    }[reason];
    super('QCOW2_ERR_BAD_OFFSET', msg, { ...data, reason }, options);
  }
}

export class NoRefcountTableError extends Qcow2HeaderError {
  constructor(options?: Opts) {
    super('QCOW2_ERR_NO_REFCOUNT_TABLE', 'the image has no refcount table (refcount_table_clusters is 0)', {}, options);
  }
}

export class L1TableTooSmallError extends Qcow2HeaderError {
  constructor(data: { l1Size: number; needed: string; virtualSize: string }, options?: Opts) {
    super('QCOW2_ERR_L1_TABLE_TOO_SMALL',
      `the image's L1 table has ${data.l1Size} entries but a virtual size of ${data.virtualSize} bytes needs ${data.needed}`,
      data, options);
  }
}

export class TooManySnapshotsError extends Qcow2HeaderError {
  constructor(nbSnapshots: number, max: number, options?: Opts) {
    super('QCOW2_ERR_TOO_MANY_SNAPSHOTS', `the image claims ${nbSnapshots} internal snapshots; at most ${max} are possible`,
      { nbSnapshots, max }, options);
  }
}

export class BackingNameTooLongError extends Qcow2HeaderError {
  constructor(length: number, options?: Opts) {
    super('QCOW2_ERR_BACKING_NAME_TOO_LONG', `the image's backing file name is ${length} bytes long; at most 1023 are allowed`,
      { length, max: 1023 }, options);
  }
}

export class BackingNameInvalidError extends Qcow2HeaderError {
  constructor(reason: 'empty' | 'not-utf8' | 'nul', options?: Opts) {
    const why = { 'empty': 'is empty', 'not-utf8': 'is not valid UTF-8', 'nul': 'contains a NUL character' }[reason];
    super('QCOW2_ERR_BACKING_NAME_INVALID', `the image's backing file name ${why}`, { reason }, options);
  }
}

export type ExtensionProblem =
  | 'no-end-marker' | 'too-long' | 'duplicate' | 'bad-length' | 'bad-string' | 'unaligned-offset'
  | 'without-luks' | 'luks-without-header';

export class BadHeaderExtensionError extends Qcow2HeaderError {
  constructor(data: { type: number; offset: number; length?: number; end?: number }, reason: ExtensionProblem, options?: Opts) {
    const t = hex32(data.type);
    const msg = {
      'no-end-marker': `the image's header extensions run to byte ${data.end ?? '?'} without an end-of-extensions marker`,
      'too-long': `the image's header extension ${t} at byte ${data.offset} (${data.length ?? '?'} bytes) runs past the end of `
        + `the header extension area (byte ${data.end ?? '?'})`,
      'duplicate': `the image has header extension ${t} more than once (at byte ${data.offset})`,
      'bad-length': `the image's header extension ${t} at byte ${data.offset} has an invalid length (${data.length ?? '?'} bytes)`,
      'bad-string': `the image's header extension ${t} at byte ${data.offset} is not a valid name (empty, not UTF-8, or contains NUL)`,
      'unaligned-offset': `the image's encryption header pointer (extension ${t}) is not aligned to a cluster`,
      'without-luks': `the image has an encryption header pointer (extension ${t}) but is not LUKS-encrypted`,
      'luks-without-header': 'the image is LUKS-encrypted but has no encryption header pointer extension (0x0537be77)',
    }[reason];
    super('QCOW2_ERR_BAD_HEADER_EXTENSION', msg, { ...data, typeHex: t, reason }, options);
  }
}

// ---- policy -----------------------------------------------------------------------------------------

/** `subject` is how messages name the file: "layer" (from a device) or "image" (being imported). */
export type Subject = 'layer' | 'image';

export class VersionNotAllowedError extends Qcow2PolicyError {
  constructor(subject: Subject, version: number, allowed: readonly number[], options?: Opts) {
    const compat = version === 2 ? ' (compat=0.10)' : '';
    super('QCOW2_ERR_VERSION_NOT_ALLOWED',
      `${subject} is qcow2 version ${version}${compat} but must be version ${allowed.join(' or ')}`,
      { subject, version, allowed: [...allowed] }, options);
  }
}

export class CorruptImageError extends Qcow2PolicyError {
  constructor(subject: Subject, options?: Opts) {
    super('QCOW2_ERR_CORRUPT_IMAGE', `${subject} is marked corrupt by QEMU and must not be used`, { subject }, options);
  }
}

export class DirtyImageError extends Qcow2PolicyError {
  constructor(subject: Subject, options?: Opts) {
    super('QCOW2_ERR_DIRTY_IMAGE',
      `${subject} is marked dirty (it was not closed cleanly, its reference counts may be wrong): `
      + 'repair it with qemu-img check -r all before sending it', { subject }, options);
  }
}

export class UnknownIncompatibleFeatureError extends Qcow2PolicyError {
  constructor(subject: Subject, bits: readonly number[], names: readonly string[], options?: Opts) {
    const named = bits.map((b, i) => (names[i] ? `${b} (${quote(names[i])})` : String(b))).join(', ');
    super('QCOW2_ERR_UNKNOWN_INCOMPATIBLE_FEATURE',
      `${subject} uses incompatible qcow2 feature bit${bits.length === 1 ? '' : 's'} ${named} that this software does not know`,
      { subject, bits: [...bits], names: [...names] }, options);
  }
}

export class ExternalDataFileError extends Qcow2PolicyError {
  constructor(subject: Subject, dataFile: string | null, options?: Opts) {
    const where = dataFile === null ? '' : ` named ${quote(dataFile)}`;
    super('QCOW2_ERR_EXTERNAL_DATA_FILE',
      `${subject} keeps its data in an external data file${where}; only self-contained qcow2 files are accepted`,
      { subject, dataFile }, options);
  }
}

export class EncryptedError extends Qcow2PolicyError {
  constructor(subject: Subject, encryption: 'aes' | 'luks', options?: Opts) {
    const what = encryption === 'aes' ? 'legacy AES encryption (insecure)' : 'LUKS encryption';
    super('QCOW2_ERR_ENCRYPTED', `${subject} uses ${what}, which is not allowed here`, { subject, encryption }, options);
  }
}

export class VirtualSizeTooLargeError extends Qcow2PolicyError {
  constructor(subject: Subject, virtualSize: bigint, max: bigint, options?: Opts) {
    super('QCOW2_ERR_VIRTUAL_SIZE_TOO_LARGE',
      `${subject}'s virtual disk size is ${virtualSize} bytes, more than the allowed ${max}`,
      { subject, virtualSize: String(virtualSize), max: String(max) }, options);
  }
}

export class VirtualSizeMismatchError extends Qcow2PolicyError {
  constructor(subject: Subject, virtualSize: bigint, expected: bigint, options?: Opts) {
    super('QCOW2_ERR_VIRTUAL_SIZE_MISMATCH',
      `${subject}'s virtual disk size is ${virtualSize} bytes but must be exactly ${expected} (the size of its chain)`,
      { subject, virtualSize: String(virtualSize), expected: String(expected) }, options);
  }
}

export class L1TableTooLargeError extends Qcow2PolicyError {
  constructor(subject: Subject, l1Size: number, max: number, options?: Opts) {
    super('QCOW2_ERR_L1_TABLE_TOO_LARGE', `${subject}'s L1 table has ${l1Size} entries, more than the allowed ${max}`,
      { subject, l1Size, max }, options);
  }
}

export class RefcountTableTooLargeError extends Qcow2PolicyError {
  constructor(subject: Subject, data: { clusters: number; bytes: string; maxClusters: number; maxBytes: number }, options?: Opts) {
    super('QCOW2_ERR_REFCOUNT_TABLE_TOO_LARGE',
      `${subject}'s refcount table is ${data.clusters} clusters (${data.bytes} bytes); at most ${data.maxClusters} clusters `
      + `and ${data.maxBytes} bytes are allowed`,
      { subject, ...data }, options);
  }
}

export class SnapshotsPresentError extends Qcow2PolicyError {
  constructor(subject: Subject, nbSnapshots: number, options?: Opts) {
    super('QCOW2_ERR_SNAPSHOTS_PRESENT',
      `${subject} contains ${nbSnapshots} internal snapshot${nbSnapshots === 1 ? '' : 's'}, which are not allowed `
      + '(delete them with qemu-img snapshot -d)', { subject, nbSnapshots }, options);
  }
}

export class BackingMissingError extends Qcow2PolicyError {
  constructor(expected: string, options?: Opts) {
    super('QCOW2_ERR_BACKING_MISSING', `layer has no backing file but must name ${quote(expected)}`, { expected }, options);
  }
}

export class BackingFormatNotQcow2Error extends Qcow2PolicyError {
  constructor(format: string | null, options?: Opts, code = 'QCOW2_ERR_BACKING_FORMAT_NOT_QCOW2') {
    const msg = format === null
      ? "layer does not record its backing file's format, which must be 'qcow2' (QEMU would guess it by probing)"
      : `layer's backing file format is ${quote(format)} but must be 'qcow2'`;
    super(code, msg, { format }, options);
  }
}

/** A special case of a wrong backing format, so `instanceof BackingFormatNotQcow2Error` catches both. */
export class BackingFormatMissingError extends BackingFormatNotQcow2Error {
  constructor(options?: Opts) {
    super(null, options, 'QCOW2_ERR_BACKING_FORMAT_MISSING');
  }
}

export class BackingNameMismatchError extends Qcow2PolicyError {
  constructor(found: string, expected: string, options?: Opts) {
    super('QCOW2_ERR_BACKING_NAME_MISMATCH',
      `layer's backing file is ${quote(found)} but must be exactly ${quote(expected)}`, { found, expected }, options);
  }
}

export class UnexpectedBackingError extends Qcow2PolicyError {
  constructor(name: string, format: string | null, options?: Opts) {
    super('QCOW2_ERR_UNEXPECTED_BACKING',
      `image has a backing file (${quote(name)}); an image must be self-contained: flatten it with qemu-img convert first`,
      { name, format }, options);
  }
}
