import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { ConfigError, defaultDataDir, isLoopbackHost, parseConfig, parseListen } from '../src/config.ts';
import { startServer } from '../src/server.ts';
import { FakeRuntime, FakeStore } from './fakes.ts';
import { testHasher } from './harness.ts';

/** A raw request: Node's client sends the path exactly as given (no dot-segment resolution). */
function raw(url: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, path, method: 'GET', headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('config', () => {
  it('fills defaults and derives the data dir from XDG or HOME', () => {
    const c = parseConfig({}, { HOME: '/home/u' });
    assert.equal(c.listen, '127.0.0.1:8760');
    assert.equal(c.dataDir, '/home/u/.local/share/roamdesk');
    assert.equal(c.tokenTtlSeconds, 43200);
    assert.equal(c.login.maxAttemptsPerUser, 10);
    assert.equal(c.passwordHash.memoryKiB, 19456);
    assert.equal(parseConfig({}, { XDG_DATA_HOME: '/x', HOME: '/home/u' }).dataDir, '/x/roamdesk');
    assert.equal(defaultDataDir({ XDG_DATA_HOME: 'relative', HOME: '/h' }), '/h/.local/share/roamdesk');
    assert.equal(parseConfig({}, { HOME: '/h', ROAMDESK_ADMIN_PASSWORD: 'from-env-123' }).adminPassword, 'from-env-123');
    assert.deepEqual(parseListen('[::1]:9000'), { host: '::1', port: 9000 });
  });

  it('refuses unknown keys, bad values and a missing data dir with every issue listed', () => {
    assert.throws(() => parseConfig({ dataDir: '/d', lsiten: 'x' }, {}), ConfigError);
    assert.throws(() => parseConfig({ dataDir: '/d', listen: 'no-port' }, {}), ConfigError);
    assert.throws(() => parseConfig({ dataDir: '/d', listen: 'h:70000' }, {}), ConfigError);
    assert.throws(() => parseConfig({ dataDir: '/d', tokenTtlSeconds: 5 }, {}), ConfigError);
    assert.throws(() => parseConfig({ dataDir: '/d', adminPassword: 'short' }, {}), ConfigError);
    assert.throws(() => parseConfig({}, {}), (e: unknown) => e instanceof ConfigError && e.data.issues.some((i) => i.message.includes('dataDir')));
    assert.throws(() => parseConfig('nope', {}), ConfigError);
  });

  it('tells loopback listen hosts (plain HTTP is fine there) from the others (the server warns)', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', 'localhost']) assert.equal(isLoopbackHost(host), true, host);
    for (const host of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.5', 'desk.example.org', '127.0.0.1.example.org']) assert.equal(isLoopbackHost(host), false, host);
  });

  it('refuses a data directory too long for the VMs\' UNIX sockets, saying by how much', () => {
    // <data>/vms/<36-char id>/qmp.sock must fit 107 bytes: 107 - 4 - 37 - 9 = 57 bytes of data dir at most.
    const fits = `/${'d'.repeat(56)}`;
    assert.equal(parseConfig({ dataDir: fits }, {}).dataDir, fits);
    assert.throws(() => parseConfig({ dataDir: `${fits}x` }, {}), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.data.issues[0]?.path, '/dataDir');
      assert.match(e.message, /is 1 byte too long.*choose a shorter data directory/);
      return true;
    });
  });
});

describe('startServer', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'roamdesk-srv-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const start = (runtime = new FakeRuntime(), extra: Record<string, unknown> = {}) =>
    startServer(
      { dataDir: dir, listen: '127.0.0.1:0', logLevel: 'silent', ...extra },
      { store: new FakeStore(), runtime, hasher: testHasher, logger: pino({ level: 'silent' }), handleSignals: false },
    );

  it('creates the data layout and a first admin with a generated password, shown once', async () => {
    await writeFile(join(dir, 'stale'), '');
    const s = await start();
    try {
      assert.match(s.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.ok(s.initialAdminPassword !== undefined && s.initialAdminPassword.length >= 20);
      for (const d of ['store', 'vms', 'uploads']) assert.ok((await stat(join(dir, d))).isDirectory());
      assert.equal((await stat(dir)).mode & 0o777, 0o700);
      assert.ok((await readdir(dir)).includes('roamdesk.db'));

      const login = await fetch(`${s.url}/api/v1/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: 'admin', password: s.initialAdminPassword }),
      });
      assert.equal(login.status, 200);
      const { token } = (await login.json()) as { token: string };
      const me = await fetch(`${s.url}/api/v1/me`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(((await me.json()) as { user: { role: string } }).user.role, 'admin');

      // Dot segments sent raw over the socket never become a name.
      for (const path of ['/api/v1/desktops/..', '/api/v1/desktops/%2e%2e', '/api/v1/desktops/%2e%2e/start', '/api/v1/images/.%2e', '/api/v1/desktops/%00']) {
        const r = await raw(s.url, path, { authorization: `Bearer ${token}` });
        assert.ok(r.status === 400 || r.status === 404, `${path}: ${r.status}`);
        assert.match(r.body, /"code":"(VALIDATION_FAILED|NOT_FOUND)"/);
      }
      const docs = await fetch(`${s.url}/docs/json`);
      assert.equal(docs.status, 200);
      assert.ok(((await docs.json()) as { paths: Record<string, unknown> }).paths['/api/v1/desktops/{name}/start'] !== undefined);
    } finally {
      await s.close();
      await s.close(); // idempotent
      await s.closed;
    }
  });

  it('on the next start: no new admin, stale uploads removed, and desktop states reconciled', async () => {
    // Make a desktop that the database believes is running, with no VM behind it.
    const first = await start();
    const { token } = (await (
      await fetch(`${first.url}/api/v1/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: 'admin', password: 'ignored-password' }),
      })
    ).json()) as { token?: string };
    assert.equal(token, undefined, 'the configured password does not replace the existing admin');
    await first.close();

    const { openSqlite } = await import('../src/db/sqlite.ts');
    const db = openSqlite(join(dir, 'roamdesk.db'));
    const admin = await db.selectFrom('users').select('id').where('name', '=', 'admin').executeTakeFirstOrThrow();
    const at = new Date().toISOString();
    await db.insertInto('images').values({ id: 'b'.repeat(64), name: 'img', format: 'raw', size: 1, virtual_size: 1, created_at: at, created_by: admin.id }).execute();
    for (const [id, name, state] of [
      ['00000000-0000-4000-8000-0000000000a1', 'ghost', 'running'],
      ['00000000-0000-4000-8000-0000000000a2', 'alive', 'stopped'],
    ] as const) {
      await db.insertInto('desktops').values({
        id, name, owner_id: admin.id, image_id: 'b'.repeat(64), memory_mib: 64, cpus: 1, kernel: null, initrd: null, append: null,
        state, location: 'server', lease_generation: 1, top_object_id: 'b'.repeat(64), overlay_path: null, created_at: at, updated_at: at,
      }).execute();
    }
    await db.destroy();
    await writeFile(join(dir, 'uploads', 'leftover.upload'), 'partial');

    const runtime = new FakeRuntime();
    runtime.reconcileReport = new Map([['00000000-0000-4000-8000-0000000000a2', { state: 'running' }]]);
    const second = await start(runtime, { adminPassword: 'ignored-password' });
    try {
      assert.equal(second.initialAdminPassword, undefined);
      assert.deepEqual(await readdir(join(dir, 'uploads')), []);
      assert.deepEqual(
        second.reconciled.map((c) => [c.desktop, c.from, c.to]).sort(),
        [['alive', 'stopped', 'running'], ['ghost', 'running', 'stopped']],
      );
      assert.deepEqual(runtime.calls, ['reconcile 2']);
    } finally {
      await second.close();
    }
  });

  it('a bad configuration fails before anything is opened', async () => {
    await assert.rejects(
      startServer({ dataDir: dir, listen: 'nope' }, { store: new FakeStore(), runtime: new FakeRuntime(), handleSignals: false }),
      ConfigError,
    );
  });
});
