// @roamdesk/transfer: moves images and layers between stores. See README.md.
export { TransferError, isTransferError, type TransferErrorCode } from './errors.ts';
export { type Manifest, parseManifest, pieceCount, pieceRange, DEFAULT_PIECE_SIZE, MAX_PIECE_SIZE, MIN_PIECE_SIZE } from './manifest.ts';
export { computeManifest, ManifestCache, type ObjectMeta } from './manifest-source.ts';
export { encodeFrameHeader, readFrames, BufferPool, FRAME_HEADER_BYTES, ENCODING_RAW, ENCODING_ZSTD, type Frame } from './frames.ts';
export { pieceHash } from './hash.ts';
export { PartialObject } from './partial-object.ts';
export { downloadDir, partialProgress, type PartialProgress } from './partial-progress.ts';
export { CompressionController, type CompressionMode } from './adaptive.ts';
export { downloadObjects, type DownloadOptions } from './download.ts';
export type { TransferOptions, TransferTuning } from './run.ts';
export { uploadObjects, type UploadOptions } from './upload.ts';
export { UploadRegistry, type UploadLimits } from './upload-registry.ts';
export { ObjectServer, type PiecesRequest } from './object-server.ts';
export { findSeedFiles } from './seeds.ts';
export { type Remote, writeChunks } from './http.ts';
export type { TransferProgress, TransferProgressCallback, TransferPhase } from './progress.ts';
export type { ObjectReport, TransferReport } from './report.ts';
export { PIECES_CONTENT_TYPE, fromRanges, toRanges, type ObjectDescription, type UploadState, type WireEncoding } from './protocol.ts';
