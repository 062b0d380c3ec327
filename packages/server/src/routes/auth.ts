// POST /auth/login, POST /auth/logout

import { ApiError, LoginRequest, LoginResponse } from '@roamdesk/api';
import { generateToken, hashToken } from '../auth/secrets.ts';
import { insertToken } from '../db/repositories/tokens.ts';
import { findUserByName, toApiUser } from '../db/repositories/users.ts';
import { revokeToken } from '../db/repositories/tokens.ts';
import { RateLimitedError } from '../errors.ts';
import { callerOf } from '../http/hooks.ts';
import { errorResponses, NoContent, type RoutePlugin } from './common.ts';

export const authRoutes: RoutePlugin = (ctx) => (app, _options, done) => {
  app.post(
    '/auth/login',
    {
      config: { auth: 'none' },
      schema: {
        tags: ['auth'],
        summary: 'Log in; returns a bearer token',
        security: [],
        body: LoginRequest,
        response: { 200: LoginResponse, ...errorResponses },
      },
    },
    async (request) => {
      const { user: name, password } = request.body;
      const wait = ctx.limiter.attempt(name, request.ip);
      if (wait > 0) throw new RateLimitedError(Math.ceil(wait / 1000));

      return ctx.audit.run(
        { actor: null, actorName: name, action: 'auth.login', target: name, detail: { ip: request.ip } },
        async () => {
          const user = await findUserByName(ctx.db, name);
          // Unknown user: verify against a dummy hash anyway, so the answer takes as long as a wrong password.
          const ok = await ctx.hasher.verify(user?.password_hash ?? (await ctx.dummyHash()), password);
          if (user === undefined || !ok || user.disabled !== 0) throw new ApiError('AUTH_INVALID');

          const token = generateToken();
          const now = ctx.clock.now();
          const expiresAt = new Date(now + ctx.config.tokenTtlSeconds * 1000).toISOString();
          await insertToken(ctx.db, {
            id: ctx.ids.uuid(),
            user_id: user.id,
            token_hash: hashToken(token),
            kind: 'session',
            created_at: new Date(now).toISOString(),
            expires_at: expiresAt,
            revoked_at: null,
            last_used_at: null,
            desktop_id: null,
            used_at: null,
          });
          ctx.limiter.succeeded(name);
          return { token, expiresAt, user: toApiUser(user) };
        },
      );
    },
  );

  app.post(
    '/auth/logout',
    {
      // A device credential is revoked with DELETE /devices/:id, not logged out.
      config: { credential: 'session' },
      schema: { tags: ['auth'], summary: 'Revoke the token of this request', response: { 204: NoContent, ...errorResponses } },
    },
    async (request, reply) => {
      const caller = callerOf(request);
      await ctx.audit.run({ actor: caller, action: 'auth.logout', target: caller.name }, () =>
        revokeToken(ctx.db, caller.tokenId, ctx.nowIso()),
      );
      return reply.status(204).send(null);
    },
  );
  done();
};
