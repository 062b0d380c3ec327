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
}

const OBJ = 'd'.repeat(64);
const UPLOAD = 'e'.repeat(32);

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
];

describe('authorization matrix', () => {
  let t: TestApp;
  let bob: string;
  let expired: string;
  let revoked: string;

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
  });
  after(() => t.close());

  for (const [label, token, status, code] of [
    ['no token', () => undefined, 401, 'AUTH_REQUIRED'],
    ['expired token', () => expired, 401, 'TOKEN_EXPIRED'],
    ['revoked token', () => revoked, 401, 'AUTH_INVALID'],
    ['garbage token', () => 'rdt_' + 'x'.repeat(43), 401, 'AUTH_INVALID'],
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

  it("another user's desktop: 404, byte-for-byte the answer for a desktop that does not exist", async () => {
    const before = await snapshot();
    for (const e of ENDPOINTS.filter((x) => x.desktop && !x.admin)) {
      const theirs = await call(e, bob, 'alice-desk');
      const missing = await call(e, bob, 'alice-dusk');
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
      ENDPOINTS.map((e) => `${e.method} ${e.url.split('?')[0]!.replace('{d}', '{name}').replace(/\/(alice|base|img3)(?=\/|$)/, '/{name}').replace(OBJ, '{id}').replace(UPLOAD, '{uploadId}')}`),
    );
    covered.add('POST /api/v1/auth/login');
    const routes = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
    assert.ok(routes.length >= 20, `only ${routes.length} routes in the document`);
    for (const route of routes) assert.ok(covered.has(route), `${route} is not in the matrix`);
  });
});
