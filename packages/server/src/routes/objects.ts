// The transfer endpoints (protocol: @roamdesk/transfer protocol.ts):
//   GET  /desktops/:name/objects        the desktop's server chain (what a device needs to hold it)
//   GET  /objects/:id, /objects/:id/manifest, /objects/:id/pieces   downloads
//   POST /uploads, GET|DELETE /uploads/:uploadId, PUT /uploads/:uploadId/pieces (plain, or upgraded: http/upgrades.ts),
//   POST /uploads/:uploadId/complete
// Every object endpoint checks that the caller may read the object; uploads belong to their caller.

import { ApiError, BeginUploadRequest, ChainResponse, Manifest, ManifestQuery, NameParams, ObjectIdParams, ObjectResponse, PiecesQuery, UploadIdParams, UploadStateResponse } from '@roamdesk/api';
import { isTransferError, PIECES_CONTENT_TYPE, rawStreamLength, writeChunks } from '@roamdesk/transfer';
import type { Readable } from 'node:stream';
import type { AppContext } from '../context.ts';
import { notFound } from '../errors.ts';
import { callerOf } from '../http/hooks.ts';
import { toErrorResponse } from '../http/error-response.ts';
import { upgradedConnection } from '../http/upgrades.ts';
import { visibleDesktop } from '../services/access.ts';
import { recordUpload } from '../db/repositories/objects.ts';
import { readableObject } from '../services/object-access.ts';
import { errorResponses, NoContent, type RoutePlugin } from './common.ts';

const tags = ['transfer'];
/** A manifest lists one 64-hex hash per piece: a 256 GiB object at 64 KiB pieces is ~270 MB of JSON at most. */
const MANIFEST_BODY_LIMIT = 64 * 1024 * 1024;

/** Upload ids that are unknown or someone else's answer 404 (same as missing). */
async function uploadCall<T>(uploadId: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (err) {
    if (isTransferError(err, 'XFER_ERR_UPLOAD') && err.data['notFound'] === true) throw notFound('upload', uploadId);
    throw err;
  }
}

export const objectRoutes: RoutePlugin = (ctx: AppContext) => (app, _options, done) => {
  app.addContentTypeParser(PIECES_CONTENT_TYPE, (_request, payload, next) => next(null, payload));

  app.get(
    '/desktops/:name/objects',
    { schema: { tags, summary: "The desktop's chain on the server, image first", params: NameParams, response: { 200: ChainResponse, ...errorResponses } } },
    async (request) => {
      const desktop = await visibleDesktop(ctx.db, callerOf(request), request.params.name);
      const objects = await ctx.transfer.chain(desktop.top_object_id);
      return { objects, bytes: objects.reduce((n, o) => n + o.size, 0) };
    },
  );

  app.get(
    '/objects/:id',
    { schema: { tags, summary: 'An object (image or layer) the caller may read', params: ObjectIdParams, response: { 200: ObjectResponse, ...errorResponses } } },
    async (request) => ({ object: await readableObject(ctx, callerOf(request), request.params.id) }),
  );

  app.get(
    '/objects/:id/manifest',
    { schema: { tags, summary: "The object's pieces and their BLAKE3 hashes", params: ObjectIdParams, querystring: ManifestQuery, response: { 200: Manifest, ...errorResponses } } },
    async (request) => {
      const object = await readableObject(ctx, callerOf(request), request.params.id);
      return (await ctx.transfer.manifest(object.id, request.query.pieceSize)) as Manifest;
    },
  );

  app.get(
    '/objects/:id/pieces',
    { schema: { tags, summary: `Pieces first…first+count-1 as a ${PIECES_CONTENT_TYPE} frame stream`, params: ObjectIdParams, querystring: PiecesQuery } },
    async (request, reply) => {
      const object = await readableObject(ctx, callerOf(request), request.params.id);
      const { first, count, pieceSize, encoding } = request.query;
      // Validate the range before the status line is sent: afterwards an error can only cut the stream.
      const manifest = (await ctx.transfer.manifest(object.id, pieceSize)) as Manifest;
      if (first + count > manifest.pieces.length) {
        throw new ApiError('VALIDATION_FAILED', `pieces ${first}…${first + count - 1} are outside 0…${manifest.pieces.length - 1}`, { in: 'querystring', issues: [{ path: '/first', message: 'out of range' }] });
      }
      reply.hijack();
      const res = reply.raw;
      // Uncompressed, the stream's length is known: a Content-Length saves the chunk framing (RFC 9112 §7.1).
      const length = (encoding ?? 'raw') === 'raw' ? { 'content-length': String(rawStreamLength(manifest, first, count)) } : {};
      res.writeHead(200, { 'content-type': PIECES_CONTENT_TYPE, 'cache-control': 'no-store', ...length });
      const aborted = new AbortController();
      res.once('close', () => aborted.abort());
      const write = (header: Buffer, payload: Buffer): Promise<void> => writeChunks(res, [header, payload]);
      try {
        await ctx.transfer.pieces(object.id, { first, count, pieceSize, encoding: encoding ?? 'raw' }, write, aborted.signal);
        res.end();
      } catch (err) {
        // Mid-stream: the only honest signal is a cut connection (the client sees a truncated frame).
        if (!aborted.signal.aborted) request.log.warn({ err, object: object.id }, 'piece stream failed');
        res.destroy();
      }
    },
  );

  app.post(
    '/uploads',
    { bodyLimit: MANIFEST_BODY_LIMIT, schema: { tags, summary: 'Start or resume an upload; answers which pieces the server still needs', body: BeginUploadRequest, response: { 200: UploadStateResponse, ...errorResponses } } },
    async (request) => {
      const caller = callerOf(request);
      const { manifest } = request.body;
      if (manifest.kind === 'image' && caller.role !== 'admin') throw new ApiError('FORBIDDEN', 'only administrators upload images');
      if (manifest.parent !== null) await readableObject(ctx, caller, manifest.parent);
      const mayRead = await readableObject(ctx, caller, manifest.id).then(() => true, () => false);
      return ctx.transfer.beginUpload(caller.userId, manifest, { mayRead, maxOpen: ctx.config.transfer.maxUploadsPerUser });
    },
  );

  app.get(
    '/uploads/:uploadId',
    { schema: { tags, summary: 'What the server holds of an upload', params: UploadIdParams, response: { 200: UploadStateResponse, ...errorResponses } } },
    async (request) => uploadCall(request.params.uploadId, () => ctx.transfer.uploadState(callerOf(request).userId, request.params.uploadId)),
  );

  app.put(
    '/uploads/:uploadId/pieces',
    { bodyLimit: 1024 * 1024 * 1024, schema: { tags, summary: `Pieces as a ${PIECES_CONTENT_TYPE} frame stream; each is verified before it is written`, params: UploadIdParams, response: { 200: UploadStateResponse, ...errorResponses } } },
    async (request, reply) => {
      const { uploadId } = request.params;
      const owner = callerOf(request).userId;
      const upgraded = upgradedConnection(request);
      if (upgraded !== null) {
        // Everything that can refuse the request has run (auth, params, the upload is the caller's): switch.
        const receive = await uploadCall(uploadId, () => ctx.transfer.openUpgradedUpload(owner, uploadId));
        reply.hijack();
        await receive(upgraded.socket, upgraded.head, (err) => {
          const r = toErrorResponse(err, request.id);
          if (r.unexpected) request.log.error({ err }, 'upgraded upload failed');
          else request.log.info({ code: r.body.error.code, status: r.status }, 'upgraded upload refused');
          return { status: r.status, body: r.body };
        });
        return;
      }
      if (request.headers['content-type'] !== PIECES_CONTENT_TYPE) throw new ApiError('UNSUPPORTED_MEDIA_TYPE', `send pieces as ${PIECES_CONTENT_TYPE}`);
      const body = request.body as Readable;
      return uploadCall(uploadId, () => ctx.transfer.receiveUpload(owner, uploadId, body));
    },
  );

  app.post(
    '/uploads/:uploadId/complete',
    { schema: { tags, summary: 'Verify the whole object (hash, qcow2 checks) and publish it', params: UploadIdParams, response: { 200: ObjectResponse, ...errorResponses } } },
    async (request) => {
      const caller = callerOf(request);
      const { uploadId } = request.params;
      const object = await ctx.audit.run(
        { actor: caller, action: 'object.upload', target: uploadId },
        async () => {
          const o = await uploadCall(uploadId, () => ctx.transfer.completeUpload(caller.userId, uploadId));
          await recordUpload(ctx.db, o.id, caller.userId, ctx.nowIso());
          return o;
        },
        (o) => ({ detail: { id: o.id, kind: o.kind, parent: o.parent, size: o.size } }),
      );
      return { object };
    },
  );

  app.delete(
    '/uploads/:uploadId',
    { schema: { tags, summary: 'Abandon an upload (its verified pieces are deleted)', params: UploadIdParams, response: { 204: NoContent, ...errorResponses } } },
    async (request, reply) => {
      await uploadCall(request.params.uploadId, () => ctx.transfer.abandonUpload(callerOf(request).userId, request.params.uploadId));
      return reply.status(204).send(null);
    },
  );

  done();
};
