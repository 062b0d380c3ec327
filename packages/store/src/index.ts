// @roamdesk/store: content-addressed store of images and layers. See README.md.
export { Store, type StoreOptions } from './store.ts';
export { isObjectId, assertObjectId, type ObjectId } from './ids.ts';
export type { ObjectInfo, ObjectKind } from './sidecar.ts';
export type { Overlay } from './layout.ts';
export type { Progress, ProgressCallback } from './progress.ts';
export type { ImportImageOptions, ImportOptions } from './import.ts';
export type { DifferenceOptions } from './difference.ts';
export type { AdoptExpectation, AdoptOptions } from './adopt.ts';
export type { ExportOptions } from './export.ts';
export type { LiveSealResult, LiveVm } from './seal-live.ts';
export type { SealOptions } from './seal.ts';
export type { Sha256Offload } from './hash-copy.ts';
export type { VerifyOptions, VerifyProblem, VerifyProblemKind, VerifyReport } from './verify.ts';
export * from './errors.ts';
/** The qcow2 header of a file, parsed in TypeScript (no QEMU tool opens it). */
export { readHeader } from './header-io.ts';
/** Whether a qcow2 file maps guest clusters of its own (its L1/L2 tables, read in TypeScript). */
export { hasOwnClusters } from './allocation.ts';
/** Free bytes in the file system holding a directory (statfs; null when it cannot tell), and how messages write them. */
export { formatMB, freeSpace } from './durable.ts';
