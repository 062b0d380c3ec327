/**
 * Downloads objects (an image and its layers, bottom first) from a Roamdesk server into a local store,
 * moving only what is missing:
 *   1. objects the store already holds are skipped, and a layer the server derived from two objects the store
 *      holds (a compacted chain, a new image version: ObjectDescription.derivedFrom) is computed here instead;
 *   2. an interrupted earlier attempt's verified pieces are kept (re-hashed from disk first: partial-object.ts);
 *   3. seed folders fill what they can (every piece verified);
 *   4. the rest comes in batches of contiguous pieces, several requests in flight on kept-alive connections,
 *      each piece checked against its BLAKE3 hash before it counts; a bad or missing piece is fetched again;
 *   5. the whole file's SHA-256 (computed from disk in a worker as the verified prefix grows) must equal the
 *      id; then the store adopts the file (header policy, fsync, atomic no-clobber publish).
 * Nothing appears under an object's name before step 5 succeeds.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';

import { backoff, BatchQueue, planBatches, type Batch } from './batches.ts';
import { PieceCodec } from './codec.ts';
import { abortedError, TransferError } from './errors.ts';
import { forEachPiece } from './file-reader.ts';
import { type BufferPool, type Frame, FrameAssembler, FRAME_HEADER_BYTES } from './frames.ts';
import { isRetryable, sendJson } from './http.ts';
import { DEFAULT_PIECE_SIZE, type Manifest, parseManifest, pieceRange } from './manifest.ts';
import { ObjectHasher } from './object-hasher.ts';
import { acquireLock } from './lock.ts';
import { PartialObject, streamPiecesInto } from './partial-object.ts';
import { type ObjectDescription, objectPath, PIECES_CONTENT_TYPE, piecesQuery } from './protocol.ts';
import type { ObjectReport, TransferReport } from './report.ts';
import { DEFAULT_BATCH_BYTES, DEFAULT_IN_FLIGHT, DEFAULT_MAX_ATTEMPTS, runTransfer, type TransferOptions, type TransferRun } from './run.ts';
import { findSeedFiles } from './seeds.ts';

export interface DownloadOptions extends TransferOptions {
  readonly seeds?: readonly string[];
  /**
   * Benchmark only: write pieces unchecked, skip the whole-object hash, and DISCARD the result instead of
   * publishing it. Measures what verification costs (notes/performance.md, R6); never use it to fetch data.
   */
  readonly benchmarkWithoutVerification?: boolean;
  /** Compute layers the server derived from objects held here instead of downloading them (default true). */
  readonly derive?: boolean;
}

/**
 * Pieces per request while the compression controller is still measuring: with whole 32 MiB batches in flight
 * a switch of encoding took effect 64 MiB late, and a trial that lost cost that much more.
 */
const MEASURING_BATCH_BYTES = 8 * 1024 * 1024;

/** Decoded pieces being written per request while the next ones arrive. */
const WRITES_AHEAD = 3;

type Run = TransferRun<DownloadOptions>;

export async function downloadObjects(opts: DownloadOptions): Promise<TransferReport> {
  return runTransfer('download', opts, downloadOne);
}

async function downloadOne(run: Run, desc: ObjectDescription): Promise<ObjectReport> {
  const { store } = run.opts;
  const p = run.progress;
  if (await store.has(desc.id)) {
    p.bytesDone += desc.size;
    p.bytesSaved += desc.size;
    p.emit();
    return { id: desc.id, kind: desc.kind, size: desc.size, action: 'present', piecesTotal: 0, piecesSent: 0, piecesResumed: 0, piecesSeeded: 0 };
  }
  if (await derive(run, desc)) {
    p.bytesDone += desc.size;
    p.bytesSaved += desc.size;
    p.emit();
    return { id: desc.id, kind: desc.kind, size: desc.size, action: 'derived', piecesTotal: 0, piecesSent: 0, piecesResumed: 0, piecesSeeded: 0 };
  }
  p.phase = 'planning';
  p.emit(true);
  const pieceSize = run.opts.pieceSize ?? DEFAULT_PIECE_SIZE;
  const manifest = parseManifest(
    await sendJson<unknown>(run.conn, { method: 'GET', path: `${objectPath(desc.id)}/manifest?pieceSize=${pieceSize}`, signal: run.signal }),
    { id: desc.id, kind: desc.kind, parent: desc.parent, size: desc.size },
  );
  p.phase = 'resuming';
  p.emit(true);
  const lock = await acquireLock(join(store.incomingDir, `dl-${desc.id}.lock`), `object ${desc.id}`);
  try {
    return await receive(run, desc, manifest);
  } finally {
    await lock.release();
  }
}

/**
 * Computes a layer the server derived (Store.importDifference of desc.parent and desc.derivedFrom) when this
 * store holds both: local disk reads instead of the network. It counts only if the result hashes to the id
 * (the store publishes nothing otherwise); any failure leaves the object to be downloaded.
 */
async function derive(run: Run, desc: ObjectDescription): Promise<boolean> {
  const { store } = run.opts;
  const from = desc.derivedFrom;
  if (from === undefined || desc.parent === null || run.opts.derive === false || run.opts.benchmarkWithoutVerification === true) return false;
  if (!(await store.has(desc.parent)) || !(await store.has(from))) return false;
  run.progress.phase = 'deriving';
  run.progress.emit(true);
  try {
    const r = await store.importDifference(desc.parent, from, { expectedId: desc.id, signal: run.signal });
    return r?.id === desc.id;
  } catch {
    if (run.signal.aborted) throw abortedError(run.signal);
    // Another QEMU version may lay the same difference out otherwise (HashMismatch): download it.
    return false;
  }
}

async function receive(run: Run, desc: ObjectDescription, manifest: Manifest): Promise<ObjectReport> {
  const { store } = run.opts;
  const p = run.progress;
  const partial = await PartialObject.open(join(store.incomingDir, `dl-${desc.id}`), manifest);
  const unverified = run.opts.benchmarkWithoutVerification === true;
  const hasher = unverified ? null : new ObjectHasher(partial.path);
  let published = false;
  try {
    const resumed = partial.verifiedBytes;
    p.bytesDone += resumed;
    p.bytesSaved += resumed;
    const piecesResumed = partial.verifiedPieces;
    hasher?.advance(partial.verifiedPrefixBytes);

    const piecesSeeded = await fillFromSeeds(run, partial, hasher);
    const before = partial.verifiedPieces;
    if (!partial.complete) {
      p.phase = 'transferring';
      await fetchMissing(run, manifest, partial, hasher);
    }
    const piecesSent = partial.verifiedPieces - before;
    if (hasher === null) {
      await partial.finish();
      await partial.discard();
      return { id: desc.id, kind: desc.kind, size: desc.size, action: 'transferred', piecesTotal: manifest.pieces.length, piecesSent, piecesResumed, piecesSeeded };
    }

    p.phase = 'verifying';
    p.emit(true);
    const digest = await hasher.digest(manifest.size);
    if (digest !== manifest.id) {
      // Every piece matched the manifest, yet the whole does not match the id: the manifest lied. Nothing kept.
      await partial.discard();
      throw new TransferError('XFER_ERR_OBJECT_HASH', `object ${manifest.id}: the received bytes hash to ${digest}; the server's manifest does not describe this object`, { id: manifest.id, actual: digest });
    }
    p.phase = 'publishing';
    p.emit(true);
    const path = await partial.finish();
    // The bytes equal an object the server's store checked when it took it in: its id proves it.
    await store.adopt(path, { id: manifest.id, kind: manifest.kind, parent: manifest.parent }, { hashVerified: true, checkedBySource: true });
    published = true;
    await partial.discard();
    return { id: desc.id, kind: desc.kind, size: desc.size, action: 'transferred', piecesTotal: manifest.pieces.length, piecesSent, piecesResumed, piecesSeeded };
  } finally {
    if (!published) {
      await hasher?.cancel();
      await partial.close();
    }
  }
}

async function fillFromSeeds(run: Run, partial: PartialObject, hasher: ObjectHasher | null): Promise<number> {
  const seeds = run.opts.seeds ?? [];
  if (seeds.length === 0 || partial.complete) return 0;
  const p = run.progress;
  p.phase = 'seeding';
  p.emit(true);
  let seeded = 0;
  for (const file of await findSeedFiles(seeds, partial.manifest)) {
    const missing = partial.missing();
    if (missing.length === 0) break;
    const fh = await open(file, 'r');
    try {
      await forEachPiece(fh, partial.manifest, missing, async (i, data) => {
        try {
          if (await partial.accept(i, data)) {
            seeded++;
            p.bytesDone += data.length;
            p.bytesSaved += data.length;
            hasher?.advance(partial.verifiedPrefixBytes);
            p.emit();
          }
        } catch (e) {
          if (!(e instanceof TransferError && e.code === 'XFER_ERR_PIECE_HASH')) throw e;
        }
      }, { signal: run.signal });
    } finally {
      await fh.close();
    }
  }
  return seeded;
}

async function fetchMissing(run: Run, m: Manifest, partial: PartialObject, hasher: ObjectHasher | null): Promise<void> {
  const maxPieces = Math.max(1, Math.floor((run.opts.batchBytes ?? DEFAULT_BATCH_BYTES) / m.pieceSize));
  const measuringPieces = Math.min(maxPieces, Math.max(1, Math.floor(MEASURING_BATCH_BYTES / m.pieceSize)));
  const queue = new BatchQueue(planBatches(partial.missing(), maxPieces), maxPieces, run.opts.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);
  const inFlight = run.opts.inFlight ?? DEFAULT_IN_FLIGHT;
  const pool = run.pools.pool(m.pieceSize);
  const internal = new AbortController();
  const onAbort = (): void => internal.abort(run.signal.reason);
  run.signal.addEventListener('abort', onAbort, { once: true });
  const worker = async (): Promise<void> => {
    const codec = new PieceCodec();
    const nextBatch = (): Promise<Batch | null> => queue.next(run.controller.measuring ? measuringPieces : maxPieces);
    for (let b = await nextBatch(); b !== null; b = await nextBatch()) {
      const unfinished = new Set(Array.from({ length: b.count }, (_, k) => b.first + k));
      let error: unknown = null;
      try {
        await fetchBatch(run, m, b, partial, hasher, unfinished, { pool, codec, signal: internal.signal });
      } catch (e) {
        error = e;
      }
      const worst = queue.settle([...unfinished]);
      if (error === null) continue;
      if (run.signal.aborted) {
        queue.fail(abortedError(run.signal));
      } else if (!isRetryable(error) || worst >= queue.maxAttempts) {
        queue.fail(error);
        internal.abort(error);
      } else {
        run.piecesRetried += unfinished.size;
        await backoff(worst, internal.signal);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: inFlight }, worker));
  } finally {
    run.signal.removeEventListener('abort', onAbort);
  }
  if (queue.failure !== null) throw queue.failure;
  if (!partial.complete) throw new TransferError('XFER_ERR_PROTOCOL', `the server did not send ${partial.missing().length} pieces`);
}

async function fetchBatch(
  run: Run, m: Manifest, b: Batch, partial: PartialObject, hasher: ObjectHasher | null, unfinished: Set<number>,
  w: { pool: BufferPool; codec: PieceCodec; signal: AbortSignal },
): Promise<void> {
  const p = run.progress;
  const encoding = run.controller.compress ? 'zstd' : 'raw';
  const conn = run.streams.take();
  // Frames are recorded under the request's encoding: a piece that zstd could not shrink travels raw inside a
  // compressed request, and belongs to that request's measurement.
  const compressed = encoding === 'zstd';
  /** A piece of this batch counts (fresh: it was not held before). */
  const verified = (index: number, bytes: number, fresh: boolean): void => {
    unfinished.delete(index);
    if (fresh) {
      run.bytesTransferred += bytes;
      p.bytesDone += bytes;
      hasher?.advance(partial.verifiedPrefixBytes);
    }
    p.emit();
  };
  // Uncompressed pieces (the usual case on a fast link) go straight from the socket's read buffer to the file.
  const direct = streamPiecesInto(partial, {
    verify: hasher !== null,
    check: (h) => {
      if (!unfinished.has(h.index)) {
        throw new TransferError('XFER_ERR_PROTOCOL', `the server sent piece ${h.index}, which was not asked for in this batch`, { index: h.index });
      }
      if (h.rawLength !== pieceRange(m, h.index).length) {
        throw new TransferError('XFER_ERR_PIECE_HASH', `piece ${h.index} has the wrong length`, { index: h.index });
      }
      p.bytesOnWire += FRAME_HEADER_BYTES;
    },
    onBytes: (view) => {
      p.bytesOnWire += view.length;
      run.controller.sample(view);
    },
    onPiece: (h, fresh) => {
      run.controller.record(h.rawLength, compressed);
      p.compression = run.controller.compress;
      verified(h.index, h.rawLength, fresh);
    },
  });
  // Compressed pieces arrive whole in a pooled buffer, are decoded into another, then checked and written while
  // the next ones arrive; reading pauses while WRITES_AHEAD writes are pending and resumes as they finish.
  const writes = new Set<Promise<void>>();
  const onFrame = (frame: Frame): void => {
    const out = w.pool.take();
    let raw: Buffer;
    try {
      p.bytesOnWire += frame.payloadLength;
      raw = w.codec.decode(frame.encoding, frame.payload, frame.rawLength, out);
      run.controller.sample(raw);
      run.controller.record(raw.length, compressed);
      p.compression = run.controller.compress;
      if (raw.length !== pieceRange(m, frame.index).length) {
        throw new TransferError('XFER_ERR_PIECE_HASH', `piece ${frame.index} has the wrong length`, { index: frame.index });
      }
    } catch (e) {
      w.pool.give(out);
      throw e;
    } finally {
      frame.release();
    }
    const write: Promise<void> = partial.accept(frame.index, raw, { unverified: hasher === null }).then((fresh) => {
      verified(frame.index, raw.length, fresh);
    }).finally(() => {
      w.pool.give(out);
      writes.delete(write);
      if (writes.size <= WRITES_AHEAD) conn.resume();
    });
    // A refused piece (hash) or a failed write ends this request; its unfinished pieces are asked again.
    write.catch((e: unknown) => conn.abandon(e));
    writes.add(write);
  };
  const assembler = new FrameAssembler(w.pool, onFrame, direct);
  try {
    await conn.get({
      path: `${objectPath(m.id)}/pieces?${piecesQuery(b.first, b.count, m.pieceSize, encoding)}`,
      accept: PIECES_CONTENT_TYPE,
      signal: w.signal,
      onBody: (chunk) => {
        assembler.push(chunk);
        return writes.size <= WRITES_AHEAD;
      },
    });
    assembler.end();
    await Promise.all(writes);
  } catch (e) {
    assembler.dispose();
    await Promise.allSettled(writes);
    if (e instanceof TransferError) throw e;
    throw new TransferError('XFER_ERR_NETWORK', `the piece stream broke: ${(e as Error).message}`, { first: b.first, count: b.count }, { cause: e });
  } finally {
    run.streams.give(conn);
  }
  if (unfinished.size > 0) throw new TransferError('XFER_ERR_PROTOCOL', `the piece stream ended with ${unfinished.size} pieces of the batch missing`);
}
