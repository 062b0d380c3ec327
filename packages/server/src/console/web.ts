// The browser pages: the portal (/), the console page (/console/:name), their ES modules, and noVNC's
// modules under /novnc/. Served as files with no build step. Only files that exist at startup are routed
// (wildcard: false), so nothing outside these directories can be reached, whatever the URL.

import fastifyStatic from '@fastify/static';
import { NameParams } from '@roamdesk/api';
import { CONSOLE_PAGE, novncRoot, webRoot } from '@roamdesk/web';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { join } from 'node:path';

/**
 * The pages hold a bearer token (sessionStorage), so script injection must be impossible: scripts only
 * from this origin, no inline script, no framing (clickjacking on a remote desktop is input injection).
 * connect-src 'self' covers ws:/wss: to the same host in current browsers.
 */
const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
  "form-action 'self'",
].join('; ');

export const webPages: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onSend', async (_request, reply, payload) => {
    reply.header('content-security-policy', CSP);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('referrer-policy', 'no-referrer');
    return payload;
  });

  await app.register(fastifyStatic, { root: webRoot, prefix: '/', wildcard: false, index: ['index.html'] });
  // noVNC's core imports ../vendor/pako, so both directories keep their relative layout under /novnc/.
  for (const dir of ['core', 'vendor']) {
    await app.register(fastifyStatic, { root: join(novncRoot, dir), prefix: `/novnc/${dir}/`, wildcard: false, decorateReply: false });
  }

  app.get(
    '/console/:name',
    { schema: { hide: true, params: NameParams } },
    // The page reads the name from its own URL; the API checks access when the page asks for a token.
    async (_request, reply) => reply.type('text/html; charset=utf-8').sendFile(CONSOLE_PAGE),
  );
};
