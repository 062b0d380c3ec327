// POST /images (import from a server path), PUT /images/:name/content (streamed upload),
// GET /images, GET /images/:name, DELETE /images/:name

import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  ApiError,
  ImageListResponse,
  ImageResponse,
  ImportImageRequest,
  NameParams,
  UploadImageQuery,
} from '@roamdesk/api';
import { isForeignKeyViolation } from '../db/constraints.ts';
import { deleteImage, findImageByName, isObjectUnreferenced, listImages, toApiImage } from '../db/repositories/images.ts';
import { notFound } from '../errors.ts';
import { callerOf } from '../http/hooks.ts';
import { requireRegularFile } from '../services/files.ts';
import { assertImageNameFree, publishImage } from '../services/images.ts';
import { errorResponses, NoContent, type RoutePlugin } from './common.ts';

/** Counts bytes and fails the pipeline as soon as the limit is passed, so an oversize upload stops early. */
function byteLimit(max: number, counter: { bytes: number }): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      counter.bytes += chunk.length;
      if (counter.bytes > max) done(new ApiError('PAYLOAD_TOO_LARGE', `uploads are limited to ${max} bytes`, { maxBytes: max }));
      else done(null, chunk);
    },
  });
}

export const imageRoutes: RoutePlugin = (ctx) => (app, _options, done) => {
  // The upload body is streamed to disk, never buffered: hand the raw request stream to the handler.
  app.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload));

  app.post(
    '/images',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['images'],
        summary: 'Import an image from a file on the server',
        body: ImportImageRequest,
        response: { 201: ImageResponse, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { name, path, format } = request.body;
      const caller = callerOf(request);
      const image = await ctx.audit.run(
        { actor: caller, action: 'image.import', target: name, detail: { path, ...(format === undefined ? {} : { format }) } },
        async () => {
          await requireRegularFile('path', path);
          await assertImageNameFree(ctx, name);
          return publishImage(ctx, { name, sourcePath: path, format, caller });
        },
        (img) => ({ detail: { id: img.id, size: Number(img.size) } }),
      );
      return reply.status(201).send({ image: toApiImage(image) });
    },
  );

  app.put(
    '/images/:name/content',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['images'],
        summary: 'Upload an image (body: the image bytes, application/octet-stream)',
        params: NameParams,
        querystring: UploadImageQuery,
        response: { 201: ImageResponse, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { name } = request.params;
      const { format } = request.query;
      const caller = callerOf(request);
      const max = ctx.config.uploadMaxBytes;
      const counter = { bytes: 0 };
      const image = await ctx.audit.run(
        { actor: caller, action: 'image.upload', target: name, detail: format === undefined ? {} : { format } },
        async () => {
          const body = request.body;
          if (!(body instanceof Readable)) {
            throw new ApiError('UNSUPPORTED_MEDIA_TYPE', 'send the image as application/octet-stream');
          }
          // Refuse before reading anything: name taken, or a declared length over the limit.
          await assertImageNameFree(ctx, name);
          const declared = Number(request.headers['content-length'] ?? 0);
          if (declared > max) throw new ApiError('PAYLOAD_TOO_LARGE', `uploads are limited to ${max} bytes`, { maxBytes: max });

          // The temp name comes from a fresh UUID, never from the image name.
          const temp = join(ctx.paths.uploads, `${ctx.ids.uuid()}.upload`);
          try {
            // Pipe through a PassThrough so a refusal destroys only our side: the request itself stays
            // intact and the client still gets its 413 instead of a reset connection.
            const source = new PassThrough();
            body.on('error', (err) => source.destroy(err));
            body.pipe(source);
            await pipeline(source, byteLimit(max, counter), createWriteStream(temp, { flags: 'wx', mode: 0o600 }));
            if (counter.bytes === 0) throw new ApiError('VALIDATION_FAILED', 'the upload is empty');
            return await publishImage(ctx, { name, sourcePath: temp, format, caller });
          } finally {
            // Whatever happened, the temp file goes: the store has its own copy or there is nothing to keep.
            await rm(temp, { force: true });
          }
        },
        (img) => ({ detail: { id: img.id, size: Number(img.size), uploadedBytes: counter.bytes } }),
      );
      return reply.status(201).send({ image: toApiImage(image) });
    },
  );

  app.get(
    '/images',
    { schema: { tags: ['images'], summary: 'List images with size and usage', response: { 200: ImageListResponse, ...errorResponses } } },
    async () => ({ images: (await listImages(ctx.db)).map(toApiImage) }),
  );

  app.get(
    '/images/:name',
    { schema: { tags: ['images'], summary: 'One image', params: NameParams, response: { 200: ImageResponse, ...errorResponses } } },
    async (request) => {
      const image = await findImageByName(ctx.db, request.params.name);
      if (image === undefined) throw notFound('image', request.params.name);
      return { image: toApiImage(image) };
    },
  );

  app.delete(
    '/images/:name',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['images'],
        summary: 'Delete an unused image',
        params: NameParams,
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { name } = request.params;
      await ctx.audit.run({ actor: callerOf(request), action: 'image.delete', target: name }, async () => {
        const image = await findImageByName(ctx.db, name);
        if (image === undefined) throw notFound('image', name);
        const inUse = () => new ApiError('IMAGE_IN_USE', `image "${name}" is used by desktops`, { desktops: image.usage });
        if (image.usage > 0) throw inUse();
        try {
          await deleteImage(ctx.db, image.id);
        } catch (err) {
          // A desktop created from it since the check: the foreign key refuses, and so do we.
          if (isForeignKeyViolation(err)) throw inUse();
          throw err;
        }
        // Row first, then bytes: a crash in between leaves an unreferenced object (garbage a scrub can
        // collect), never a row pointing at missing bytes.
        if (await isObjectUnreferenced(ctx.db, image.id)) await ctx.store.remove(image.id);
      });
      return reply.status(204).send(null);
    },
  );
  done();
};
