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
import type { ObjectDescription, WireEncoding } from './protocol.ts';
import { sendPieces, type SendStats } from './sender.ts';

export interface PiecesRequest {
  readonly first: number;
  readonly count: number;
  readonly pieceSize: number;
  readonly encoding: WireEncoding;
}

export class ObjectServer {
  readonly #pools = new BufferPools();
  constructor(private readonly store: Store, private readonly manifests: ManifestCache) {}

  describe(info: ObjectInfo): ObjectDescription {
    return { id: info.id, kind: info.kind, parent: info.parent, size: info.size, virtualSize: info.virtualSize };
  }

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
    const fh = await open(this.store.objectPath(info.id), 'r');
    try {
      const indices = Array.from({ length: req.count }, (_, k) => req.first + k);
      return await sendPieces(fh, m, indices, req.encoding === 'zstd', write, this.#pools, signal);
    } finally {
      await fh.close();
    }
  }
}
