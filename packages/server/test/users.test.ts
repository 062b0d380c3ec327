import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestApp, errorCode, type TestApp, USER_PASSWORD } from './harness.ts';

describe('users', () => {
  let t: TestApp;
  let carol: string;
  before(async () => {
    t = await createTestApp();
    carol = await t.createUser('carol');
  });
  after(() => t.close());

  it('creates, lists, gets and deletes users (admin)', async () => {
    const created = await t.request('POST', '/api/v1/users', { token: t.adminToken, body: { name: 'dave', password: 'longenough' } });
    assert.equal(created.statusCode, 201);
    const user = created.json<{ user: Record<string, unknown> }>().user;
    assert.equal(user['role'], 'user');
    assert.equal(user['disabled'], false);
    assert.ok(!('password_hash' in user) && !('passwordHash' in user));

    const list = await t.request('GET', '/api/v1/users', { token: t.adminToken });
    assert.deepEqual(list.json<{ users: Array<{ name: string }> }>().users.map((u) => u.name), ['admin', 'carol', 'dave']);
    assert.equal((await t.request('GET', '/api/v1/users/dave', { token: t.adminToken })).statusCode, 200);

    assert.equal((await t.request('DELETE', '/api/v1/users/dave', { token: t.adminToken })).statusCode, 204);
    const gone = await t.request('GET', '/api/v1/users/dave', { token: t.adminToken });
    assert.equal(gone.statusCode, 404);
    assert.equal(errorCode(gone), 'NOT_FOUND');
    assert.equal(errorCode(await t.request('DELETE', '/api/v1/users/dave', { token: t.adminToken })), 'NOT_FOUND');
  });

  it('refuses a duplicate name and a short password', async () => {
    const dup = await t.request('POST', '/api/v1/users', { token: t.adminToken, body: { name: 'carol', password: 'longenough' } });
    assert.equal(dup.statusCode, 409);
    assert.equal(errorCode(dup), 'CONFLICT');
    const short = await t.request('POST', '/api/v1/users', { token: t.adminToken, body: { name: 'erin', password: 'short' } });
    assert.equal(short.statusCode, 400);
    assert.equal(errorCode(short), 'VALIDATION_FAILED');
    const extra = await t.request('POST', '/api/v1/users', { token: t.adminToken, body: { name: 'erin', password: 'longenough', role: 'root' } });
    assert.equal(extra.statusCode, 400);
  });

  it('deleting a user ends their sessions', async () => {
    const token = await t.createUser('frank');
    assert.equal((await t.request('GET', '/api/v1/me', { token })).statusCode, 200);
    assert.equal((await t.request('DELETE', '/api/v1/users/frank', { token: t.adminToken })).statusCode, 204);
    assert.equal(errorCode(await t.request('GET', '/api/v1/me', { token })), 'AUTH_INVALID');
  });

  it('never deletes the last administrator, nor a user who owns desktops', async () => {
    const last = await t.request('DELETE', '/api/v1/users/admin', { token: t.adminToken });
    assert.equal(last.statusCode, 409);
    assert.deepEqual(last.json<{ error: { data: unknown } }>().error.data, { reason: 'last-admin' });

    assert.equal((await t.importImage('base')).statusCode, 201);
    assert.equal((await t.createDesktop('carol-desk', 'carol', 'base')).statusCode, 201);
    const owns = await t.request('DELETE', '/api/v1/users/carol', { token: t.adminToken });
    assert.equal(owns.statusCode, 409);
    assert.equal(owns.json<{ error: { data: { reason: string } } }>().error.data.reason, 'owns-desktops');
  });

  it('GET /me works for every user; the user endpoints are for admins', async () => {
    assert.equal((await t.request('GET', '/api/v1/me', { token: carol })).statusCode, 200);
    const r = await t.request('GET', '/api/v1/users', { token: carol });
    assert.equal(r.statusCode, 403);
    assert.equal(errorCode(r), 'FORBIDDEN');
    assert.equal((await t.request('POST', '/api/v1/users', { token: carol, body: { name: 'x', password: USER_PASSWORD } })).statusCode, 403);
  });

  it('writes user events', async () => {
    const r = await t.request('GET', '/api/v1/events', { token: t.adminToken });
    const actions = r.json<{ events: Array<{ action: string; target: string; result: string }> }>().events;
    assert.ok(actions.some((e) => e.action === 'user.create' && e.target === 'dave' && e.result === 'ok'));
    assert.ok(actions.some((e) => e.action === 'user.create' && e.target === 'carol' && e.result === 'error'));
    assert.ok(actions.some((e) => e.action === 'user.delete' && e.target === 'admin' && e.result === 'error'));
  });
});
