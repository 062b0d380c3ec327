/**
 * The HTTP resources of the transfer protocol, relative to the API base (`<server>/api/v1`). The server
 * half (routes in @roamdesk/server) and the client half (download.ts, upload.ts) both build paths here.
 *
 *   GET    /objects/:id                         the object's metadata (id, kind, parent, size, virtualSize)
 *   GET    /objects/:id/manifest?pieceSize=N    its manifest
 *   GET    /objects/:id/pieces?first=F&count=C&pieceSize=N&encoding=raw|zstd
 *                                               pieces F…F+C-1 as a frame stream (frames.ts)
 *   POST   /uploads                             { manifest } → UploadState (creates or resumes)
 *   GET    /uploads/:uploadId                   UploadState
 *   PUT    /uploads/:uploadId/pieces            frame stream → UploadState (every piece verified on arrival);
 *                                               with `Upgrade: roamdesk-pieces/1` the stream follows the 101
 *                                               on the same connection, closed by END_FRAME; interim 102s
 *                                               report the pieces taken so far (upgraded-receiver.ts)
 *   POST   /uploads/:uploadId/complete          → { object } (re-hashed, checked, published)
 *   DELETE /uploads/:uploadId                   abandon
 */
export const PIECES_CONTENT_TYPE = 'application/vnd.roamdesk.pieces';

/** The Upgrade token (RFC 9110 §7.8) of a piece upload read straight from the server's socket. */
export const PIECES_UPGRADE = 'roamdesk-pieces/1';

/**
 * In the server's interim responses on an upgraded piece stream: how many pieces of the stream it has taken so far
 * (upgraded-receiver.ts). The client credits them to its progress before the batch is answered.
 */
export const PIECES_RECEIVED_HEADER = 'roamdesk-pieces-received';

export type WireEncoding = 'raw' | 'zstd';

export interface ObjectDescription {
  readonly id: string;
  readonly kind: 'image' | 'layer';
  readonly parent: string | null;
  readonly size: number;
  readonly virtualSize: number;
  /** A layer the sender computed from `parent` and this object (see Store.importDifference): the receiver may derive it. */
  readonly derivedFrom?: string;
}

export interface UploadState {
  /** Null when the server already holds the object (nothing to send). */
  readonly uploadId: string | null;
  readonly id: string;
  readonly complete: boolean;
  readonly piecesTotal: number;
  readonly piecesVerified: number;
  /** Missing pieces as inclusive [first, last] ranges. */
  readonly missing: ReadonlyArray<readonly [number, number]>;
}

export function objectPath(id: string): string {
  return `/objects/${id}`;
}

export function piecesQuery(first: number, count: number, pieceSize: number, encoding: WireEncoding): string {
  return `first=${first}&count=${count}&pieceSize=${pieceSize}&encoding=${encoding}`;
}

/** [1,2,3,7,8] → [[1,3],[7,8]] */
export function toRanges(indices: readonly number[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const i of indices) {
    const last = out[out.length - 1];
    if (last !== undefined && last[1] === i - 1) last[1] = i;
    else out.push([i, i]);
  }
  return out;
}

export function fromRanges(ranges: ReadonlyArray<readonly [number, number]>): number[] {
  const out: number[] = [];
  for (const [a, b] of ranges) for (let i = a; i <= b; i++) out.push(i);
  return out;
}
