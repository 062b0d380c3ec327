// What every route gets: the injected ports plus the few objects built once per app.

import type { Kysely } from 'kysely';
import type { FastifyBaseLogger } from 'fastify';
import type { LoginLimiter } from './auth/rate-limit.ts';
import type { DataPaths, ServerConfig } from './config.ts';
import type { Database } from './db/schema.ts';
import type { Clock, DesktopRuntime, Ids, ObjectStore, ObjectTransfer, PasswordHasher } from './ports.ts';
import type { Auditor } from './services/audit.ts';
import type { ChainCompactor } from './services/compaction.ts';
import type { GrantSigner } from './services/grants.ts';

/** The dependencies buildApp() is given. */
export interface AppDeps {
  db: Kysely<Database>;
  store: ObjectStore;
  runtime: DesktopRuntime;
  /** Objects to and from devices (downloads, uploads). */
  transfer: ObjectTransfer;
  clock: Clock;
  ids: Ids;
  /** pino in production; every log line of the server goes through it. */
  logger: FastifyBaseLogger;
  hasher: PasswordHasher;
  config: ServerConfig;
}

export interface AppContext extends AppDeps {
  paths: DataPaths;
  limiter: LoginLimiter;
  audit: Auditor;
  /** Keeps desktops' chains short on the server (services/compaction.ts). */
  compactor: ChainCompactor;
  /** Signs offline grants with the server's Ed25519 key (`<data>/grant-key.pem`). */
  grants: GrantSigner;
  /** The current time as the ISO text stored in the database. */
  nowIso(): string;
  /** A hash of a random password, verified against when the user is unknown so both cases cost the same. */
  dummyHash(): Promise<string>;
}
