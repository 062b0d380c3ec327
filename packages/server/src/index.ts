// @roamdesk/server: the broker. buildApp(deps) is the HTTP API without a socket (tests, embedding);
// startServer(config, options) is the main job the CLI runs.

export { buildApp, createContext, API_VERSION } from './app.ts';
export { startServer, systemClock, randomIds, type StartOptions, type ServerHandle } from './server.ts';
export type { AdminSession } from './services/admin-session.ts';
export { createLogger, prettyLine } from './logger.ts';
export { QemuRuntime, type QemuRuntimeOptions } from './runtime/qemu-runtime.ts';
export { findQemuProcesses, type QemuProcess } from './runtime/proc-scan.ts';
export { storeAdapter } from './runtime/store-adapter.ts';
export {
  ServerConfigSchema,
  parseConfig,
  parseListen,
  defaultDataDir,
  dataPaths,
  ConfigError,
  type ServerConfig,
  type DataPaths,
} from './config.ts';
export type { AppDeps, AppContext } from './context.ts';
export type {
  Clock,
  Ids,
  ObjectStore,
  ImportedObject,
  DesktopRuntime,
  RuntimeDesktop,
  RuntimeStatus,
  PasswordHasher,
} from './ports.ts';
export { argon2Hasher, type Argon2Costs } from './auth/password.ts';
export { ensureInitialAdmin, INITIAL_ADMIN_NAME, type BootstrapResult } from './auth/bootstrap.ts';
export { migrateToLatest, MIGRATIONS, MigrationError } from './db/migrations.ts';
export { openSqlite } from './db/sqlite.ts';
export { openPostgres, type PostgresOptions } from './db/postgres.ts';
export type { Database } from './db/schema.ts';
export { reconcileDesktops, type ReconcileChange } from './services/reconcile.ts';
