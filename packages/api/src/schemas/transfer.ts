// The transfer protocol's JSON shapes (objects, manifests, uploads). The piece streams themselves are binary
// (application/vnd.roamdesk.pieces, described in @roamdesk/transfer's frames.ts) and have no JSON schema.

import { Type, type Static } from 'typebox';
import { ObjectId } from '../names.ts';

export const ObjectIdParams = Type.Object({ id: ObjectId }, { additionalProperties: false });
export type ObjectIdParams = Static<typeof ObjectIdParams>;

export const UploadIdParams = Type.Object({ uploadId: Type.String({ pattern: '^[0-9a-f]{32}$' }) }, { additionalProperties: false });
export type UploadIdParams = Static<typeof UploadIdParams>;

const PieceSize = Type.Integer({ minimum: 65536, maximum: 16777216, description: 'A power of two; default 4 MiB' });

export const ManifestQuery = Type.Object({ pieceSize: Type.Optional(PieceSize) }, { additionalProperties: false });
export type ManifestQuery = Static<typeof ManifestQuery>;

export const PiecesQuery = Type.Object(
  {
    first: Type.Integer({ minimum: 0 }),
    count: Type.Integer({ minimum: 1, maximum: 256 }),
    pieceSize: Type.Optional(PieceSize),
    encoding: Type.Optional(Type.Union([Type.Literal('raw'), Type.Literal('zstd')])),
  },
  { additionalProperties: false },
);
export type PiecesQuery = Static<typeof PiecesQuery>;

/**
 * An object of a store. `derivedFrom` (layers only): the server computed this layer as the guest-level difference
 * between `parent` and that object (a compacted chain, a new image version); a receiver holding both may compute
 * it itself and keep the result only if it hashes to `id`.
 */
export const StoredObject = Type.Object({
  id: ObjectId,
  kind: Type.Union([Type.Literal('image'), Type.Literal('layer')]),
  parent: Type.Union([ObjectId, Type.Null()]),
  size: Type.Integer({ minimum: 0, description: 'File size in bytes' }),
  virtualSize: Type.Integer({ minimum: 0, description: 'Disk size the guest sees' }),
  derivedFrom: Type.Optional(ObjectId),
});
export type StoredObject = Static<typeof StoredObject>;

export const ObjectResponse = Type.Object({ object: StoredObject });

export const ChainResponse = Type.Object({
  /** Bottom (the image) first; the last one is the desktop's top sealed object on the server. */
  objects: Type.Array(StoredObject),
  bytes: Type.Integer({ minimum: 0 }),
});
export type ChainResponse = Static<typeof ChainResponse>;

export const Manifest = Type.Object({
  version: Type.Literal(1),
  id: ObjectId,
  kind: Type.Union([Type.Literal('image'), Type.Literal('layer')]),
  parent: Type.Union([ObjectId, Type.Null()]),
  size: Type.Integer({ minimum: 1 }),
  virtualSize: Type.Integer({ minimum: 0 }),
  pieceSize: PieceSize,
  hash: Type.Literal('blake3'),
  pieces: Type.Array(Type.String({ pattern: '^[0-9a-f]{64}$' }), { maxItems: 16777216 }),
});
export type Manifest = Static<typeof Manifest>;

export const BeginUploadRequest = Type.Object({ manifest: Manifest }, { additionalProperties: false });
export type BeginUploadRequest = Static<typeof BeginUploadRequest>;

export const UploadStateResponse = Type.Object({
  uploadId: Type.Union([Type.String(), Type.Null()]),
  id: ObjectId,
  complete: Type.Boolean(),
  piecesTotal: Type.Integer({ minimum: 0 }),
  piecesVerified: Type.Integer({ minimum: 0 }),
  missing: Type.Array(Type.Tuple([Type.Integer({ minimum: 0 }), Type.Integer({ minimum: 0 })]), { description: 'Inclusive [first, last] ranges of missing pieces' }),
});
