/**
 * The sending half of downloads, for the server: describe an object, give its manifest (computed once and
 * cached), and stream a contiguous range of its pieces. Authorization is the caller's job (the server's
 * routes decide who may read which object); everything from the request is validated here.
 */
import { open } from 'node:fs/promises';

import type { ObjectInfo, Store } from '@roamdesk/store';

import { TransferError } from './errors.ts';
import { BufferPools } from './frames.ts';
import { DEFAULT_PIECE_SIZE, isValidPieceSize, type Manifest } from './manifest.ts';
import type { ManifestCache } from './manifest-source.ts';
import type { WireEncoding } from './protocol.ts';
import { sendPieces, type SendStats } from './sender.ts';

export interface PiecesRequest {
  readonly first: number;
  readonly count: number;
  readonly pieceSize: number;
  readonly encoding: WireEncoding;
}

/**
 * Piece streams served at once; more wait their turn holding only their socket. Each stream holds
 * READ_AHEAD pieces of buffers, so this bounds the server's transfer memory whatever the number of clients
 * (and the object sizes never mattered: pieces stream through reused buffers).
 */
const MAX_CONCURRENT_STREAMS = 8;

export class ObjectServer {
  readonly #pools = new BufferPools();
  readonly #slots = new Semaphore(MAX_CONCURRENT_STREAMS);
  constructor(private readonly store: Store, private readonly manifests: ManifestCache) {}

  async manifest(info: ObjectInfo, pieceSize = DEFAULT_PIECE_SIZE): Promise<Manifest> {
    if (!isValidPieceSize(pieceSize)) throw new TransferError('XFER_ERR_MANIFEST', `pieceSize ${String(pieceSize)} is not a power of two between 64 KiB and 16 MiB`, { pieceSize });
    return this.manifests.get(this.store.objectPath(info.id), info, pieceSize);
  }

  /** Streams the requested pieces; `write` resolves once a frame is handed to the socket. */
  async pieces(info: ObjectInfo, req: PiecesRequest, write: (header: Buffer, payload: Buffer) => Promise<void>, signal?: AbortSignal): Promise<SendStats> {
    const m = await this.manifest(info, req.pieceSize);
    const n = m.pieces.length;
    if (!Number.isSafeInteger(req.first) || !Number.isSafeInteger(req.count) || req.first < 0 || req.count < 1 || req.first + req.count > n) {
      throw new TransferError('XFER_ERR_MANIFEST', `pieces ${req.first}…${req.first + req.count - 1} are outside 0…${n - 1}`, { first: req.first, count: req.count, pieces: n });
    }
    const release = await this.#slots.acquire();
    try {
      const fh = await open(this.store.objectPath(info.id), 'r');
      try {
        const indices = Array.from({ length: req.count }, (_, k) => req.first + k);
        return await sendPieces(fh, m, indices, req.encoding === 'zstd', write, this.#pools, signal);
      } finally {
        await fh.close();
      }
    } finally {
      release();
    }
  }
}

/** A counting semaphore: `acquire` resolves with a release function once a slot is free (FIFO). */
class Semaphore {
  #free: number;
  readonly #waiting: Array<() => void> = [];
  constructor(slots: number) {
    this.#free = slots;
  }
  async acquire(): Promise<() => void> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiting.shift();
      if (next !== undefined) next();
      else this.#free++;
    };
  }
}
