// POST /desktops/:name/console (a console token) and GET /console/ws?token= (the WebSocket to the VM's VNC).
//
// The WebSocket route is not behind the bearer hook (browsers cannot set headers on a WebSocket): the console
// token in the query is its only credential. Everything is checked in preHandler (after schema validation), i.e. before the HTTP
// upgrade, so a refused attempt gets a plain HTTP error and never a WebSocket.

import {
  ApiError,
  API_PREFIX,
  CONSOLE_WS_PATH,
  ConsoleTokenResponse,
  ConsoleWsQuery,
  NameParams,
} from '@roamdesk/api';
import type { FastifyRequest } from 'fastify';
import type { AppContext } from '../context.ts';
import { consumeConsoleToken, type ConsoleGrant, issueConsoleToken } from '../console/tokens.ts';
import { proxyConsole } from '../console/proxy.ts';
import { ConsoleSessions, type ConsoleLimits, type ConsoleSlot, DEFAULT_CONSOLE_LIMITS } from '../console/sessions.ts';
import { type DesktopView, findDesktopById } from '../db/repositories/desktops.ts';
import { callerOf } from '../http/hooks.ts';
import { visibleDesktop } from '../services/access.ts';
import { describeError } from '../services/audit.ts';
import { checkedOut } from '../services/checked-out.ts';
import { toRuntimeDesktop } from '../services/paths.ts';
import { errorResponses, type RoutePlugin } from './common.ts';

/** What preHandler established, handed to the WebSocket handler of the same request. */
interface Admitted {
  grant: ConsoleGrant;
  desktop: DesktopView;
  socketPath: string;
  slot: ConsoleSlot;
}

/** The same checks for issuing a token and for opening the socket: the lease is here and the VM runs. */
function requireConsoleable(d: DesktopView): void {
  if (d.location !== 'server') throw checkedOut(d);
  if (d.state !== 'running') throw new ApiError('DESKTOP_NOT_RUNNING', `desktop "${d.name}" is ${d.state}`, { state: d.state });
}

/**
 * A browser always sends Origin on a WebSocket. A page of another origin cannot get a token (it needs the
 * bearer), but refusing it anyway costs nothing. Clients without Origin (CLI, tests) are not browsers.
 */
function checkOrigin(request: FastifyRequest): void {
  const origin = request.headers.origin;
  if (origin === undefined) return;
  let host: string;
  try {
    host = new URL(origin).host;
  } catch {
    throw new ApiError('FORBIDDEN', 'cross-origin console connection refused');
  }
  if (host !== request.host) throw new ApiError('FORBIDDEN', 'cross-origin console connection refused');
}

export function consoleRoutes(ctx: AppContext, limits: ConsoleLimits = DEFAULT_CONSOLE_LIMITS): ReturnType<RoutePlugin> {
  const sessions = new ConsoleSessions(limits);
  const admitted = new WeakMap<FastifyRequest, Admitted>();

  return (app, _options, done) => {
    app.post(
      '/desktops/:name/console',
      {
        schema: {
          tags: ['desktops'],
          summary: 'A console token: single-use, bound to you and this desktop, valid for 60 s',
          description: `Open \`GET ${API_PREFIX}${CONSOLE_WS_PATH}?token=…\` (WebSocket, subprotocol \`binary\`, RFB inside) with it, or the page in \`url\`.`,
          params: NameParams,
          response: { 200: ConsoleTokenResponse, ...errorResponses },
        },
      },
      async (request) => {
        const caller = callerOf(request);
        const d = await visibleDesktop(ctx.db, caller, request.params.name);
        const issued = await ctx.audit.run({ actor: caller, action: 'desktop.console', desktopId: d.id, target: d.name }, async () => {
          requireConsoleable(d);
          return issueConsoleToken(ctx, caller.userId, d.id);
        });
        const q = encodeURIComponent(issued.token);
        return {
          token: issued.token,
          expiresAt: issued.expiresAt,
          url: `/console/${encodeURIComponent(d.name)}#token=${q}`,
          websocket: `${API_PREFIX}${CONSOLE_WS_PATH}?token=${q}`,
        };
      },
    );

    app.get(
      CONSOLE_WS_PATH,
      {
        websocket: true,
        config: { auth: 'none' },
        // fastify's "incoming request" line (info) would write the token in the URL to the log; the
        // session is logged below without it.
        logLevel: 'warn',
        schema: { hide: true, querystring: ConsoleWsQuery },
        preHandler: async (request) => {
          checkOrigin(request);
          const { token } = request.query;
          const grant = await consumeConsoleToken(ctx, token);
          const audit = { actor: { userId: grant.userId, name: grant.userName }, action: 'console.start', desktopId: grant.desktopId } as const;
          try {
            const d = await findDesktopById(ctx.db, grant.desktopId);
            // Deleted or given to someone else since the token was issued: as if it never existed.
            if (d === undefined || (grant.role !== 'admin' && d.owner_id !== grant.userId)) {
              throw new ApiError('AUTH_INVALID', 'The console token is invalid, expired or already used.');
            }
            requireConsoleable(d);
            const socketPath = await ctx.runtime.consoleSocket(toRuntimeDesktop(ctx.paths, d));
            if (socketPath === null) throw new ApiError('DESKTOP_NOT_RUNNING', `desktop "${d.name}" has no console`, { state: d.state });
            const slot = sessions.acquire(d.id, grant.userId);
            // If the upgrade never completes (client gone), the slot still goes back.
            request.raw.socket.once('close', slot.release);
            admitted.set(request, { grant, desktop: d, socketPath, slot });
          } catch (err) {
            await ctx.audit.record(audit, 'error', { error: describeError(err) });
            throw err;
          }
        },
      },
      (socket, request) => {
        const a = admitted.get(request);
        admitted.delete(request);
        if (a === undefined) {
          // Unreachable: preHandler either admitted the request or refused the upgrade.
          socket.close(1011, 'not admitted');
          return;
        }
        const { grant, desktop, socketPath, slot } = a;
        const actor = { userId: grant.userId, name: grant.userName };
        const started = ctx.clock.now();
        const log = ctx.logger.child({ console: slot.id, desktop: desktop.id, user: grant.userName });
        log.info({ sessions: sessions.size }, 'console session started');
        void ctx.audit.record({ actor, action: 'console.start', desktopId: desktop.id, target: desktop.name }, 'ok', { session: slot.id });
        proxyConsole(socket, socketPath, (stats) => {
          slot.release();
          const detail = { session: slot.id, durationMs: ctx.clock.now() - started, ...stats };
          log.info(detail, 'console session ended');
          void ctx.audit.record(
            { actor, action: 'console.end', desktopId: desktop.id, target: desktop.name },
            stats.closedBy === 'error' ? 'error' : 'ok',
            detail,
          );
        });
      },
    );
    done();
  };
}
