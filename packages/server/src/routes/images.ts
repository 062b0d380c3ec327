// POST /images (import from a server path), PUT /images/:name/content (streamed upload),
// POST /images/:name/versions (new version from a server path), PUT /images/:name/versions (streamed upload),
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
  ImageVersionResponse,
  ImportImageRequest,
  NameParams,
  PublishImageVersionRequest,
  UploadImageQuery,
  UploadImageVersionQuery,
} from '@roamdesk/api';
import type { FastifyRequest } from 'fastify';
import type { AppContext } from '../context.ts';
import { isForeignKeyViolation } from '../db/constraints.ts';
import {
  deleteImage, findImageByName, type ImageVersionView, type ImageView, isObjectUnreferenced, listImages, toApiImage, toApiImageVersion,
  versionTopObjects,
} from '../db/repositories/images.ts';
import { notFound } from '../errors.ts';
import { callerOf } from '../http/hooks.ts';
import { requireRegularFile } from '../services/files.ts';
import { assertImageNameFree, publishImage, publishImageVersion } from '../services/images.ts';
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

/**
 * Stream an upload body to a temp file in uploads/ and hand it to `use`. `precheck` runs before anything is
 * read (name taken, image missing …), then a declared length over the limit is refused. The temp file is
 * removed whatever happens: the store has its own copy, or there is nothing to keep.
 */
async function withUploadedFile<T>(
  ctx: AppContext,
  request: FastifyRequest,
  counter: { bytes: number },
  precheck: () => Promise<void>,
  use: (path: string) => Promise<T>,
): Promise<T> {
  const max = ctx.config.uploadMaxBytes;
  const body = request.body;
  if (!(body instanceof Readable)) {
    throw new ApiError('UNSUPPORTED_MEDIA_TYPE', 'send the image as application/octet-stream');
  }
  // Refuse before reading anything: the precheck, or a declared length over the limit.
  await precheck();
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
    return await use(temp);
  } finally {
    await rm(temp, { force: true });
  }
}

async function requireImage(ctx: AppContext, name: string): Promise<void> {
  if ((await findImageByName(ctx.db, name)) === undefined) throw notFound('image', name);
}

function versionResponse(r: { image: ImageView; version: ImageVersionView }) {
  return { image: toApiImage(r.image), version: toApiImageVersion(r.version) };
}

function versionDetail(r: { version: ImageVersionView }) {
  return { version: r.version.version, topObjectId: r.version.top_object_id, diffSize: Number(r.version.diff_size) };
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
      const counter = { bytes: 0 };
      const image = await ctx.audit.run(
        { actor: caller, action: 'image.upload', target: name, detail: format === undefined ? {} : { format } },
        () =>
          withUploadedFile(ctx, request, counter, () => assertImageNameFree(ctx, name), (temp) =>
            publishImage(ctx, { name, sourcePath: temp, format, caller }),
          ),
        (img) => ({ detail: { id: img.id, size: Number(img.size), uploadedBytes: counter.bytes } }),
      );
      return reply.status(201).send({ image: toApiImage(image) });
    },
  );

  app.post(
    '/images/:name/versions',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['images'],
        summary: 'Publish a new version of an image from a file on the server (stored as one layer over the latest version)',
        params: NameParams,
        body: PublishImageVersionRequest,
        response: { 201: ImageVersionResponse, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { name } = request.params;
      const { path, format } = request.body;
      const caller = callerOf(request);
      const published = await ctx.audit.run(
        { actor: caller, action: 'image.publish', target: name, detail: { source: 'path', path, ...(format === undefined ? {} : { format }) } },
        async () => {
          await requireRegularFile('path', path);
          return publishImageVersion(ctx, { name, sourcePath: path, format, caller });
        },
        (r) => ({ detail: versionDetail(r) }),
      );
      return reply.status(201).send(versionResponse(published));
    },
  );

  app.put(
    '/images/:name/versions',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['images'],
        summary: 'Upload a new version of an image (body: the whole new disk, application/octet-stream; stored as one layer over the latest version)',
        params: NameParams,
        querystring: UploadImageVersionQuery,
        response: { 201: ImageVersionResponse, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { name } = request.params;
      const { format } = request.query;
      const caller = callerOf(request);
      const counter = { bytes: 0 };
      const published = await ctx.audit.run(
        { actor: caller, action: 'image.publish', target: name, detail: { source: 'upload', ...(format === undefined ? {} : { format }) } },
        () =>
          withUploadedFile(ctx, request, counter, () => requireImage(ctx, name), (temp) =>
            publishImageVersion(ctx, { name, sourcePath: temp, format, caller }),
          ),
        (r) => ({ detail: { ...versionDetail(r), uploadedBytes: counter.bytes } }),
      );
      return reply.status(201).send(versionResponse(published));
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
        const tops = await versionTopObjects(ctx.db, image.id);
        try {
          await deleteImage(ctx.db, image.id);
        } catch (err) {
          // A desktop created from it since the check: the foreign key refuses, and so do we.
          if (isForeignKeyViolation(err)) throw inUse();
          throw err;
        }
        // Row first (its versions go with it), then bytes, newest version first so no layer is removed after
        // its parent: a crash in between leaves unreferenced objects (garbage a scrub can collect), never a
        // row pointing at missing bytes.
        for (const id of tops.includes(image.id) ? tops : [...tops, image.id]) {
          if (await isObjectUnreferenced(ctx.db, id)) await ctx.store.remove(id);
        }
      });
      return reply.status(204).send(null);
    },
  );
  done();
};
