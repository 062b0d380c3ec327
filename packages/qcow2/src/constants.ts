// Numbers from docs/interop/qcow2.txt and QEMU's block/qcow2.h. Each says where it comes from.

/** "QFI\xfb" (Header, bytes 0-3). */
export const QCOW2_MAGIC = 0x514649fb;

/** cluster_bits: "Must not be less than 9"; QEMU's implementation limit is 2 MiB clusters (MAX_CLUSTER_BITS). */
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;

/** Largest number of leading bytes the parser can ever need: the header, its extensions and the backing
 *  file name all live in the first cluster (Header: "The first cluster of a qcow2 image contains the file header"). */
export const QCOW2_MAX_HEADER_BYTES = 2 ** MAX_CLUSTER_BITS;

/** Header: "For version 2, the header is exactly 72 bytes"; version 3: "at least 104 bytes". */
export const V2_HEADER_LENGTH = 72;
export const V3_MIN_HEADER_LENGTH = 104;
/** "Additional fields": compression_type is the byte at 104, present only when header_length > 104. */
export const COMPRESSION_TYPE_OFFSET = 104;

/** refcount_order: "This value may not exceed 6"; version 2 "is always assumed to be 4". */
export const MAX_REFCOUNT_ORDER = 6;
export const V2_REFCOUNT_ORDER = 4;

/** backing_file_size: "Must not be longer than 1023 bytes". */
export const MAX_BACKING_NAME_LENGTH = 1023;

/** incompatible_features bits (Header, bytes 72-79). */
export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
/** Bits 5-63 are "Reserved (set to 0)": a reader "must fail to open an image if an unknown bit is set". */
export const INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/** compatible_features bit 0. */
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;

/** crypt_method values. */
export const CRYPT_NONE = 0;
export const CRYPT_AES = 1;
export const CRYPT_LUKS = 2;

/** Header extension types ("Header extensions"). */
export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO_HEADER = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

/** Feature name table: each entry is 48 bytes (type, bit, 46-byte name). */
export const FEATURE_TABLE_ENTRY = 48;
/** Bitmaps extension: fixed 24 bytes (QEMU rejects any other length). */
export const BITMAPS_EXT_LENGTH = 24;
/** Full disk encryption header pointer: offset (8) + length (8). */
export const CRYPTO_HEADER_EXT_LENGTH = 16;
/** QEMU stores the backing format name in a 16-byte buffer and rejects a longer extension. */
export const MAX_BACKING_FORMAT_LENGTH = 15;

/** Each L1 entry is 8 bytes ("Cluster mapping"); each standard L2 entry 8 bytes, extended 16. */
export const L1_ENTRY_SIZE = 8;

/** "Snapshots": each snapshot table entry has a fixed part of 40 bytes, so n snapshots need >= 40·n bytes. */
export const SNAPSHOT_ENTRY_MIN_SIZE = 40;
/** QEMU's QCOW_MAX_SNAPSHOTS. */
export const MAX_SNAPSHOTS = 65536;

/** QEMU's QCOW_MAX_L1_SIZE (32 MiB of L1 entries) and QCOW_MAX_REFTABLE_SIZE (8 MiB): QEMU refuses to open
 *  images beyond these, and they bound how much memory a crafted header can make QEMU allocate (CVE-2014-0145). */
export const QEMU_MAX_L1_ENTRIES = (32 * 1024 * 1024) / L1_ENTRY_SIZE;
export const QEMU_MAX_REFTABLE_BYTES = 8 * 1024 * 1024;

/** Largest file offset a table may reach (QEMU's qcow2_validate_table: offset + size <= INT64_MAX). */
export const MAX_FILE_OFFSET = (1n << 63n) - 1n;
