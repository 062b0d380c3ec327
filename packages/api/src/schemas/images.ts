import { Type, type Static } from 'typebox';
import { Name, ObjectId, ServerPath, Timestamp } from '../names.ts';

export const ImageFormat = Type.Union([Type.Literal('raw'), Type.Literal('qcow2')]);
export type ImageFormat = Static<typeof ImageFormat>;

/**
 * One published version of an image. Version 1 is the image as first imported; version N+1 is version N plus
 * ONE layer holding the guest-level difference, so a device that holds version N fetches only that layer.
 */
export const ImageVersion = Type.Object({
  version: Type.Integer({ minimum: 1 }),
  /** Top object of this version's chain: the image itself for version 1, else the version's layer. */
  topObjectId: ObjectId,
  diffSize: Type.Integer({ minimum: 0, description: 'bytes of the layer of this version (version 1: of the image): what a device holding the previous version fetches' }),
  createdAt: Timestamp,
  createdBy: Type.Union([Name, Type.Null()]),
});
export type ImageVersion = Static<typeof ImageVersion>;

export const Image = Type.Object({
  /** Object id of version 1; the image keeps it across versions. */
  id: ObjectId,
  name: Name,
  format: ImageFormat,
  size: Type.Integer({ minimum: 0, description: 'bytes stored (version 1)' }),
  virtualSize: Type.Integer({ minimum: 0, description: 'bytes the guest sees (the same in every version)' }),
  usage: Type.Integer({ minimum: 0, description: 'number of desktops using this image (any version)' }),
  createdAt: Timestamp,
  createdBy: Type.Union([Name, Type.Null()]),
  version: Type.Integer({ minimum: 1, description: 'the latest version: new desktops start from it' }),
  /** Top object of the latest version's chain. */
  topObjectId: ObjectId,
  versions: Type.Array(ImageVersion, { description: 'every version, oldest first' }),
});
export type Image = Static<typeof Image>;

/** Import from a file that already is on the server (admin only). */
export const ImportImageRequest = Type.Object(
  { name: Name, path: ServerPath, format: Type.Optional(ImageFormat) },
  { additionalProperties: false },
);
export type ImportImageRequest = Static<typeof ImportImageRequest>;

/** `PUT /images/:name/content?format=` : the body is the image bytes (application/octet-stream). */
export const UploadImageQuery = Type.Object({ format: Type.Optional(ImageFormat) }, { additionalProperties: false });
export type UploadImageQuery = Static<typeof UploadImageQuery>;

export const ImageResponse = Type.Object({ image: Image });
export type ImageResponse = Static<typeof ImageResponse>;

export const ImageListResponse = Type.Object({ images: Type.Array(Image) });
export type ImageListResponse = Static<typeof ImageListResponse>;

/** `POST /images/:name/versions`: publish a new version from a file that already is on the server (admin only). */
export const PublishImageVersionRequest = Type.Object(
  { path: ServerPath, format: Type.Optional(ImageFormat) },
  { additionalProperties: false },
);
export type PublishImageVersionRequest = Static<typeof PublishImageVersionRequest>;

/** `PUT /images/:name/versions?format=`: the body is the new version's bytes (application/octet-stream). */
export const UploadImageVersionQuery = UploadImageQuery;
export type UploadImageVersionQuery = Static<typeof UploadImageVersionQuery>;

/** A published version: the image as it is now, and the version just published. */
export const ImageVersionResponse = Type.Object({ image: Image, version: ImageVersion });
export type ImageVersionResponse = Static<typeof ImageVersionResponse>;
