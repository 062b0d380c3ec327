/** Types shared by the qemu-img wrapper's argument builders, output parsers and runner. */

/** Formats we ever name explicitly. We never let qemu-img probe (qemu-img(1): "-f fmt … if omitted, probed"). */
export type ImageFormat = 'qcow2' | 'raw';

/** A backing file reference, written into the new header exactly as given (relative names stay relative). */
export interface BackingRef {
  readonly name: string;
  readonly format: 'qcow2';
}

/** Resource limits applied with `prlimit` around qemu-img (nova runs `qemu-img info` under 1 GiB AS / 2 s CPU). */
export interface ResourceLimits {
  /** RLIMIT_AS in bytes. */
  readonly addressSpaceBytes: number;
  /** RLIMIT_CPU in whole seconds. */
  readonly cpuSeconds: number;
}

/** `qemu-img info --output=json`, the fields we use plus the raw object. */
export interface ImageInfo {
  readonly filename: string;
  readonly format: string;
  readonly virtualSize: number;
  readonly actualSize: number | null;
  readonly clusterSize: number | null;
  readonly dirty: boolean;
  readonly backingFilename: string | null;
  readonly fullBackingFilename: string | null;
  readonly backingFormat: string | null;
  /** qcow2 only: `format-specific.data.corrupt`. */
  readonly corrupt: boolean | null;
  /** qcow2 only: "0.10" (v2) or "1.1" (v3). */
  readonly compat: string | null;
  readonly raw: Readonly<Record<string, unknown>>;
}

/** `qemu-img check` outcome per qemu-img(1): 0 ok, 2 corrupted, 3 leaks only, 63 check unsupported by the format. */
export type CheckStatus = 'ok' | 'corrupted' | 'leaks' | 'unsupported';

export interface CheckReport {
  readonly checkErrors: number;
  readonly corruptions: number;
  readonly leaks: number;
  readonly corruptionsFixed: number;
  readonly leaksFixed: number;
  readonly totalClusters: number | null;
  readonly allocatedClusters: number | null;
  readonly imageEndOffset: number | null;
}

export interface CheckResult {
  readonly status: CheckStatus;
  readonly exitCode: 0 | 2 | 3 | 63;
  /** Null when qemu-img printed no JSON (exit 63). */
  readonly report: CheckReport | null;
  readonly stderrTail: string;
}

/** One extent of `qemu-img map --output=json`. `depth` 0 is the top image. `offset` is absent for unallocated/zero extents. */
export interface MapExtent {
  readonly start: number;
  readonly length: number;
  readonly depth: number;
  readonly present: boolean;
  readonly zero: boolean;
  readonly data: boolean;
  readonly offset: number | null;
}

/** `qemu-img measure --output=json`. */
export interface MeasureResult {
  readonly required: number;
  readonly fullyAllocated: number;
  readonly bitmaps: number | null;
}

/** Progress from `-p`: qemu-img prints "    (12.34/100%)\r". */
export interface ImgProgress {
  readonly percent: number;
}
