// buildApp(deps): the whole HTTP API as a fastify instance, without listening. Tests drive it with
// app.inject(); startServer() (server.ts) is the only caller of listen().

import { API_PREFIX } from '@roamdesk/api';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import websocket from '@fastify/websocket';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { EventEmitter } from 'node:events';
import type { Server } from 'node:http';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { LoginLimiter } from './auth/rate-limit.ts';
import { generatePassword } from './auth/secrets.ts';
import { dataPaths } from './config.ts';
import type { AppContext, AppDeps } from './context.ts';
import { installAuth, installErrorHandling } from './http/hooks.ts';
import type { TlsCredentials } from './http/tls.ts';
import { strictValidatorCompiler } from './http/validation.ts';
import { routeUpgrades } from './http/upgrades.ts';
import { webPages } from './console/web.ts';
import { authRoutes } from './routes/auth.ts';
import { consoleRoutes } from './routes/console.ts';
import { desktopRoutes } from './routes/desktops.ts';
import { deviceRoutes } from './routes/devices.ts';
import { leaseRoutes } from './routes/leases.ts';
import { operationRoutes } from './routes/operations.ts';
import { eventRoutes } from './routes/events.ts';
import { imageRoutes } from './routes/images.ts';
import { objectRoutes } from './routes/objects.ts';
import { userRoutes } from './routes/users.ts';
import { Auditor } from './services/audit.ts';
import { ChainCompactor } from './services/compaction.ts';
import { GrantSigner } from './services/grants.ts';

export const API_VERSION = '0.1.0';

/**
 * One context per deps: the routes, the runtime's followers and the admin session share its event log writer (whose
 * unwritten events wait in order: services/audit.ts), login limiter and chain compactor.
 */
const contexts = new WeakMap<AppDeps, AppContext>();

export function createContext(deps: AppDeps): AppContext {
  let ctx = contexts.get(deps);
  if (ctx === undefined) {
    ctx = newContext(deps);
    contexts.set(deps, ctx);
  }
  return ctx;
}

function newContext(deps: AppDeps): AppContext {
  let dummy: Promise<string> | undefined;
  const paths = dataPaths(deps.config.dataDir);
  const audit = new Auditor(deps.db, deps.clock, deps.logger);
  const nowIso = (): string => new Date(deps.clock.now()).toISOString();
  return {
    ...deps,
    paths,
    grants: new GrantSigner(paths.grantKey),
    limiter: new LoginLimiter({
      perUser: deps.config.login.maxAttemptsPerUser,
      perIp: deps.config.login.maxAttemptsPerIp,
      windowMs: deps.config.login.windowSeconds * 1000,
      clock: deps.clock,
    }),
    audit,
    compactor: new ChainCompactor({ ...deps, audit, nowIso }),
    nowIso,
    dummyHash: () => (dummy ??= deps.hasher.hash(generatePassword())),
  };
}

export interface BuildOptions {
  /** Serve HTTPS with these (startServer reads and checks them: http/tls.ts); plain HTTP without. */
  tls?: TlsCredentials;
}

export async function buildApp(deps: AppDeps, options: BuildOptions = {}): Promise<FastifyInstance> {
  const ctx = createContext(deps);
  // The grant key exists from the first start on (and a broken key file stops the start, not a check-out).
  await ctx.grants.keys();
  const tls = options.tls;
  const base = Fastify({
    // HTTP/1.1 over TLS, never HTTP/2: the piece uploads upgrade their connection (RFC 9110 §7.8), which HTTP/2
    // does not have, and the console's WebSocket handshake is an HTTP/1.1 upgrade too.
    ...(tls === undefined ? {} : { https: { cert: tls.cert, key: tls.key } }),
    loggerInstance: deps.logger,
    trustProxy: deps.config.trustProxy,
    // JSON bodies are small; images arrive through the streamed upload route, which enforces its own limit.
    bodyLimit: 1024 * 1024,
    // Long enough that an over-long name reaches schema validation; longer ones stop at the router.
    routerOptions: { maxParamLength: 1024 },
    // Errors the router raises before any route runs (bad percent-encoding, over-long parameter) bypass
    // the error handler; answer them in the one error shape too, without echoing the URL back.
    frameworkErrors: (err, _request, reply) => {
      const message = err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'a path parameter is too long' : 'malformed URL';
      void (reply as FastifyReply).status(400).send({ error: { code: 'VALIDATION_FAILED', message } });
    },
  });
  base.setValidatorCompiler(strictValidatorCompiler);
  installErrorHandling(base);
  const app = base.withTypeProvider<TypeBoxTypeProvider>();

  await app.register(swagger, {
    openapi: {
      info: { title: 'Roamdesk API', version: API_VERSION, description: 'Desktops as VMs on a server.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  // WebSocket handshakes reach the plugin through routeUpgrades (the server also upgrades piece uploads).
  const websocketUpgrades = new EventEmitter();
  routeUpgrades(base, websocketUpgrades);
  await app.register(websocket, {
    options: {
      server: websocketUpgrades as Server,
      // RFB from the browser is keystrokes and pointer moves; nothing legitimate comes near 1 MiB.
      maxPayload: 1024 * 1024,
      // noVNC asks for "binary"; answer it, and no other subprotocol.
      handleProtocols: (protocols) => (protocols.has('binary') ? 'binary' : false),
    },
  });
  await app.register(webPages);

  await app.register(
    async (api) => {
      installAuth(api, ctx);
      await api.register(authRoutes(ctx));
      await api.register(userRoutes(ctx));
      await api.register(imageRoutes(ctx));
      await api.register(desktopRoutes(ctx));
      await api.register(eventRoutes(ctx));
      await api.register(consoleRoutes(ctx));
      await api.register(objectRoutes(ctx));
      await api.register(deviceRoutes(ctx));
      await api.register(leaseRoutes(ctx));
      await api.register(operationRoutes(ctx));
    },
    { prefix: API_PREFIX },
  );

  await app.ready();
  return base;
}
