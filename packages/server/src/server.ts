// startServer(config): the main job. Opens the database, migrates, creates the first admin, reconciles
// desktops with what really runs, builds the app and listens. Returns a handle whose close() stops it all;
// SIGINT/SIGTERM call the same close(). It never calls process.exit: the CLI decides how to end.

import { chmod, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { Server as HttpsServer } from 'node:https';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import { pino } from 'pino';
import { buildApp, createContext } from './app.ts';
import { ensureInitialAdmin } from './auth/bootstrap.ts';
import { argon2Hasher } from './auth/password.ts';
import { ConfigError, type DataPaths, dataPaths, isLoopbackHost, parseConfig, parseListen, type ServerConfig } from './config.ts';
import type { AppDeps } from './context.ts';
import { migrateToLatest } from './db/migrations.ts';
import type { Database } from './db/schema.ts';
import { openSqlite } from './db/sqlite.ts';
import type { Clock, DesktopRuntime, Ids, ObjectStore, ObjectTransfer, PasswordHasher } from './ports.ts';
import { loadTlsCredentials, type TlsCredentials } from './http/tls.ts';
import { defaultEngines } from './runtime/defaults.ts';
import { type AdminSession, openAdminSession } from './services/admin-session.ts';
import { followRuntimePauses } from './services/pauses.ts';
import { followRuntimeExits, reconcileDesktops, type ReconcileChange } from './services/reconcile.ts';

export interface StartOptions {
  /** The content-addressed store. Default: @roamdesk/store's Store at `<data>/store`. */
  store?: ObjectStore | ((paths: DataPaths) => ObjectStore | Promise<ObjectStore>);
  /** Runs desktops. Default: the QEMU runtime (src/runtime/) over `<data>/vms`, on the same Store. */
  runtime?: DesktopRuntime | ((paths: DataPaths) => DesktopRuntime | Promise<DesktopRuntime>);
  logger?: FastifyBaseLogger;
  clock?: Clock;
  ids?: Ids;
  hasher?: PasswordHasher;
  /** Use this database instead of `<data>/roamdesk.db` (e.g. PostgreSQL). It is destroyed on close. */
  db?: Kysely<Database>;
  /** Use this transfer engine instead of the default one over `<data>/store`. */
  transfer?: ObjectTransfer;
  /** Install SIGINT/SIGTERM handlers that close the server, and SIGHUP re-reading the TLS files (default true). */
  handleSignals?: boolean;
}

export interface ServerHandle {
  app: FastifyInstance;
  config: ServerConfig;
  /** Where it listens, e.g. http://127.0.0.1:8760 (the real port when 0 was asked for). */
  url: string;
  /** Set on the very first start when no admin password was configured. Shown once; stored nowhere. */
  initialAdminPassword?: string;
  /** Desktops whose recorded state was corrected at start. */
  reconciled: ReconcileChange[];
  /** Stop listening, let in-flight requests end, close the database. Idempotent. */
  close(): Promise<void>;
  /** Settles when the server has closed (after close() or a signal). */
  closed: Promise<void>;
  /** A short-lived admin token for this process only (e.g. `--demo` setup through the API); revoke it after use. */
  adminSession(): Promise<AdminSession>;
  /**
   * Re-read the configured certificate and key (what SIGHUP does) and use them for new connections; open ones
   * keep theirs. Throws ConfigError, keeping the credentials in use, when the files are wrong or no TLS is set.
   */
  reloadTls(): Promise<TlsCredentials>;
}

export const systemClock: Clock = { now: () => Date.now() };
export const randomIds: Ids = { uuid: () => randomUUID() };

const UPLOAD_SWEEP_MS = 3600_000;

async function prepareDataDir(paths: DataPaths): Promise<void> {
  for (const dir of [paths.root, paths.store, paths.vms, paths.uploads]) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  }
  // The data dir holds password hashes and users' disks: owner only, even if it existed before.
  await chmod(paths.root, 0o700);
  // Temp uploads from a previous process that died mid-upload are garbage by definition.
  for (const entry of await readdir(paths.uploads)) await rm(join(paths.uploads, entry), { force: true, recursive: true });
}

export async function startServer(input: unknown, options: StartOptions = {}): Promise<ServerHandle> {
  const config = parseConfig(input);
  const paths = dataPaths(config.dataDir);
  const logger = options.logger ?? pino({ level: config.logLevel });
  // Before anything changes on disk: wrong TLS files stop the start here.
  const tls = config.tls === undefined ? undefined : await loadTlsCredentials(config.tls);
  await prepareDataDir(paths);

  const db = options.db ?? openSqlite(paths.database);
  let app: FastifyInstance | undefined;
  let runtime: DesktopRuntime | undefined;
  let transfer: ObjectTransfer | undefined;
  let unwatch: (() => void) | undefined;
  let sweeper: NodeJS.Timeout | undefined;
  try {
    const applied = await migrateToLatest(db);
    if (applied.length > 0) logger.info({ migrations: applied }, 'database migrated');

    const engines = defaultEngines(paths);
    runtime =
      options.runtime === undefined ? await engines.runtime() : typeof options.runtime === 'function' ? await options.runtime(paths) : options.runtime;
    transfer = options.transfer ?? (await engines.transfer());
    const deps: AppDeps = {
      db,
      transfer,
      store: options.store === undefined ? await engines.store() : typeof options.store === 'function' ? await options.store(paths) : options.store,
      runtime,
      clock: options.clock ?? systemClock,
      ids: options.ids ?? randomIds,
      logger,
      hasher: options.hasher ?? argon2Hasher(config.passwordHash),
      config,
    };

    const admin = await ensureInitialAdmin(deps, config.adminPassword);
    if (admin.created) logger.info({ user: 'admin' }, 'created the first administrator');

    const reconciled = await reconcileDesktops(createContext(deps));
    for (const c of reconciled) logger.warn(c, 'desktop state corrected at start');
    // From now on a VM that ends by itself (guest power-off, crash) moves its desktop to stopped/error.
    const unwatchExits = await followRuntimeExits(createContext(deps), (c) => logger.info(c, 'desktop VM ended'));
    // A VM a disk error paused, and its resume: the operator is told what to do.
    const unwatchPauses = followRuntimePauses(createContext(deps), (c) => {
      if (c.paused === null) logger.info(c, c.auto ? 'desktop VM resumed by the server: its disk has room again' : 'desktop VM resumed');
      else if (c.paused.reason === 'no-space') logger.error({ ...c, store: paths.store }, "desktop VM paused: the server's disk is full; free space there and it resumes by itself");
      else if (c.paused.reason === 'disk-error') logger.error({ ...c, store: paths.store }, 'desktop VM paused: its disk reported an I/O error; fix the disk, then start the desktop to retry');
      else logger.info(c, 'desktop VM paused');
    });
    unwatch = () => {
      unwatchExits();
      unwatchPauses();
    };

    // An upload a device abandoned would hold its pieces on disk forever: swept now and every hour.
    const uploads = transfer;
    const sweepUploads = async (): Promise<void> => {
      try {
        const cutoff = deps.clock.now() - config.transfer.uploadTtlSeconds * 1000;
        for (const u of await uploads.expireUploads(cutoff)) logger.info(u, 'abandoned upload removed');
      } catch (err) {
        logger.warn({ err }, 'removing abandoned uploads failed');
      }
    };
    await sweepUploads();
    sweeper = setInterval(() => void sweepUploads(), UPLOAD_SWEEP_MS);
    sweeper.unref();

    app = await buildApp(deps, tls === undefined ? {} : { tls });
    const { host, port } = parseListen(config.listen);
    const url = await app.listen({ host, port });
    if (tls !== undefined) logTls(logger, tls, 'serving HTTPS');
    else if (!isLoopbackHost(host) && !config.trustProxy) {
      logger.warn({ listen: config.listen }, 'serving plain HTTP beyond this machine: passwords, tokens and disks travel unencrypted; give --tls-cert and --tls-key, or put a TLS reverse proxy in front');
    }

    let closing: Promise<void> | undefined;
    let resolveClosed: () => void = () => {};
    const closed = new Promise<void>((resolve) => (resolveClosed = resolve));
    const listening = app;
    const reloadTls = async (): Promise<TlsCredentials> => {
      if (config.tls === undefined) throw new ConfigError('no TLS to reload: the server was started without tls', { issues: [{ path: '/tls', message: 'not set' }] });
      const fresh = await loadTlsCredentials(config.tls);
      (listening.server as HttpsServer).setSecureContext({ cert: fresh.cert, key: fresh.key });
      logTls(logger, fresh, 'TLS certificate reloaded');
      return fresh;
    };
    const onHangup = () => {
      if (config.tls === undefined) return logger.info('SIGHUP: nothing to reload (no TLS configured)');
      reloadTls().catch((err: unknown) => logger.error({ err }, 'TLS reload failed; the previous certificate stays in use'));
    };
    const onSignal = (signal: NodeJS.Signals) => {
      logger.info({ signal }, 'shutting down');
      close().catch((err: unknown) => logger.error({ err }, 'shutdown failed'));
    };
    const close = (): Promise<void> =>
      (closing ??= (async () => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        process.off('SIGHUP', onHangup);
        unwatch?.();
        clearInterval(sweeper);
        try {
          await listening.close();
        } finally {
          // Detached VMs keep running; the next start re-adopts them (reconcile).
          await runtime?.close?.().catch((err: unknown) => logger.error({ err }, 'runtime close failed'));
          await transfer?.close().catch((err: unknown) => logger.error({ err }, 'transfer close failed'));
          await db.destroy();
          resolveClosed();
        }
      })());
    if (options.handleSignals !== false) {
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      process.on('SIGHUP', onHangup);
    }

    const adminContext = createContext(deps);
    const adminSession = () => openAdminSession(adminContext);
    const handle: ServerHandle = { app, config, url, reconciled, close, closed, adminSession, reloadTls };
    if (admin.generatedPassword !== undefined) handle.initialAdminPassword = admin.generatedPassword;
    return handle;
  } catch (err) {
    unwatch?.();
    clearInterval(sweeper);
    await app?.close().catch(() => {});
    await runtime?.close?.().catch(() => {});
    await transfer?.close().catch(() => {});
    await db.destroy().catch(() => {});
    throw err;
  }
}

const EXPIRY_WARNING_MS = 14 * 24 * 3600_000;

/** One line saying which certificate is served, and a warning when it expires soon (or has). */
function logTls(logger: FastifyBaseLogger, tls: TlsCredentials, message: string): void {
  const left = tls.validTo.getTime() - Date.now();
  const fields = { subject: tls.subject, validTo: tls.validTo.toISOString() };
  if (left <= 0) logger.error(fields, `${message}: the certificate has EXPIRED; devices will refuse to connect`);
  else if (left < EXPIRY_WARNING_MS) logger.warn({ ...fields, daysLeft: Math.floor(left / 86_400_000) }, `${message}: the certificate expires soon`);
  else logger.info(fields, message);
}
