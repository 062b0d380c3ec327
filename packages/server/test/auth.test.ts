import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ADMIN_PASSWORD, createTestApp, errorCode, type TestApp, USER_PASSWORD } from './harness.ts';

describe('auth', () => {
  let t: TestApp;
  before(async () => {
    t = await createTestApp({ login: { maxAttemptsPerUser: 3, maxAttemptsPerIp: 100, windowSeconds: 60 } });
    await t.createUser('alice');
  });
  after(() => t.close());

  it('logs in and returns a token, its expiry and the user', async () => {
    const r = await t.request('POST', '/api/v1/auth/login', { body: { user: 'alice', password: USER_PASSWORD } });
    assert.equal(r.statusCode, 200);
    const body = r.json<{ token: string; expiresAt: string; user: { name: string; role: string } }>();
    assert.match(body.token, /^rdt_[A-Za-z0-9_-]{43}$/);
    assert.equal(body.user.name, 'alice');
    assert.equal(body.user.role, 'user');
    assert.equal(Date.parse(body.expiresAt), t.clock.now() + 12 * 3600 * 1000);
    const me = await t.request('GET', '/api/v1/me', { token: body.token });
    assert.equal(me.statusCode, 200);
    assert.equal(me.json<{ user: { name: string } }>().user.name, 'alice');
  });

  it('stores only a hash of the token', async () => {
    const token = await t.login('alice', USER_PASSWORD);
    const rows = await t.db.selectFrom('tokens').select(['token_hash']).execute();
    assert.ok(rows.length > 0);
    for (const row of rows) {
      assert.match(row.token_hash, /^[0-9a-f]{64}$/);
      assert.ok(!row.token_hash.includes(token.slice(4)));
    }
  });

  it('answers a wrong password and an unknown user the same way, and hashes in both cases', async () => {
    const before = t.hasher.verifyCalls;
    const wrong = await t.request('POST', '/api/v1/auth/login', { body: { user: 'alice', password: 'nope-nope' } });
    const unknown = await t.request('POST', '/api/v1/auth/login', { body: { user: 'nobody', password: 'nope-nope' } });
    assert.equal(wrong.statusCode, 401);
    assert.equal(unknown.statusCode, 401);
    assert.deepEqual(wrong.json(), unknown.json());
    assert.equal(errorCode(wrong), 'AUTH_INVALID');
    assert.equal(t.hasher.verifyCalls - before, 2, 'the unknown user was verified against a dummy hash');
  });

  it('rejects a missing, malformed or unknown token', async () => {
    assert.equal(errorCode(await t.request('GET', '/api/v1/me')), 'AUTH_REQUIRED');
    for (const h of ['Basic abc', 'Bearer', 'Bearer x', `Bearer rdt_${'a'.repeat(43)}`, `Bearer rdt_${'a'.repeat(43)} extra`]) {
      const r = await t.request('GET', '/api/v1/me', { headers: { authorization: h } });
      assert.equal(r.statusCode, 401, h);
      assert.equal(errorCode(r), 'AUTH_INVALID', h);
    }
  });

  it('logout revokes the token of the request only', async () => {
    const a = await t.login('alice', USER_PASSWORD);
    const b = await t.login('alice', USER_PASSWORD);
    assert.equal((await t.request('POST', '/api/v1/auth/logout', { token: a })).statusCode, 204);
    const r = await t.request('GET', '/api/v1/me', { token: a });
    assert.equal(r.statusCode, 401);
    assert.equal(errorCode(r), 'AUTH_INVALID');
    assert.equal((await t.request('POST', '/api/v1/auth/logout', { token: a })).statusCode, 401);
    assert.equal((await t.request('GET', '/api/v1/me', { token: b })).statusCode, 200);
  });

  it('expires tokens after the TTL', async () => {
    const token = await t.login('alice', USER_PASSWORD);
    t.clock.advance(12 * 3600 * 1000 - 1);
    assert.equal((await t.request('GET', '/api/v1/me', { token })).statusCode, 200);
    t.clock.advance(1);
    const r = await t.request('GET', '/api/v1/me', { token });
    assert.equal(r.statusCode, 401);
    assert.equal(errorCode(r), 'TOKEN_EXPIRED');
  });

  it('records logins and failed logins as events', async () => {
    const r = await t.request('GET', '/api/v1/events?limit=1000', { token: await t.login('admin', ADMIN_PASSWORD) });
    const events = r.json<{ events: Array<{ action: string; result: string; actor: string | null; detail: Record<string, unknown> }> }>().events;
    const failed = events.find((e) => e.action === 'auth.login' && e.result === 'error' && e.actor === 'nobody');
    assert.ok(failed);
    assert.deepEqual((failed.detail['error'] as { code: string }).code, 'AUTH_INVALID');
    assert.ok(events.some((e) => e.action === 'auth.logout' && e.actor === 'alice'));
    // The password never lands in the log.
    assert.ok(!JSON.stringify(events).includes('nope-nope'));
  });
});

describe('login rate limits', () => {
  let t: TestApp;
  before(async () => {
    t = await createTestApp({ login: { maxAttemptsPerUser: 3, maxAttemptsPerIp: 5, windowSeconds: 60 } });
    await t.createUser('bob');
  });
  after(() => t.close());

  it('limits attempts per user name with 429, Retry-After, and a sliding window', async () => {
    // createTestApp's admin login and createUser's login count against the address, not against bob.
    for (let i = 0; i < 3; i++) {
      assert.equal((await t.request('POST', '/api/v1/auth/login', { body: { user: 'bob', password: 'wrong-pass' } })).statusCode, 401);
    }
    const limited = await t.request('POST', '/api/v1/auth/login', { body: { user: 'bob', password: USER_PASSWORD } });
    assert.equal(limited.statusCode, 429);
    assert.equal(errorCode(limited), 'RATE_LIMITED');
    assert.equal(limited.headers['retry-after'], '60');
    assert.deepEqual(limited.json<{ error: { data: unknown } }>().error.data, { retryAfterSeconds: 60 });
    t.clock.advance(60_001);
    assert.equal((await t.request('POST', '/api/v1/auth/login', { body: { user: 'bob', password: USER_PASSWORD } })).statusCode, 200);
  });

  it('limits attempts per client address whatever the name', async () => {
    t.clock.advance(120_000);
    const names = ['u1', 'u2', 'u3', 'u4', 'u5'];
    for (const user of names) {
      assert.equal((await t.request('POST', '/api/v1/auth/login', { body: { user, password: 'whatever1' } })).statusCode, 401);
    }
    const r = await t.request('POST', '/api/v1/auth/login', { body: { user: 'u6', password: 'whatever1' } });
    assert.equal(r.statusCode, 429);
    assert.equal(errorCode(r), 'RATE_LIMITED');
    // Another address is not affected.
    const other = await t.app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { user: 'bob', password: USER_PASSWORD },
      remoteAddress: '10.1.2.3',
    });
    assert.equal(other.statusCode, 200);
  });
});
