/**
 * Uploads objects from a local store to a Roamdesk server (replicate, check-in, publishing). The server
 * holds the upload's state: which pieces it has verified. The client asks, sends only what is missing,
 * several batches in flight, and never decides on its own that a piece arrived. The server re-hashes and
 * checks the finished object before it exists there (store.adopt).
 */
import { open } from 'node:fs/promises';

import { backoff, BatchQueue, planBatches } from './batches.ts';
import { abortedError } from './errors.ts';
import { isRetryable, send, sendJson } from './http.ts';
import { DEFAULT_PIECE_SIZE, type Manifest, pieceRange } from './manifest.ts';
import { computeManifest, type ManifestCache } from './manifest-source.ts';
import { fromRanges, type ObjectDescription, PIECES_CONTENT_TYPE, type UploadState } from './protocol.ts';
import type { ObjectReport, TransferReport } from './report.ts';
import { DEFAULT_BATCH_BYTES, DEFAULT_IN_FLIGHT, DEFAULT_MAX_ATTEMPTS, runTransfer, type TransferOptions, type TransferRun } from './run.ts';
import { sendPieces } from './sender.ts';
import { putUpgraded } from './upgraded-sender.ts';

export interface UploadOptions extends TransferOptions {
  readonly manifests?: ManifestCache;
}

type Run = TransferRun<UploadOptions>;

export async function uploadObjects(opts: UploadOptions): Promise<TransferReport> {
  return runTransfer('upload', opts, uploadOne);
}

async function uploadOne(run: Run, desc: ObjectDescription): Promise<ObjectReport> {
  const { store } = run.opts;
  const p = run.progress;
  p.phase = 'planning';
  p.emit(true);
  const path = store.objectPath(desc.id);
  const pieceSize = run.opts.pieceSize ?? DEFAULT_PIECE_SIZE;
  const manifest = run.opts.manifests !== undefined
    ? await run.opts.manifests.get(path, desc, pieceSize)
    : await computeManifest(path, desc, pieceSize, run.signal);
  const state = await sendJson<UploadState>(run.conn, { method: 'POST', path: '/uploads', json: { manifest }, signal: run.signal });
  if (state.uploadId === null || state.complete) {
    p.bytesDone += desc.size;
    p.bytesSaved += desc.size;
    p.emit();
    if (state.uploadId !== null) await complete(run, state.uploadId);
    return { id: desc.id, kind: desc.kind, size: desc.size, action: 'present', piecesTotal: manifest.pieces.length, piecesSent: 0, piecesResumed: manifest.pieces.length, piecesSeeded: 0 };
  }
  const uploadId = state.uploadId;
  const missing = fromRanges(state.missing);
  const resumedPieces = manifest.pieces.length - missing.length;
  const resumedBytes = desc.size - missing.reduce((n, i) => n + pieceRange(manifest, i).length, 0);
  p.bytesDone += resumedBytes;
  p.bytesSaved += resumedBytes;
  p.phase = 'transferring';
  p.emit(true);

  const fh = await open(path, 'r');
  try {
    await sendMissing(run, manifest, uploadId, missing, fh);
  } finally {
    await fh.close();
  }
  p.phase = 'verifying';
  p.emit(true);
  await complete(run, uploadId);
  return {
    id: desc.id, kind: desc.kind, size: desc.size, action: 'transferred', piecesTotal: manifest.pieces.length,
    piecesSent: missing.length, piecesResumed: resumedPieces, piecesSeeded: 0,
  };
}

async function complete(run: Run, uploadId: string): Promise<void> {
  await sendJson<unknown>(run.conn, { method: 'POST', path: `/uploads/${uploadId}/complete`, json: {}, signal: run.signal });
}

async function sendMissing(
  run: Run, m: Manifest, uploadId: string, missing: number[], fh: Awaited<ReturnType<typeof open>>,
): Promise<void> {
  const maxPieces = Math.max(1, Math.floor((run.opts.batchBytes ?? DEFAULT_BATCH_BYTES) / m.pieceSize));
  const queue = new BatchQueue(planBatches(missing, maxPieces), maxPieces, run.opts.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);
  const p = run.progress;
  let retrying = false;
  /**
   * Pieces counted in the progress: each once, whichever news comes first — the server's interim count while a
   * batch streams, its answer, or (after a failed attempt) its state showing pieces that arrived after all.
   * Progress would otherwise end short of the total, or pass it.
   */
  const counted = new Set<number>();
  const count = (pieces: Iterable<number>): void => {
    let bytes = 0;
    for (const i of pieces) {
      if (counted.has(i)) continue;
      counted.add(i);
      bytes += pieceRange(m, i).length;
    }
    if (bytes === 0) return;
    run.bytesTransferred += bytes;
    p.bytesDone += bytes;
    p.emit();
  };
  const worker = async (): Promise<void> => {
    for (let b = await queue.next(); b !== null; b = await queue.next()) {
      let indices = Array.from({ length: b.count }, (_, k) => b.first + k);
      let error: unknown = null;
      try {
        if (retrying) {
          // After a failure, ask the server what it really holds: nothing verified is sent twice. Pieces of this
          // batch that reached it after all (an attempt that failed after they were verified, or bytes of a
          // connection given up on that still arrived) are done.
          const s = await sendJson<UploadState>(run.conn, { method: 'GET', path: `/uploads/${uploadId}`, signal: run.signal });
          const still = new Set(fromRanges(s.missing));
          count(indices.filter((i) => !still.has(i)));
          indices = indices.filter((i) => still.has(i));
        }
        if (indices.length > 0) {
          const compress = run.controller.compress;
          p.compression = compress;
          const body = async (write: (...chunks: Buffer[]) => Promise<void>): Promise<void> => {
            await sendPieces(fh, m, indices, compress, async (header, payload) => {
              // Samples for the compression decision come from the pieces as they go (uncompressed then).
              if (!compress) run.controller.sample(payload);
              p.bytesOnWire += header.length + payload.length;
              await write(header, payload);
            }, run.pools, run.signal);
          };
          const path = `/uploads/${uploadId}/pieces`;
          // The server takes a stream's pieces in the order they were sent (sendPieces keeps it).
          const sending = indices;
          const onPiecesReceived = (n: number): void => count(sending.slice(0, n));
          const switched = run.upgradePieces ? await putUpgraded(run.conn, { path, signal: run.signal, body, onPiecesReceived }) : null;
          if (switched !== null) run.sentUpgraded = true;
          else {
            run.upgradePieces = false;
            const res = await send(run.conn, { method: 'PUT', path, headers: { 'content-type': PIECES_CONTENT_TYPE }, signal: run.signal, body });
            await drain(res);
          }
          run.controller.record(indices.reduce((n, i) => n + pieceRange(m, i).length, 0), compress);
          count(indices);
        }
        queue.settle([]);
      } catch (e) {
        error = e;
        const worst = queue.settle(indices);
        if (run.signal.aborted) queue.fail(abortedError(run.signal));
        else if (!isRetryable(error) || worst >= queue.maxAttempts) queue.fail(error);
        else {
          retrying = true;
          run.piecesRetried += indices.length;
          await backoff(worst, run.signal);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: run.opts.inFlight ?? DEFAULT_IN_FLIGHT }, worker));
  if (queue.failure !== null) throw queue.failure;
  // Every batch was answered 2xx, i.e. verified piece by piece; completing checks again on the server's own
  // state (a piece it lacks is refused there, with the count), so no extra round trip asks first.
}

/** Reads the answer to its end, so the kept-alive connection can carry the next request. */
async function drain(res: AsyncIterable<Buffer>): Promise<void> {
  for await (const _ of res) {
    // the state it carries is asked for again when it matters (retry, final check)
  }
}
