// The remote console: token issuance (authz, state), the single-use/short-lived/bound token, and the
// WebSocket proxy against a fake VNC server on a UNIX socket, through a really listening server.

import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { ConsoleSessions } from '../src/console/sessions.ts';
import type { RuntimeDesktop } from '../src/ports.ts';
import { createTestApp, errorCode, type TestApp } from './harness.ts';

type TokenBody = { token: string; expiresAt: string; url: string; websocket: string };

/** A stand-in for QEMU's VNC socket: greets like RFB 3.8 and records what it receives. */
async function fakeVnc(path: string, greeting = 'RFB 003.008\n'): Promise<{ server: Server; received: Buffer[]; sockets: Socket[]; connections: number }> {
  const state = { server: createServer(), received: [] as Buffer[], sockets: [] as Socket[], connections: 0 };
  state.server.on('connection', (s) => {
    state.connections += 1;
    state.sockets.push(s);
    s.on('data', (d) => state.received.push(d));
    s.on('error', () => undefined);
    s.write(greeting);
  });
  await new Promise<void>((resolve) => state.server.listen(path, resolve));
  return state;
}

interface Opened {
  ws: WebSocket;
  first: Buffer;
}

/** Open the console WebSocket; resolves with the first message, or rejects with the HTTP refusal. */
function openWs(base: string, path: string, headers: Record<string, string> = {}): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base + path, ['binary'], { headers });
    ws.once('message', (data: Buffer) => resolve({ ws, first: data }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body })));
    });
    ws.once('error', reject);
  });
}

async function refusal(p: Promise<Opened>): Promise<{ status: number; code: string }> {
  try {
    const { ws } = await p;
    ws.close();
  } catch (err) {
    const e = err as { status?: number; body?: string };
    const body = JSON.parse(e.body ?? '{}') as { error?: { code?: string } };
    return { status: e.status ?? 0, code: body.error?.code ?? '' };
  }
  assert.fail('the WebSocket was accepted');
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i += 1) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe('console', () => {
  let t: TestApp;
  let hana: string;
  let ivan: string;
  let base: string;
  const ids: Record<string, string> = {};
  const vncA = { path: '' };
  const vncB = { path: '' };
  let a: Awaited<ReturnType<typeof fakeVnc>>;
  let b: Awaited<ReturnType<typeof fakeVnc>>;

  /**
   * Running as far as the database and the fake runtime know. Set directly rather than through the start
   * route, so these tests exercise the console and not the lifecycle.
   */
  const markRunning = async (name: string) => {
    const id = ids[name]!;
    await t.db.updateTable('desktops').set({ state: 'running' }).where('id', '=', id).execute();
    t.runtime.running.set(id, { id, name } as RuntimeDesktop);
  };

  const issue = (desktop: string, token: string) => t.request('POST', `/api/v1/desktops/${desktop}/console`, { token });
  const tokenFor = async (desktop: string, token = hana) => {
    const r = await issue(desktop, token);
    assert.equal(r.statusCode, 200, r.body);
    return r.json<TokenBody>();
  };

  before(async () => {
    t = await createTestApp();
    hana = await t.createUser('hana');
    ivan = await t.createUser('ivan');
    assert.equal((await t.importImage('base')).statusCode, 201);
    for (const [name, owner] of [['hana-1', 'hana'], ['hana-2', 'hana'], ['ivan-1', 'ivan']] as const) {
      const r = await t.createDesktop(name, owner, 'base');
      assert.equal(r.statusCode, 201, r.body);
      ids[name] = r.json<{ desktop: { id: string } }>().desktop.id;
    }
    vncA.path = join(t.dir, 'a.vnc.sock');
    vncB.path = join(t.dir, 'b.vnc.sock');
    a = await fakeVnc(vncA.path, 'RFB 003.008\n');
    b = await fakeVnc(vncB.path, 'RFB 003.008\n');
    t.runtime.consoleSockets.set(ids['hana-1']!, vncA.path);
    t.runtime.consoleSockets.set(ids['hana-2']!, vncB.path);
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    const addr = t.app.server.address();
    assert.ok(addr !== null && typeof addr === 'object');
    base = `ws://127.0.0.1:${addr.port}`;
  });
  after(async () => {
    for (const s of [...a.sockets, ...b.sockets]) s.destroy();
    a.server.close();
    b.server.close();
    await t.close();
  });

  it('issues tokens to the owner and admins only; others get the 404 of a missing desktop', async () => {
    const none = await t.request('POST', '/api/v1/desktops/hana-1/console');
    assert.equal(none.statusCode, 401);
    assert.equal(errorCode(none), 'AUTH_REQUIRED');
    const theirs = await issue('hana-1', ivan);
    const missing = await issue('hana-9', ivan);
    assert.equal(theirs.statusCode, 404);
    assert.equal(errorCode(theirs), 'NOT_FOUND');
    assert.equal(theirs.body, missing.body.replaceAll('hana-9', 'hana-1'));
  });

  it('refuses a token while the desktop is not running (409) or checked out (409)', async () => {
    const r = await issue('hana-1', hana);
    assert.equal(r.statusCode, 409);
    assert.equal(errorCode(r), 'DESKTOP_NOT_RUNNING');
    for (const d of ['hana-1', 'hana-2', 'ivan-1']) await markRunning(d);
    await t.db.updateTable('desktops').set({ location: 'device-1' }).where('name', '=', 'ivan-1').execute();
    const out = await issue('ivan-1', ivan);
    assert.equal(out.statusCode, 409);
    assert.equal(errorCode(out), 'CHECKED_OUT');
    await t.db.updateTable('desktops').set({ location: 'server' }).where('name', '=', 'ivan-1').execute();
  });

  it('a token is short-lived, stored hashed, bound to user and desktop, and no bearer token', async () => {
    const body = await tokenFor('hana-1');
    assert.match(body.token, /^rdt_[A-Za-z0-9_-]{43}$/);
    assert.equal(Date.parse(body.expiresAt) - t.clock.now(), 60_000);
    assert.equal(body.url, `/console/hana-1#token=${body.token}`);
    assert.equal(body.websocket, `/api/v1/console/ws?token=${body.token}`);
    const rows = await t.db.selectFrom('tokens').selectAll().where('kind', '=', 'console').execute();
    const row = rows.at(-1)!;
    assert.equal(row.desktop_id, ids['hana-1']);
    assert.notEqual(row.token_hash, body.token);
    assert.ok(!JSON.stringify(rows).includes(body.token), 'the secret is not stored');
    const me = await t.request('GET', '/api/v1/me', { token: body.token });
    assert.equal(me.statusCode, 401, 'a console token is not a login');
    assert.equal((await tokenFor('hana-1', t.adminToken)).token.length, body.token.length, 'admins may open any console');
    const events = await t.db.selectFrom('events').select(['action', 'result', 'target']).where('action', '=', 'desktop.console').execute();
    assert.ok(events.some((e) => e.result === 'ok' && e.target === 'hana-1'));
    assert.ok(events.some((e) => e.result === 'error' && e.target === 'hana-1'), 'the refusal was recorded too');
  });

  it('pipes RFB both ways, once per token, and records the session', async () => {
    const { token } = await tokenFor('hana-1');
    const before = a.connections;
    const { ws, first } = await openWs(base, `/api/v1/console/ws?token=${token}`);
    assert.equal(ws.protocol, 'binary');
    assert.equal(first.toString(), 'RFB 003.008\n');
    ws.send(Buffer.from('RFB 003.008\n'));
    await until(() => Buffer.concat(a.received).toString().includes('RFB 003.008\n'), 'the client version at the VNC server');
    assert.equal(a.connections, before + 1);
    const done = closed(ws);
    ws.close();
    await done;
    await until(async () => (await t.db.selectFrom('events').select('id').where('action', '=', 'console.end').execute()).length > 0, 'console.end');

    const again = await refusal(openWs(base, `/api/v1/console/ws?token=${token}`));
    assert.deepEqual(again, { status: 401, code: 'AUTH_INVALID' }, 'a second use is refused');
    const actions = (await t.db.selectFrom('events').select(['action', 'result', 'actor_name']).where('action', 'like', 'console.%').execute());
    assert.ok(actions.some((e) => e.action === 'console.start' && e.result === 'ok' && e.actor_name === 'hana'));
    assert.ok(actions.some((e) => e.action === 'console.end' && e.result === 'ok'));
  });

  it('refuses expired, unknown, malformed and cross-origin attempts before the upgrade', async () => {
    const { token } = await tokenFor('hana-1');
    t.clock.advance(60_001);
    assert.deepEqual(await refusal(openWs(base, `/api/v1/console/ws?token=${token}`)), { status: 401, code: 'AUTH_INVALID' });
    assert.deepEqual(await refusal(openWs(base, `/api/v1/console/ws?token=rdt_${'x'.repeat(43)}`)), { status: 401, code: 'AUTH_INVALID' });
    assert.deepEqual(await refusal(openWs(base, '/api/v1/console/ws?token=..%2f..%2fetc')), { status: 401, code: 'AUTH_INVALID' });
    assert.equal((await refusal(openWs(base, '/api/v1/console/ws'))).status, 400);
    // A session token is not a console token.
    assert.deepEqual(await refusal(openWs(base, `/api/v1/console/ws?token=${hana}`)), { status: 401, code: 'AUTH_INVALID' });
    const fresh = await tokenFor('hana-1');
    const evil = await refusal(openWs(base, `/api/v1/console/ws?token=${fresh.token}`, { origin: 'http://evil.example' }));
    assert.deepEqual(evil, { status: 403, code: 'FORBIDDEN' });
  });

  it("a token for one desktop opens that desktop's console and no other", async () => {
    const forB = await tokenFor('hana-2');
    const [aBefore, bBefore] = [a.connections, b.connections];
    // The desktop comes from the token, not from the URL; an extra parameter is refused outright.
    assert.equal((await refusal(openWs(base, `/api/v1/console/ws?token=${forB.token}&desktop=hana-1`))).status, 400);
    const { ws } = await openWs(base, `/api/v1/console/ws?token=${forB.token}`);
    await until(() => b.connections === bBefore + 1, 'the connection to B');
    assert.equal(a.connections, aBefore);
    ws.close();
    // ivan's token for his own desktop does not open hana's either (his desktop has no console socket here).
    const ivans = await tokenFor('ivan-1', ivan);
    assert.deepEqual(await refusal(openWs(base, `/api/v1/console/ws?token=${ivans.token}`)), { status: 409, code: 'DESKTOP_NOT_RUNNING' });
  });

  it('refuses a token whose desktop stopped after it was issued', async () => {
    const { token } = await tokenFor('hana-2');
    assert.equal((await t.request('POST', '/api/v1/desktops/hana-2/stop', { token: hana })).statusCode, 200);
    assert.deepEqual(await refusal(openWs(base, `/api/v1/console/ws?token=${token}`)), { status: 409, code: 'DESKTOP_NOT_RUNNING' });
    await markRunning('hana-2');
  });

  it('closes the WebSocket when the VM side closes, and on a text frame', async () => {
    const s1 = await openWs(base, `/api/v1/console/ws?token=${(await tokenFor('hana-1')).token}`);
    const c1 = closed(s1.ws);
    a.sockets.at(-1)!.end();
    assert.equal((await c1).code, 1000);

    const s2 = await openWs(base, `/api/v1/console/ws?token=${(await tokenFor('hana-1')).token}`);
    const c2 = closed(s2.ws);
    s2.ws.send('not rfb');
    assert.equal((await c2).code, 1003);
  });

  it('closes with 1011 when the VNC socket is gone', async () => {
    t.runtime.consoleSockets.set(ids['hana-1']!, join(t.dir, 'missing.sock'));
    try {
      const ws = new WebSocket(`${base}/api/v1/console/ws?token=${(await tokenFor('hana-1')).token}`, ['binary']);
      assert.equal((await closed(ws)).code, 1011);
    } finally {
      t.runtime.consoleSockets.set(ids['hana-1']!, vncA.path);
    }
  });

  it('limits sessions per desktop, per user and in total', () => {
    const s = new ConsoleSessions({ perDesktop: 2, perUser: 3, total: 4 });
    const a1 = s.acquire('d1', 'u1');
    s.acquire('d1', 'u2');
    assert.throws(() => s.acquire('d1', 'u3'), { code: 'CONSOLE_LIMIT' });
    a1.release();
    a1.release();
    s.acquire('d1', 'u3');
    s.acquire('d2', 'u1');
    s.acquire('d3', 'u1');
    assert.throws(() => s.acquire('d4', 'u5'), { code: 'CONSOLE_LIMIT' });
    assert.equal(s.size, 4);
  });

  it('serves the pages and noVNC, with a strict CSP, and nothing else', async () => {
    const index = await t.request('GET', '/');
    assert.equal(index.statusCode, 200);
    assert.match(index.headers['content-type'] as string, /text\/html/);
    assert.match(index.headers['content-security-policy'] as string, /script-src 'self'/);
    const page = await t.request('GET', '/console/hana-1');
    assert.equal(page.statusCode, 200);
    assert.match(page.body, /console\.js/);
    assert.equal((await t.request('GET', '/console/..%2f..%2fetc')).statusCode, 400);
    const rfb = await t.request('GET', '/novnc/core/rfb.js');
    assert.equal(rfb.statusCode, 200);
    assert.match(rfb.headers['content-type'] as string, /javascript/);
    assert.equal((await t.request('GET', '/novnc/vendor/pako/lib/zlib/inflate.js')).statusCode, 200);
    for (const url of ['/novnc/package.json', '/novnc/core/../package.json', '/novnc/core/%2e%2e/package.json', '/package.json', '/index.html/x']) {
      assert.equal((await t.request('GET', url)).statusCode, 404, url);
    }
  });
});
