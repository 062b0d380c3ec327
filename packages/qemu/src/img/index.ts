// qemu-img wrapper: explicit formats, JSON output parsed into types, prlimit for untrusted inputs.
export * from './errors.ts';
export type * from './types.ts';
export { checkBackingName, imagePath, qcow2NoBackingSpec } from './args.ts';
export type {
  CheckArgs, CommitArgs, CompareArgs, ConvertArgs, CreateOptions, InfoArgs, MapArgs, MeasureArgs, RebaseArgs,
} from './args.ts';
export { createProgressParser } from './parse.ts';
export {
  DEFAULT_METADATA_TIMEOUT_MS, DEFAULT_UNTRUSTED_LIMITS, DEFAULT_UNTRUSTED_TIMEOUT_MS, QemuImg,
  type CallOptions, type ProgressOptions, type QemuImgOptions,
} from './qemu-img.ts';
