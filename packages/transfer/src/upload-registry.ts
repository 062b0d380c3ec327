/**
 * The server half of uploads. State lives on the server, in the store's incoming/ directory (one
 * PartialObject per upload), so it survives restarts and is never taken on the client's word:
 *  - begin() validates the uploader's manifest (a promise about the bytes, bounded in size) and returns which
 *    pieces are still missing — after re-verifying whatever an earlier attempt left;
 *  - receive() checks every piece of a frame stream against that manifest before writing it;
 *  - complete() hands the file to the store, which re-hashes it (the id must match), checks the qcow2 header
 *    in TypeScript and runs `qemu-img check` under limits before publishing (store/adopt.ts).
 * An upload id is derived from (owner, object, piece size): a client that lost everything resumes by calling
 * begin() again, and another user can neither see nor feed it.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { ObjectInfo, Store } from '@roamdesk/store';

import { PieceCodec } from './codec.ts';
import { TransferError } from './errors.ts';
import { BufferPools, type Frame, FrameAssembler } from './frames.ts';
import { type Manifest, parseManifest } from './manifest.ts';
import { ObjectHasher, prewarmObjectHasher } from './object-hasher.ts';
import { PartialObject, streamPiecesInto } from './partial-object.ts';
import { toRanges, type UploadState } from './protocol.ts';

const UPLOAD_ID = /^[0-9a-f]{32}$/;
/** An upload's directory under incoming/ (see #dir). */
const UPLOAD_DIR = /^up-([0-9a-f]{32})$/;

export interface UploadLimits {
  /** The largest file accepted for this manifest (the caller knows the parent's virtual size). */
  readonly maxBytes: number;
  /** Uploads one owner may have in progress (each holds disk space until completed, abandoned or expired). */
  readonly maxOpenPerOwner?: number;
}

/** A frame stream's receiving end (UploadRegistry.sink). */
export interface PieceSink {
  /** Bytes of the stream (a view: copied or written before this returns). A promise: wait before pushing more. */
  push(chunk: Buffer): Promise<void> | undefined;
  /** END_FRAME went by (an upgraded stream's end): nothing more may follow. */
  readonly ended: boolean;
  /** Pieces of this stream taken so far: each verified and written, or found held already (a late duplicate). */
  readonly piecesReceived: number;
  /** The stream ended: a protocol error unless between frames; answers what the server now holds. */
  end(): UploadState;
  /** Gives back the buffers (always, after end or a failure). */
  dispose(): void;
}

/** An upload nobody touched for too long, removed by UploadRegistry.expire. */
export interface ExpiredUpload {
  readonly uploadId: string;
  readonly owner: string | null;
  /** Disk space it held. */
  readonly bytes: number;
  readonly lastActivity: string;
}

interface Open {
  readonly owner: string;
  readonly partial: PartialObject;
  /** Streams being received into it right now (expire() leaves it alone meanwhile). */
  receiving: number;
  /** The object's SHA-256, computed from the verified prefix on disk while pieces arrive (null: at complete). */
  hasher: ObjectHasher | null;
}

export class UploadRegistry {
  readonly #open = new Map<string, Promise<Open>>();
  /** Receive buffers reused across requests (fresh memory is slow to touch on these VMs). */
  readonly #pools = new BufferPools();

  constructor(private readonly store: Store) {}

  static uploadId(owner: string, m: Pick<Manifest, 'id' | 'pieceSize'>): string {
    return createHash('sha256').update(`${owner}\0${m.id}\0${m.pieceSize}`).digest('hex').slice(0, 32);
  }

  /**
   * Starts or resumes the upload of `manifestValue` (untrusted) by `owner`. An object the store holds is
   * answered "complete, nothing to send" only when `revealHeld` (the owner may read it anyway); otherwise the
   * upload goes on as for a missing object, so the answer tells nothing about what others stored.
   */
  async begin(owner: string, manifestValue: unknown, limits: UploadLimits, opts: { revealHeld: boolean } = { revealHeld: true }): Promise<UploadState> {
    const m = parseManifest(manifestValue);
    if (m.size > limits.maxBytes) {
      throw new TransferError('XFER_ERR_UPLOAD', `the object is ${m.size} bytes; at most ${limits.maxBytes} are accepted here`, { size: m.size, max: limits.maxBytes });
    }
    if (opts.revealHeld && (await this.store.has(m.id))) return { uploadId: null, id: m.id, complete: true, piecesTotal: m.pieces.length, piecesVerified: m.pieces.length, missing: [] };
    const uploadId = UploadRegistry.uploadId(owner, m);
    const dir = this.#dir(uploadId);
    if (limits.maxOpenPerOwner !== undefined) {
      const owned = await this.#owned(owner);
      if (!owned.has(uploadId) && owned.size >= limits.maxOpenPerOwner) {
        throw new TransferError('XFER_ERR_UPLOAD', `${owned.size} uploads of yours are in progress, the most allowed: finish or abandon one first (DELETE /uploads/:uploadId); unfinished uploads expire on their own`, { open: owned.size, max: limits.maxOpenPerOwner });
      }
    }
    const existing = this.#open.get(uploadId);
    if (existing !== undefined) {
      const o = await existing;
      if (o.partial.failed || JSON.stringify(o.partial.manifest) !== JSON.stringify(m)) {
        await this.#drop(uploadId, o);
      } else {
        return stateOf(uploadId, o.partial);
      }
    }
    // Pieces follow in the next request: a hashing worker can start meanwhile (only the first upload pays for it).
    prewarmObjectHasher();
    const opening = (async (): Promise<Open> => {
      const partial = await PartialObject.open(dir, m);
      await writeFile(join(dir, 'owner'), owner, { mode: 0o600 });
      return { owner, partial, hasher: null, receiving: 0 };
    })();
    this.#open.set(uploadId, opening);
    opening.catch(() => this.#open.delete(uploadId));
    return stateOf(uploadId, (await opening).partial);
  }

  async state(owner: string, uploadId: string): Promise<UploadState> {
    const o = await this.#get(owner, uploadId);
    return stateOf(uploadId, o.partial);
  }

  /**
   * Reads a frame stream; every piece is verified before it counts. Uncompressed pieces stream straight to the
   * file (hashed on the way, streamPiecesInto); compressed ones are decoded whole first.
   */
  async receive(owner: string, uploadId: string, body: AsyncIterable<Buffer>): Promise<UploadState> {
    const sink = await this.sink(owner, uploadId);
    try {
      for await (const chunk of body) await sink.push(chunk);
      return sink.end();
    } finally {
      sink.dispose();
    }
  }

  /**
   * The same as receive() for a caller that reads the stream itself (the server's upgraded connection, which
   * reads straight from the socket into one reused buffer): it pushes views and waits when push answers a
   * promise (a compressed piece being decoded and written).
   */
  async sink(owner: string, uploadId: string): Promise<PieceSink> {
    const o = await this.#get(owner, uploadId);
    const m = o.partial.manifest;
    const pool = this.#pools.pool(m.pieceSize);
    const codec = new PieceCodec();
    const whole: Frame[] = [];
    let received = 0;
    const assembler = new FrameAssembler(pool, (f) => whole.push(f), streamPiecesInto(o.partial, {
      onPiece: () => {
        received++;
        this.#hashAhead(o);
      },
    }));
    let decoded: Buffer | null = null;
    let disposed = false;
    o.receiving++;
    const drain = async (): Promise<void> => {
      for (let f = whole.shift(); f !== undefined; f = whole.shift()) {
        try {
          decoded ??= pool.take();
          if (await o.partial.accept(f.index, codec.decode(f.encoding, f.payload, f.rawLength, decoded))) this.#hashAhead(o);
          received++;
        } finally {
          f.release();
        }
      }
    };
    // A caller may dispose while a drain still decodes into `decoded` (its peer went away): the buffer goes back
    // to the pool only once that drain is over, or another upload could be handed it mid-write.
    let draining: Promise<void> | null = null;
    return {
      push(chunk) {
        assembler.push(chunk);
        if (whole.length === 0) return undefined;
        const d = drain().finally(() => { draining = null; });
        draining = d;
        return d;
      },
      get ended() {
        return assembler.ended;
      },
      get piecesReceived() {
        return received;
      },
      end() {
        assembler.end();
        return stateOf(uploadId, o.partial);
      },
      dispose() {
        if (!disposed) o.receiving--;
        disposed = true;
        assembler.dispose();
        for (const f of whole.splice(0)) f.release();
        const giveBack = (): void => {
          if (decoded !== null) pool.give(decoded);
          decoded = null;
        };
        if (draining === null) giveBack();
        else void draining.then(giveBack, giveBack);
      },
    };
  }

  /** Publishes the finished upload into the store (re-hashed and checked there). */
  async complete(owner: string, uploadId: string): Promise<ObjectInfo> {
    const o = await this.#get(owner, uploadId);
    const m = o.partial.manifest;
    if (!o.partial.complete) {
      throw new TransferError('XFER_ERR_UPLOAD', `${m.pieces.length - o.partial.verifiedPieces} of ${m.pieces.length} pieces are still missing`, { missing: toRanges(o.partial.missing()) });
    }
    this.#open.delete(uploadId);
    let path: string;
    try {
      path = await o.partial.finish();
    } catch (e) {
      await this.#releaseHasher(o, (h) => h.cancel());
      throw e;
    }
    // The digest of the bytes on disk, if a hasher followed the upload (a failed hasher only costs the re-hash).
    const hashed = o.hasher === null ? null : await this.#releaseHasher(o, (h) => h.digest(m.size)).catch(() => null);
    try {
      const held = await this.store.get(m.id);
      if (held !== null) {
        // Someone else stored it first (see begin): the upload proves possession only if the bytes are the object.
        const digest = hashed ?? (await sha256File(path));
        if (digest !== m.id) throw new TransferError('XFER_ERR_OBJECT_HASH', `the uploaded bytes hash to ${digest}, not ${m.id}`, { id: m.id, actual: digest });
        await o.partial.discard();
        return held;
      }
      const info = await this.store.adopt(path, { id: m.id, kind: m.kind, parent: m.parent }, { hashVerified: hashed === m.id });
      await o.partial.discard();
      return info;
    } catch (e) {
      // The bytes matched every piece hash yet failed the store's checks: the uploader lied or the object is
      // unacceptable. Nothing of it is kept; a retry starts clean.
      await o.partial.discard();
      throw e;
    }
  }

  async abandon(owner: string, uploadId: string): Promise<void> {
    await this.#drop(uploadId, await this.#get(owner, uploadId));
  }

  /** Forgets an upload and deletes what it received. */
  async #drop(uploadId: string, o: Open): Promise<void> {
    this.#open.delete(uploadId);
    await this.#releaseHasher(o, (h) => h.cancel());
    await o.partial.discard();
  }

  /**
   * Removes uploads whose files nobody changed since `cutoffMs` (epoch ms) and that are not receiving right now:
   * a device that went away mid-upload leaves its verified pieces on the server's disk, and nothing else would
   * ever delete them. A device that comes back later starts that object again from nothing.
   */
  async expire(cutoffMs: number): Promise<ExpiredUpload[]> {
    const out: ExpiredUpload[] = [];
    for (const uploadId of await this.#uploadIds()) {
      const dir = this.#dir(uploadId);
      let last = 0;
      let bytes = 0;
      for (const f of await readdir(dir).catch(() => [])) {
        const st = await stat(join(dir, f)).catch(() => null);
        if (st === null) continue;
        last = Math.max(last, st.mtimeMs);
        bytes += st.blocks * 512;
      }
      if (last >= cutoffMs) continue;
      const ownerFile = await readFile(join(dir, 'owner'), 'utf8').catch(() => null);
      const opening = this.#open.get(uploadId);
      const o = opening === undefined ? null : await opening.catch(() => null);
      // Checked and taken out of #open with no await in between: a request arriving later reopens from disk.
      if ((o !== null && o.receiving > 0) || this.#open.get(uploadId) !== opening) continue;
      this.#open.delete(uploadId);
      const owner = o?.owner ?? ownerFile;
      if (o !== null) {
        await this.#releaseHasher(o, (h) => h.cancel());
        await o.partial.discard();
      } else {
        await rm(dir, { recursive: true, force: true });
      }
      out.push({ uploadId, owner, bytes, lastActivity: new Date(last).toISOString() });
    }
    return out;
  }

  /** Closes open files (server shutdown); state stays on disk for the next start. */
  async close(): Promise<void> {
    const all = [...this.#open.values()];
    this.#open.clear();
    for (const p of all) await p.then(async (o) => { await this.#releaseHasher(o, (h) => h.cancel()); await o.partial.close(); }, () => undefined);
  }

  /** The uploads `owner` has in progress (open or only on disk). */
  async #owned(owner: string): Promise<Set<string>> {
    const ids = new Set<string>();
    for (const uploadId of await this.#uploadIds()) {
      if ((await readFile(join(this.#dir(uploadId), 'owner'), 'utf8').catch(() => null)) === owner) ids.add(uploadId);
    }
    return ids;
  }

  /** Every upload on disk (open or not), by its directory under incoming/. */
  async #uploadIds(): Promise<string[]> {
    const names = await readdir(this.store.incomingDir).catch(() => []);
    return names.flatMap((name) => UPLOAD_DIR.exec(name)?.[1] ?? []);
  }

  /**
   * Lets the upload's hasher read on up to the verified prefix. Every upload gets one: hashers share a pool of at
   * most a few worker threads (object-hasher.ts), so beginning many uploads cannot make the server start many.
   */
  #hashAhead(o: Open): void {
    o.hasher ??= new ObjectHasher(o.partial.path);
    o.hasher.advance(o.partial.verifiedPrefixBytes);
  }

  async #releaseHasher<T>(o: Open, f: (h: ObjectHasher) => Promise<T>): Promise<T | null> {
    const h = o.hasher;
    if (h === null) return null;
    o.hasher = null;
    return f(h);
  }

  #dir(uploadId: string): string {
    return join(this.store.incomingDir, `up-${uploadId}`);
  }

  async #get(owner: string, uploadId: string): Promise<Open> {
    const notFound = new TransferError('XFER_ERR_UPLOAD', `no upload ${uploadId.slice(0, 40)} of yours is in progress`, { uploadId: uploadId.slice(0, 40), notFound: true });
    if (!UPLOAD_ID.test(uploadId)) throw notFound;
    let opening = this.#open.get(uploadId);
    if (opening === undefined) {
      // After a server restart: reopen from disk (re-verifying the journal).
      const dir = this.#dir(uploadId);
      const owned = await readFile(join(dir, 'owner'), 'utf8').catch(() => null);
      const m = await PartialObject.readManifest(dir);
      if (owned !== owner || m === null) throw notFound;
      opening = PartialObject.open(dir, m).then((partial): Open => ({ owner, partial, hasher: null, receiving: 0 }));
      this.#open.set(uploadId, opening);
      opening.catch(() => this.#open.delete(uploadId));
    }
    const o = await opening;
    if (o.owner !== owner) throw notFound;
    if (o.partial.failed) {
      // A disk error on this server condemned what was received (reliability.md R7): it is discarded, and the
      // device starts the object again with POST /uploads.
      await this.#drop(uploadId, o);
      throw new TransferError('XFER_ERR_UPLOAD', `upload ${uploadId} was discarded after a disk error on the server; start it again`, { uploadId, notFound: true, discarded: true });
    }
    return o;
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function stateOf(uploadId: string, p: PartialObject): UploadState {
  return {
    uploadId, id: p.manifest.id, complete: p.complete, piecesTotal: p.manifest.pieces.length,
    piecesVerified: p.verifiedPieces, missing: toRanges(p.missing()),
  };
}
