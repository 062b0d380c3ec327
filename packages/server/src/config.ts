// Server configuration: one TypeBox schema with defaults. The CLI builds a plain object from flags and the
// environment and calls parseConfig(); unknown keys are refused so a typo does not silently fall back to
// a default.

import { isAbsolute, join, resolve } from 'node:path';
import { MAX_SOCKET_PATH_BYTES, socketPathExcess } from '@roamdesk/qemu';
import { Type, type Static } from 'typebox';
import { Value } from 'typebox/value';

const LISTEN_PATTERN = '^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9.-]+):[0-9]{1,5}$';

export const ServerConfigSchema = Type.Object(
  {
    /** `HOST:PORT` (IPv6 as `[::1]:8760`). Loopback by default: exposing the server is a deliberate choice. */
    listen: Type.String({ pattern: LISTEN_PATTERN, default: '127.0.0.1:8760' }),
    /** Holds roamdesk.db, store/, vms/, uploads/. Default: $XDG_DATA_HOME/roamdesk or ~/.local/share/roamdesk. */
    dataDir: Type.String({ minLength: 1, maxLength: 4096 }),
    /** Password for the `admin` user created on first start; generated (and returned once) when absent. */
    adminPassword: Type.Optional(Type.String({ minLength: 8, maxLength: 1024 })),
    /** Session token lifetime. */
    tokenTtlSeconds: Type.Integer({ minimum: 60, maximum: 30 * 24 * 3600, default: 12 * 3600 }),
    login: Type.Object(
      {
        /** Login attempts per user name per window (counts attempts, successful ones reset the name's count). */
        maxAttemptsPerUser: Type.Integer({ minimum: 1, default: 10 }),
        /** Login attempts per client address per window, whatever the user name. */
        maxAttemptsPerIp: Type.Integer({ minimum: 1, default: 50 }),
        windowSeconds: Type.Integer({ minimum: 1, default: 300 }),
      },
      { default: {}, additionalProperties: false },
    ),
    /** Largest image upload accepted through `PUT /images/:name/content`. */
    uploadMaxBytes: Type.Integer({ minimum: 1, default: 256 * 1024 ** 3 }),
    /** Graceful power-down time before the VM is killed. */
    stopTimeoutMs: Type.Integer({ minimum: 0, default: 60_000 }),
    logLevel: Type.Union(
      ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
      { default: 'info' },
    ),
    /** argon2id costs. The defaults are OWASP's minimum (19 MiB, 2 passes); raise them on a big server. */
    passwordHash: Type.Object(
      {
        memoryKiB: Type.Integer({ minimum: 8, default: 19_456 }),
        iterations: Type.Integer({ minimum: 1, default: 2 }),
        parallelism: Type.Integer({ minimum: 1, maximum: 16, default: 1 }),
      },
      { default: {}, additionalProperties: false },
    ),
    /**
     * Serve HTTPS: a PEM certificate (the leaf first, then any intermediates) and its PEM private key. Both are
     * re-read on SIGHUP, so a renewed certificate needs no restart. Without it the server speaks plain HTTP, fit
     * for loopback or behind a TLS-terminating reverse proxy.
     */
    tls: Type.Optional(
      Type.Object(
        { certFile: Type.String({ minLength: 1, maxLength: 4096 }), keyFile: Type.String({ minLength: 1, maxLength: 4096 }) },
        { additionalProperties: false },
      ),
    ),
    /** Trust X-Forwarded-For (only behind a reverse proxy): it decides which address login limits count. */
    trustProxy: Type.Boolean({ default: false }),
    /** Object transfers between the server and devices. */
    transfer: Type.Object(
      {
        /**
         * An upload (replicate, check-in) nobody added to for this long is deleted with its pieces: the device
         * went away for good, or will start that object again. As long as the offline lease by default.
         */
        uploadTtlSeconds: Type.Integer({ minimum: 3600, maximum: 366 * 24 * 3600, default: 7 * 24 * 3600 }),
        /** Uploads one user may have in progress at once (a check-in sends at most lease.maxChainLength + 1 layers). */
        maxUploadsPerUser: Type.Integer({ minimum: 1, maximum: 10_000, default: 64 }),
      },
      { default: {}, additionalProperties: false },
    ),
    /** Lease policy (check-out, offline use, rollback). */
    lease: Type.Object(
      {
        /** Maximum time a device may use a checked-out desktop without contacting the server (View's default: 7 days). */
        maxOfflineSeconds: Type.Integer({ minimum: 60, maximum: 366 * 24 * 3600, default: 7 * 24 * 3600 }),
        /** Owners may roll back their own desktops (admins always may). */
        allowUserRollback: Type.Boolean({ default: true }),
        /** The lease holder compacts a chain holding more layers than this (sent with every lease answer). */
        maxChainLength: Type.Integer({ minimum: 1, maximum: 1024, default: 16 }),
        /**
         * Scheduled replication of checked-out desktops: seconds from the start of one replication to the next while
         * the local VM runs and the server is reachable. 0 (the default, as View's "No replication") = only when the
         * user asks.
         */
        replicateEverySeconds: Type.Integer({ minimum: 0, maximum: 366 * 24 * 3600, default: 0 }),
      },
      { default: {}, additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
export type ServerConfig = Static<typeof ServerConfigSchema>;

export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
  constructor(
    message: string,
    readonly data: { issues: ReadonlyArray<{ path: string; message: string }> },
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'ConfigError';
  }
}

/** Where the data lives by default (XDG base directory spec: a relative XDG_DATA_HOME is ignored). */
export function defaultDataDir(env: Readonly<Record<string, string | undefined>>): string | undefined {
  const xdg = env['XDG_DATA_HOME'];
  if (xdg !== undefined && isAbsolute(xdg)) return join(xdg, 'roamdesk');
  const home = env['HOME'];
  if (home !== undefined && isAbsolute(home)) return join(home, '.local', 'share', 'roamdesk');
  return undefined;
}

/**
 * Validate and complete a configuration. `env` supplies the data-dir default and ROAMDESK_ADMIN_PASSWORD
 * when the input has none. Throws ConfigError listing every problem.
 */
export function parseConfig(input: unknown, env: Readonly<Record<string, string | undefined>> = process.env): ServerConfig {
  if (input !== undefined && (typeof input !== 'object' || input === null || Array.isArray(input))) {
    throw new ConfigError('invalid configuration: must be an object', { issues: [{ path: '', message: 'must be an object' }] });
  }
  const base: Record<string, unknown> = { ...(input as Record<string, unknown> | undefined) };
  if (base['dataDir'] === undefined) {
    const dir = defaultDataDir(env);
    if (dir !== undefined) base['dataDir'] = dir;
  }
  const adminPassword = env['ROAMDESK_ADMIN_PASSWORD'];
  if (base['adminPassword'] === undefined && adminPassword !== undefined && adminPassword !== '') {
    base['adminPassword'] = adminPassword;
  }
  const withDefaults = Value.Default(ServerConfigSchema, base);
  if (!Value.Check(ServerConfigSchema, withDefaults)) {
    const issues = [...Value.Errors(ServerConfigSchema, withDefaults)].map((e) => ({ path: e.instancePath, message: e.message }));
    throw new ConfigError(`invalid configuration: ${issues.map((i) => `${i.path || '/'} ${i.message}`).join('; ')}`, { issues });
  }
  const config = Value.Parse(ServerConfigSchema, withDefaults);
  const port = parseListen(config.listen).port;
  if (port > 65535) throw new ConfigError('invalid configuration: port out of range', { issues: [{ path: '/listen', message: 'port must be 0..65535' }] });
  const dataDir = resolve(config.dataDir);
  // Each VM's QMP and VNC sockets live in <data>/vms/<desktop id>/: sockaddr_un holds 107 bytes of path.
  const excess = socketPathExcess(join(dataPaths(dataDir).vms, '00000000-0000-0000-0000-000000000000'));
  if (excess > 0) {
    const message = `${dataDir} is ${excess} byte${excess === 1 ? '' : 's'} too long: the VMs' UNIX sockets (vms/<desktop id>/qmp.sock) must fit in ${MAX_SOCKET_PATH_BYTES} bytes; choose a shorter data directory`;
    throw new ConfigError(`invalid configuration: /dataDir ${message}`, { issues: [{ path: '/dataDir', message }] });
  }
  const tls = config.tls === undefined ? {} : { tls: { certFile: resolve(config.tls.certFile), keyFile: resolve(config.tls.keyFile) } };
  return { ...config, dataDir, ...tls };
}

/** Split `HOST:PORT` (or `[v6]:PORT`). */
export function parseListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  const rawHost = listen.slice(0, i);
  const host = rawHost.startsWith('[') && rawHost.endsWith(']') ? rawHost.slice(1, -1) : rawHost;
  return { host, port: Number(listen.slice(i + 1)) };
}

/** Whether a listen host is reachable from this machine only (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** The data directory layout. Only these functions know it. */
export interface DataPaths {
  root: string;
  database: string;
  store: string;
  vms: string;
  uploads: string;
  /** Cached transfer manifests (derived from immutable objects; safe to delete). */
  manifests: string;
  /** The Ed25519 private key that signs offline grants (PEM, mode 0600, made on first start). */
  grantKey: string;
}

export function dataPaths(dataDir: string): DataPaths {
  return {
    root: dataDir,
    database: join(dataDir, 'roamdesk.db'),
    store: join(dataDir, 'store'),
    vms: join(dataDir, 'vms'),
    uploads: join(dataDir, 'uploads'),
    manifests: join(dataDir, 'manifests'),
    grantKey: join(dataDir, 'grant-key.pem'),
  };
}
