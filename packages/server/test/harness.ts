// A real app over a real SQLite database in a temp dir, with fake store/runtime/clock/ids.

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import type { Kysely } from 'kysely';
import { Store } from '@roamdesk/store';
import { pino } from 'pino';
import { buildApp } from '../src/app.ts';
import { ensureInitialAdmin } from '../src/auth/bootstrap.ts';
import { argon2Hasher } from '../src/auth/password.ts';
import { dataPaths, parseConfig, type ServerConfig } from '../src/config.ts';
import type { AppDeps } from '../src/context.ts';
import { migrateToLatest } from '../src/db/migrations.ts';
import type { Database } from '../src/db/schema.ts';
import { openSqlite } from '../src/db/sqlite.ts';
import type { PasswordHasher } from '../src/ports.ts';
import { ManifestCache } from '@roamdesk/transfer';
import { transferAdapter } from '../src/runtime/transfer-adapter.ts';
import { FakeClock, FakeRuntime, FakeStore, SeqIds } from './fakes.ts';

export const ADMIN_PASSWORD = 'admin-password';
export const USER_PASSWORD = 'user-password';

/** argon2id with tiny costs: the real algorithm, fast enough for hundreds of logins in tests. */
export const testHasher = argon2Hasher({ memoryKiB: 256, iterations: 1, parallelism: 1 });

export interface TestApp {
  app: FastifyInstance;
  db: Kysely<Database>;
  store: FakeStore;
  runtime: FakeRuntime;
  clock: FakeClock;
  ids: SeqIds;
  hasher: PasswordHasher & { verifyCalls: number };
  config: ServerConfig;
  dir: string;
  adminToken: string;
  request(method: InjectOptions['method'], url: string, opts?: { token?: string; body?: unknown; headers?: Record<string, string> }): Promise<LightMyRequestResponse>;
  login(user: string, password: string): Promise<string>;
  createUser(name: string, role?: 'admin' | 'user'): Promise<string>;
  /** Write a file and import it as an image through the API. */
  importImage(name: string, content?: string): Promise<LightMyRequestResponse>;
  createDesktop(name: string, owner: string, image: string, extra?: Record<string, unknown>): Promise<LightMyRequestResponse>;
  close(): Promise<void>;
}

export async function createTestApp(
  configOverrides: Record<string, unknown> = {},
  options: { db?: Kysely<Database> } = {},
): Promise<TestApp> {
  const dir = await mkdtemp(join(tmpdir(), 'roamdesk-test-'));
  const config = parseConfig({ dataDir: dir, logLevel: 'silent', ...configOverrides }, {});
  const paths = dataPaths(dir);
  for (const d of [paths.store, paths.vms, paths.uploads]) await mkdir(d, { recursive: true });
  const db = options.db ?? openSqlite(paths.database);
  await migrateToLatest(db);
  const clock = new FakeClock();
  const ids = new SeqIds();
  const store = new FakeStore();
  store.root = paths.store;
  const runtime = new FakeRuntime();
  const hasher = {
    verifyCalls: 0,
    hash: (p: string) => testHasher.hash(p),
    verify(h: string, p: string) {
      this.verifyCalls += 1;
      return testHasher.verify(h, p);
    },
  };
  // A real transfer engine over a real (initially empty) store: object endpoints are tested against real bytes.
  const transfer = transferAdapter(await Store.open(paths.store), new ManifestCache(paths.manifests));
  const deps: AppDeps = { db, store, transfer, runtime, clock, ids, hasher, config, logger: pino({ level: 'silent' }) };
  await ensureInitialAdmin(deps, ADMIN_PASSWORD);
  const app = await buildApp(deps);

  const request: TestApp['request'] = (method, url, opts = {}) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token !== undefined) headers['authorization'] = `Bearer ${opts.token}`;
    const o: InjectOptions = { url, headers };
    if (method !== undefined) o.method = method;
    if (opts.body !== undefined) o.payload = opts.body as NonNullable<InjectOptions['payload']>;
    return app.inject(o);
  };
  const login = async (user: string, password: string) => {
    const r = await request('POST', '/api/v1/auth/login', { body: { user, password } });
    if (r.statusCode !== 200) throw new Error(`login ${user} failed: ${r.statusCode} ${r.body}`);
    return r.json<{ token: string }>().token;
  };
  const adminToken = await login('admin', ADMIN_PASSWORD);

  const t: TestApp = {
    app, db, store, runtime, clock, ids, hasher, config, dir, adminToken, request, login,
    async createUser(name, role = 'user') {
      const r = await request('POST', '/api/v1/users', { token: adminToken, body: { name, password: USER_PASSWORD, role } });
      if (r.statusCode !== 201) throw new Error(`create user ${name}: ${r.statusCode} ${r.body}`);
      return login(name, USER_PASSWORD);
    },
    async importImage(name, content = `image ${name}`) {
      const file = join(dir, `src-${name}.img`);
      await writeFile(file, content);
      return request('POST', '/api/v1/images', { token: adminToken, body: { name, path: file, format: 'raw' } });
    },
    createDesktop(name, owner, image, extra = {}) {
      return request('POST', '/api/v1/desktops', { token: adminToken, body: { name, owner, image, ...extra } });
    },
    async close() {
      await app.close();
      await db.destroy();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return t;
}

/** The error code of a response, asserting the one error shape on the way. */
export function errorCode(r: LightMyRequestResponse): string {
  const body = r.json<{ error?: { code?: unknown; message?: unknown } }>();
  if (typeof body.error?.code !== 'string' || typeof body.error.message !== 'string') {
    throw new Error(`not the error shape: ${r.body.slice(0, 300)}`);
  }
  return body.error.code;
}
