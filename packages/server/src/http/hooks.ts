// Request-level plumbing: the error handler, the not-found handler, and the authentication hook.

import { ApiError } from '@roamdesk/api';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { authenticate, type Caller } from '../auth/authenticate.ts';
import type { AppContext } from '../context.ts';
import { toErrorResponse } from './error-response.ts';

/** How a route is protected. Routes that say nothing require a logged-in user (safe default). */
export type AuthMode = 'none' | 'user' | 'admin';

/**
 * Which bearer a route takes: 'device' = only a device credential (lease calls); 'session' = only a session
 * token (registering a device, logging out). Unset: either.
 */
export type CredentialKind = 'device' | 'session';

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: AuthMode;
    credential?: CredentialKind;
  }
  interface FastifyRequest {
    caller: Caller | null;
  }
}

/** The authenticated caller of a route that requires one. */
export function callerOf(request: FastifyRequest): Caller {
  if (request.caller === null) throw new ApiError('AUTH_REQUIRED');
  return request.caller;
}

export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => {
    const r = toErrorResponse(err, request.id);
    if (r.unexpected) request.log.error({ err }, 'request failed');
    else request.log.info({ code: r.body.error.code, status: r.status }, 'request refused');
    return reply.status(r.status).headers(r.headers).send(r.body);
  });

  app.setNotFoundHandler((request, reply) => {
    // A path too long for any route parameter is malformed input, not a missing resource.
    const tooLong = request.url.length > 2048;
    const body = tooLong
      ? { error: { code: 'VALIDATION_FAILED', message: 'request URL too long' } }
      : { error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url.slice(0, 200)}` } };
    return reply.status(tooLong ? 400 : 404).send(body);
  });
}

/** Authenticate (and check the role of) every request of the routes registered in `app`'s scope. */
export function installAuth(app: FastifyInstance, ctx: AppContext): void {
  app.decorateRequest('caller', null);
  app.addHook('onRequest', async (request) => {
    const mode = request.routeOptions.config.auth ?? 'user';
    if (mode === 'none') return;
    const caller = await authenticate(ctx, request.headers.authorization);
    request.caller = caller;
    // The role check comes before any lookup, so a non-admin learns nothing about what exists.
    if (mode === 'admin' && caller.role !== 'admin') {
      throw new ApiError('FORBIDDEN', caller.deviceId === undefined ? 'This action needs an administrator.' : 'This action needs an administrator session, not a device credential.');
    }
    const credential = request.routeOptions.config.credential;
    if (credential === 'device' && caller.deviceId === undefined) {
      throw new ApiError('FORBIDDEN', 'This call is made by a registered device: use the device credential (roamdesk device register), not a session token.');
    }
    if (credential === 'session' && caller.deviceId !== undefined) {
      throw new ApiError('FORBIDDEN', 'This call needs a user session (roamdesk login), not a device credential.');
    }
  });
}
