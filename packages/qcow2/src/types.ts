// The parsed form of a qcow2 header. Field names follow docs/interop/qcow2.txt ("Header"), camel-cased.

export type ImageFormat = 'qcow2' | 'raw';

/** One header extension as found in the file ("Header extensions"), in file order. */
export interface Qcow2Extension {
  type: number;
  /** Length of the extension data, without the padding to 8 bytes. */
  length: number;
  /** Byte offset of the extension's 8-byte type/length prefix in the file. */
  offset: number;
}

/** One entry of the feature name table extension (0x6803f857): informational names for feature bits. */
export interface Qcow2FeatureName {
  kind: 'incompatible' | 'compatible' | 'autoclear';
  bit: number;
  name: string;
}

export interface Qcow2Header {
  version: 2 | 3;
  clusterBits: number;
  clusterSize: number;
  virtualSize: bigint;
  cryptMethod: number;
  encryption: 'none' | 'aes' | 'luks';
  l1Size: number;
  l1TableOffset: bigint;
  refcountTableOffset: bigint;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: bigint;
  /** All zero for version 2, which has no feature fields. */
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  /** Incompatible bit 0. */
  dirty: boolean;
  /** Incompatible bit 1. */
  corrupt: boolean;
  /** Incompatible bit 2. The data file's name, if recorded, is `dataFile`. */
  hasExternalDataFile: boolean;
  /** Incompatible bit 4. */
  extendedL2: boolean;
  /** Incompatible bits this package does not know (5–63). A conforming reader must refuse the image. */
  unknownIncompatibleFeatures: bigint;
  /** Compatible bit 0. */
  lazyRefcounts: boolean;
  /** 4 (16-bit refcounts) for version 2. */
  refcountOrder: number;
  /** 72 for version 2. */
  headerLength: number;
  compressionType: 'zlib' | 'zstd';
  /** `name` from backing_file_offset/size; `format` from extension 0xe2792aca, null when absent. */
  backing: { name: string; format: string | null } | null;
  /** External data file name, extension 0x44415441. */
  dataFile: string | null;
  /** Full disk encryption header pointer, extension 0x0537be77 (LUKS only). */
  cryptoHeader: { offset: bigint; length: bigint } | null;
  /** Feature name table, extension 0x6803f857 (empty when absent). */
  featureNames: readonly Qcow2FeatureName[];
  /** Every header extension seen, in order, without the end marker. */
  extensions: readonly Qcow2Extension[];
}

export interface ParseOptions {
  /** Size of the whole file. Enables the checks that the tables the header points to lie inside it. */
  fileSize?: number | bigint;
}

export interface LayerPolicy {
  maxVirtualSize: bigint;
  maxL1Entries: number;
  maxRefcountTableClusters: number;
  allowSnapshots: boolean;
  /** When set, the virtual size must equal it exactly (a layer has the size of the chain it extends). */
  expectedVirtualSize?: bigint;
  /** Accept LUKS-encrypted files (the device-side encrypted copy). Legacy AES is never accepted. Default false. */
  allowLuks?: boolean;
}
