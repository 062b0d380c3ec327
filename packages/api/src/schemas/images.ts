import { Type, type Static } from 'typebox';
import { Name, ObjectId, ServerPath, Timestamp } from '../names.ts';

export const ImageFormat = Type.Union([Type.Literal('raw'), Type.Literal('qcow2')]);
export type ImageFormat = Static<typeof ImageFormat>;

export const Image = Type.Object({
  id: ObjectId,
  name: Name,
  format: ImageFormat,
  size: Type.Integer({ minimum: 0, description: 'bytes stored' }),
  virtualSize: Type.Integer({ minimum: 0, description: 'bytes the guest sees' }),
  usage: Type.Integer({ minimum: 0, description: 'number of desktops using this image' }),
  createdAt: Timestamp,
  createdBy: Type.Union([Name, Type.Null()]),
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
