/**
 * What downloads and uploads share: the tuning knobs, the per-transfer state (connection, progress, the
 * compression decision, buffers, counters), the loop over objects (bottom first) and the final report.
 */
import type { Store } from '@roamdesk/store';

import { CompressionController, type CompressionMode } from './adaptive.ts';
import { BufferPools } from './frames.ts';
import { connect, type Connection, type Remote } from './http.ts';
import { ProgressTracker, type TransferProgressCallback } from './progress.ts';
import type { ObjectDescription } from './protocol.ts';
import type { ObjectReport, TransferReport } from './report.ts';
import { StreamConnections } from './stream-client.ts';

/**
 * Two requests of 32 MiB in flight: measured on 2 cores (notes/performance.md machine), four in flight were
 * slower — receiver and sender compete for the same cores; two keep the pipe full while one batch is parsed.
 */
export const DEFAULT_IN_FLIGHT = 2;
export const DEFAULT_BATCH_BYTES = 32 * 1024 * 1024;
export const DEFAULT_MAX_ATTEMPTS = 5;

export interface TransferTuning {
  /** Requests in flight (default 2). */
  readonly inFlight?: number;
  /** Bytes per request (default 32 MiB; rounded to whole pieces). */
  readonly batchBytes?: number;
  readonly pieceSize?: number;
  /** Attempts per piece before the transfer fails (default 5). */
  readonly maxAttempts?: number;
  readonly compression?: CompressionMode;
  /** Uploads: send pieces on an upgraded connection the server reads straight from its socket (default true). */
  readonly upgrade?: boolean;
}

export interface TransferOptions extends TransferTuning {
  readonly store: Store;
  readonly remote: Remote;
  /** Bottom (image) first: a layer is published (or accepted by the server) only after its parent. */
  readonly objects: readonly ObjectDescription[];
  readonly signal?: AbortSignal;
  readonly onProgress?: TransferProgressCallback;
}

export interface TransferRun<O extends TransferOptions> {
  readonly opts: O;
  readonly conn: Connection;
  readonly progress: ProgressTracker;
  readonly controller: CompressionController;
  readonly signal: AbortSignal;
  readonly pools: BufferPools;
  /** Kept-alive connections that read piece streams straight from the socket (downloads). */
  readonly streams: StreamConnections;
  piecesRetried: number;
  bytesTransferred: number;
  /** Uploads: false once an upgraded PUT came back not switched (a proxy dropped the header): plain PUTs. */
  upgradePieces: boolean;
  /** Uploads: a batch went over an upgraded connection. */
  sentUpgraded: boolean;
}

export async function runTransfer<O extends TransferOptions>(
  direction: 'download' | 'upload', opts: O, one: (run: TransferRun<O>, desc: ObjectDescription) => Promise<ObjectReport>,
): Promise<TransferReport> {
  const t0 = performance.now();
  const conn = connect(opts.remote, opts.inFlight ?? DEFAULT_IN_FLIGHT);
  const total = opts.objects.reduce((n, o) => n + o.size, 0);
  const run: TransferRun<O> = {
    opts, conn,
    progress: new ProgressTracker(direction, total, opts.objects.length, opts.onProgress),
    controller: new CompressionController(opts.compression ?? 'auto'),
    signal: opts.signal ?? new AbortController().signal,
    pools: new BufferPools(),
    streams: new StreamConnections(opts.remote),
    piecesRetried: 0,
    bytesTransferred: 0,
    upgradePieces: opts.upgrade ?? true,
    sentUpgraded: false,
  };
  const reports: ObjectReport[] = [];
  try {
    for (const [i, desc] of opts.objects.entries()) {
      run.progress.objectIndex = i;
      run.progress.objectId = desc.id;
      reports.push(await one(run, desc));
    }
  } finally {
    conn.agent.destroy();
    run.streams.closeAll();
  }
  run.progress.phase = 'done';
  run.progress.emit(true);
  return {
    direction, objects: reports, bytesTotal: total, bytesTransferred: run.bytesTransferred,
    bytesOnWire: run.progress.bytesOnWire, bytesSaved: run.progress.bytesSaved, piecesRetried: run.piecesRetried,
    seconds: (performance.now() - t0) / 1000, compression: run.controller.compress, compressionReason: run.controller.reason,
    upgraded: run.sentUpgraded,
  };
}
