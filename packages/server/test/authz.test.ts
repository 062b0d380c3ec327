// The authorization matrix: every endpoint × (no token, expired token, revoked token, non-admin on admin
// endpoints, another user's desktop). Each cell must give the same uniform answer, and nothing may happen.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hashToken } from '../src/auth/secrets.ts';
import { createTestApp, errorCode, type TestApp, USER_PASSWORD } from './harness.ts';

interface Endpoint {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** `{d}` is replaced by a desktop name. */
  url: string;
  admin: boolean;
  /** Acts on one desktop named in the URL. */
  desktop: boolean;
  body?: unknown;
  octet?: boolean;
  /** Answers 200 only with real objects in the store. */
  realObjects?: boolean;
  /** Which bearer the route takes: only a device credential, or only a session token. */
  credential?: 'device' | 'session';
}

const OBJ = 'd'.repeat(64);
const UPLOAD = 'e'.repeat(32);
const DEVICE = '00000000-0000-4000-8000-00000000d001';
const OPERATION = '00000000-0000-4000-8000-00000000f001';
const PROGRESS = { phase: 'download', bytesDone: 1, bytesTotal: 2, bytesOnWire: 1, bytesSaved: 0, rateBytesPerSec: 1, etaSeconds: 1 };

const ENDPOINTS: Endpoint[] = [
  { method: 'GET', url: '/api/v1/me', admin: false, desktop: false },
  { method: 'POST', url: '/api/v1/auth/logout', admin: false, desktop: false },
  { method: 'GET', url: '/api/v1/users', admin: true, desktop: false },
  { method: 'POST', url: '/api/v1/users', admin: true, desktop: false, body: { name: 'zed', password: 'longenough' } },
  { method: 'GET', url: '/api/v1/users/alice', admin: true, desktop: false },
  { method: 'DELETE', url: '/api/v1/users/alice', admin: true, desktop: false },
  { method: 'GET', url: '/api/v1/images', admin: false, desktop: false },
  { method: 'GET', url: '/api/v1/images/base', admin: false, desktop: false },
  { method: 'POST', url: '/api/v1/images', admin: true, desktop: false, body: { name: 'img2', path: '/etc/hostname' } },
  { method: 'PUT', url: '/api/v1/images/img3/content', admin: true, desktop: false, octet: true },
  { method: 'POST', url: '/api/v1/images/base/versions', admin: true, desktop: false, body: { path: '/etc/hostname' } },
  { method: 'PUT', url: '/api/v1/images/base/versions', admin: true, desktop: false, octet: true },
  { method: 'DELETE', url: '/api/v1/images/base', admin: true, desktop: false },
  { method: 'GET', url: '/api/v1/desktops', admin: false, desktop: false },
  { method: 'POST', url: '/api/v1/desktops', admin: true, desktop: false, body: { name: 'new', owner: 'bob', image: 'base' } },
  { method: 'GET', url: '/api/v1/desktops/{d}', admin: false, desktop: true },
  { method: 'DELETE', url: '/api/v1/desktops/{d}', admin: true, desktop: true },
  { method: 'POST', url: '/api/v1/desktops/{d}/start', admin: false, desktop: true },
  { method: 'POST', url: '/api/v1/desktops/{d}/stop', admin: false, desktop: true },
  { method: 'POST', url: '/api/v1/desktops/{d}/restart', admin: false, desktop: true },
  { method: 'GET', url: '/api/v1/desktops/{d}/log', admin: false, desktop: true },
  { method: 'GET', url: '/api/v1/desktops/{d}/export', admin: false, desktop: true },
  { method: 'POST', url: '/api/v1/desktops/{d}/console', admin: false, desktop: true },
  { method: 'GET', url: '/api/v1/events?desktop={d}', admin: false, desktop: true },
  // The desktop's chain needs real objects (the fake store has none): owner access is tested in e2e/transfer.
  { method: 'GET', url: '/api/v1/desktops/{d}/objects', admin: false, desktop: true, realObjects: true },
  // Object and upload endpoints: their per-object authorization is tested in test/e2e/transfer.test.ts.
  { method: 'GET', url: `/api/v1/objects/${OBJ}`, admin: false, desktop: false },
  { method: 'GET', url: `/api/v1/objects/${OBJ}/manifest`, admin: false, desktop: false },
  { method: 'GET', url: `/api/v1/objects/${OBJ}/pieces?first=0&count=1`, admin: false, desktop: false },
  { method: 'POST', url: '/api/v1/uploads', admin: false, desktop: false, body: { manifest: {} } },
  { method: 'GET', url: `/api/v1/uploads/${UPLOAD}`, admin: false, desktop: false },
  { method: 'PUT', url: `/api/v1/uploads/${UPLOAD}/pieces`, admin: false, desktop: false, octet: true },
  { method: 'POST', url: `/api/v1/uploads/${UPLOAD}/complete`, admin: false, desktop: false },
  { method: 'DELETE', url: `/api/v1/uploads/${UPLOAD}`, admin: false, desktop: false },
  // Devices and leases (issue 5). Lease calls are made by a device: a session token is refused (tested below).
  { method: 'POST', url: '/api/v1/devices', admin: false, desktop: false, body: { name: 'laptop' }, credential: 'session' },
  { method: 'GET', url: '/api/v1/devices', admin: false, desktop: false },
  { method: 'DELETE', url: `/api/v1/devices/${DEVICE}`, admin: false, desktop: false },
  { method: 'POST', url: '/api/v1/devices/heartbeat', admin: false, desktop: false, body: { leases: [] }, credential: 'device' },
  { method: 'GET', url: '/api/v1/grant-key', admin: false, desktop: false },
  { method: 'POST', url: '/api/v1/desktops/{d}/checkout', admin: false, desktop: true, credential: 'device' },
  { method: 'POST', url: '/api/v1/desktops/{d}/checkout/confirm', admin: false, desktop: true, body: { generation: 2 }, credential: 'device' },
  { method: 'POST', url: '/api/v1/desktops/{d}/checkout/cancel', admin: false, desktop: true, body: { generation: 2 }, credential: 'device' },
  { method: 'POST', url: '/api/v1/desktops/{d}/replicate', admin: false, desktop: true, body: { generation: 2, top: OBJ }, credential: 'device' },
  { method: 'POST', url: '/api/v1/desktops/{d}/checkin', admin: false, desktop: true, body: { generation: 2, top: OBJ }, credential: 'device' },
  { method: 'POST', url: '/api/v1/desktops/{d}/operations', admin: false, desktop: true, body: { kind: 'replicate', generation: 2 }, credential: 'device' },
  { method: 'POST', url: '/api/v1/desktops/{d}/rollback', admin: false, desktop: true },
  { method: 'GET', url: '/api/v1/desktops/{d}/lease', admin: false, desktop: true },
  { method: 'GET', url: '/api/v1/operations?desktop={d}', admin: false, desktop: true },
  { method: 'GET', url: `/api/v1/operations/${OPERATION}`, admin: false, desktop: false },
  { method: 'POST', url: `/api/v1/operations/${OPERATION}/progress`, admin: false, desktop: false, body: PROGRESS, credential: 'device' },
  { method: 'POST', url: `/api/v1/operations/${OPERATION}/finish`, admin: false, desktop: false, body: { state: 'failed' }, credential: 'device' },
];

describe('authorization matrix', () => {
  let t: TestApp;
  let bob: string;
  let expired: string;
  let revoked: string;
  /** Bob's device credential, and a revoked one. */
  let bobDevice: string;
  let revokedDevice: string;

  const call = (e: Endpoint, token: string | undefined, desktop = 'alice-desk') => {
    const headers: Record<string, string> = e.octet === true ? { 'content-type': 'application/octet-stream' } : {};
    const opts: { token?: string; body?: unknown; headers: Record<string, string> } = { headers };
    if (token !== undefined) opts.token = token;
    if (e.body !== undefined) opts.body = e.body;
    if (e.octet === true) opts.body = Buffer.from('bytes');
    return t.request(e.method, e.url.replace('{d}', desktop), opts);
  };

  /** What may not change when a request is refused. */
  const snapshot = async () => ({
    runtime: [...t.runtime.calls],
    store: [...t.store.calls],
    desktops: await t.db.selectFrom('desktops').selectAll().orderBy('name').execute(),
    devices: await t.db.selectFrom('devices').select(['id', 'name', 'revoked_at']).orderBy('id').execute(),
    operations: await t.db.selectFrom('operations').selectAll().orderBy('id').execute(),
    users: (await t.db.selectFrom('users').select('name').orderBy('name').execute()).map((u) => u.name),
    images: (await t.db.selectFrom('images').select('name').orderBy('name').execute()).map((i) => i.name),
  });

  before(async () => {
    t = await createTestApp();
    await t.createUser('alice');
    bob = await t.createUser('bob');
    assert.equal((await t.importImage('base')).statusCode, 201);
    assert.equal((await t.createDesktop('alice-desk', 'alice', 'base')).statusCode, 201);
    assert.equal((await t.createDesktop('bob-desk', 'bob', 'base')).statusCode, 201);
    expired = await t.login('bob', USER_PASSWORD);
    await t.db.updateTable('tokens').set({ expires_at: '2000-01-01T00:00:00.000Z' }).where('token_hash', '=', hashToken(expired)).execute();
    assert.equal(errorCode(await t.request('GET', '/api/v1/me', { token: expired })), 'TOKEN_EXPIRED');
    revoked = await t.login('bob', USER_PASSWORD);
    assert.equal((await t.request('POST', '/api/v1/auth/logout', { token: revoked })).statusCode, 204);
    const register = async () => {
      const r = await t.request('POST', '/api/v1/devices', { token: bob, body: { name: 'bob-laptop' } });
      assert.equal(r.statusCode, 201, r.body);
      return r.json<{ device: { id: string }; credential: string }>();
    };
    bobDevice = (await register()).credential;
    const gone = await register();
    revokedDevice = gone.credential;
    assert.equal((await t.request('DELETE', `/api/v1/devices/${gone.device.id}`, { token: bob })).statusCode, 204);
  });
  after(() => t.close());

  for (const [label, token, status, code] of [
    ['no token', () => undefined, 401, 'AUTH_REQUIRED'],
    ['expired token', () => expired, 401, 'TOKEN_EXPIRED'],
    ['revoked token', () => revoked, 401, 'AUTH_INVALID'],
    ['garbage token', () => 'rdt_' + 'x'.repeat(43), 401, 'AUTH_INVALID'],
    ['garbage device credential', () => 'rdd_' + 'x'.repeat(43), 401, 'AUTH_INVALID'],
    ['revoked device credential', () => revokedDevice, 403, 'DEVICE_REVOKED'],
  ] as const) {
    it(`${label}: every endpoint answers ${status} ${code} and nothing happens`, async () => {
      const before = await snapshot();
      for (const e of ENDPOINTS) {
        const r = await call(e, token());
        assert.equal(r.statusCode, status, `${e.method} ${e.url}`);
        assert.equal(errorCode(r), code, `${e.method} ${e.url}`);
      }
      assert.deepEqual(await snapshot(), before);
    });
  }

  it('non-admin on admin endpoints: 403 FORBIDDEN, whatever the target, and nothing happens', async () => {
    const before = await snapshot();
    for (const e of ENDPOINTS.filter((x) => x.admin)) {
      for (const d of ['alice-desk', 'bob-desk', 'no-such-desk']) {
        const r = await call(e, bob, d);
        assert.equal(r.statusCode, 403, `${e.method} ${e.url}`);
        assert.equal(errorCode(r), 'FORBIDDEN');
      }
    }
    assert.deepEqual(await snapshot(), before);
  });

  it('a device credential on admin endpoints: 403 FORBIDDEN (a device never acts as an administrator)', async () => {
    const before = await snapshot();
    for (const e of ENDPOINTS.filter((x) => x.admin)) {
      const r = await call(e, bobDevice, 'bob-desk');
      assert.equal(r.statusCode, 403, `${e.method} ${e.url}`);
      assert.equal(errorCode(r), 'FORBIDDEN');
    }
    assert.deepEqual(await snapshot(), before);
  });

  it('a session token on device calls, a device credential on session calls: 403 naming the right credential, and nothing happens', async () => {
    const before = await snapshot();
    for (const e of ENDPOINTS.filter((x) => x.credential === 'device')) {
      for (const d of ['bob-desk', 'alice-desk']) {
        const r = await call(e, bob, d);
        assert.equal(r.statusCode, 403, `${e.method} ${e.url}`);
        assert.equal(errorCode(r), 'FORBIDDEN');
        assert.match(r.json<{ error: { message: string } }>().error.message, /device credential/);
      }
    }
    for (const e of [...ENDPOINTS.filter((x) => x.credential === 'session'), ENDPOINTS.find((x) => x.url.endsWith('/logout'))!]) {
      const r = await call(e, bobDevice);
      assert.equal(r.statusCode, 403, `${e.method} ${e.url}`);
      assert.match(r.json<{ error: { message: string } }>().error.message, /session/);
    }
    assert.deepEqual(await snapshot(), before);
  });

  it("another user's desktop: 404, byte-for-byte the answer for a desktop that does not exist", async () => {
    const before = await snapshot();
    for (const e of ENDPOINTS.filter((x) => x.desktop && !x.admin)) {
      const token = e.credential === 'device' ? bobDevice : bob;
      const theirs = await call(e, token, 'alice-desk');
      const missing = await call(e, token, 'alice-dusk');
      assert.equal(theirs.statusCode, 404, `${e.method} ${e.url}`);
      assert.equal(errorCode(theirs), 'NOT_FOUND');
      assert.equal(theirs.body, missing.body.replaceAll('alice-dusk', 'alice-desk'), `${e.method} ${e.url}`);
    }
    assert.deepEqual(await snapshot(), before);
  });

  it('the owner and an admin reach the same desktop endpoints', async () => {
    for (const e of ENDPOINTS.filter((x) => x.desktop && !x.admin && x.method === 'GET' && x.realObjects !== true)) {
      assert.equal((await call(e, bob, 'bob-desk')).statusCode, 200, `${e.method} ${e.url}`);
      assert.equal((await call(e, t.adminToken, 'alice-desk')).statusCode, 200, `${e.method} ${e.url}`);
    }
    assert.equal((await call(ENDPOINTS.find((e) => e.url.endsWith('/start'))!, bob, 'bob-desk')).statusCode, 200);
    assert.equal((await call(ENDPOINTS.find((e) => e.url.endsWith('/stop'))!, t.adminToken, 'bob-desk')).statusCode, 200);
  });

  it('the matrix covers every route of the OpenAPI document', async () => {
    const doc = (await t.request('GET', '/docs/json')).json<{ paths: Record<string, Record<string, unknown>> }>();
    const covered = new Set(
      ENDPOINTS.map((e) => `${e.method} ${e.url.split('?')[0]!.replace('{d}', '{name}').replace(/\/(alice|base|img3)(?=\/|$)/, '/{name}').replace(OBJ, '{id}').replace(UPLOAD, '{uploadId}').replace(DEVICE, '{id}').replace(OPERATION, '{id}')}`),
    );
    covered.add('POST /api/v1/auth/login');
    const routes = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
    assert.ok(routes.length >= 20, `only ${routes.length} routes in the document`);
    for (const route of routes) assert.ok(covered.has(route), `${route} is not in the matrix`);
  });
});
