// The remote commands end to end: a real server (buildApp over SQLite with the fake store and runtime)
// listening on 127.0.0.1, and the CLI run as a child process exactly as a user runs it.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { ADMIN_PASSWORD, createTestApp, type TestApp } from '../../server/test/harness.ts';

const STOP_TIMEOUT_MS = 4321;

const BIN = fileURLToPath(new URL('../bin/roamdesk.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function roamdesk(home: string, args: readonly string[], input?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    // Async spawn: the server answers from this same process, so the test must not block its event loop.
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, ROAMDESK_HOME: home, NO_COLOR: '1' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

function json<T>(r: Run): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

function ok(r: Run): Run {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

/** A port nothing listens on: bind one, then close it. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe('roamdesk remote commands', () => {
  let t: TestApp;
  let url: string;
  let home: string;
  let work: string;

  before(async () => {
    t = await createTestApp({ stopTimeoutMs: STOP_TIMEOUT_MS });
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    url = `http://127.0.0.1:${(t.app.server.address() as AddressInfo).port}`;
    home = await mkdtemp(join(tmpdir(), 'roamdesk-cli-home-'));
    work = await mkdtemp(join(tmpdir(), 'roamdesk-cli-work-'));
  });
  after(async () => {
    await t.close();
    await rm(home, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  it('refuses commands before login with a hint (exit 1)', async () => {
    const r = await roamdesk(home, ['desktops']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not logged in: run `roamdesk login URL --user NAME`/);
    const j = await roamdesk(home, ['--json', 'desktops']);
    assert.equal(j.code, 1);
    assert.equal(json<{ error: { code: string } }>(j).error.code, 'CLIENT_ERR_NOT_LOGGED_IN');
  });

  it('wrong password: exit 1 with the server code', async () => {
    const r = await roamdesk(home, ['login', url, '--user', 'admin', '--password-stdin', '--json'], 'wrong-password\n');
    assert.equal(r.code, 1);
    assert.equal(json<{ error: { code: string } }>(r).error.code, 'AUTH_INVALID');
    const h = await roamdesk(home, ['login', url, '--user', 'admin', '--password-stdin'], 'wrong-password\n');
    assert.equal(h.code, 1);
    assert.match(h.stderr, /\[AUTH_INVALID\]/);
    assert.match(h.stderr, /hint: check the user name and password/);
  });

  it('refuses to read a password from a non-terminal without --password-stdin (exit 2)', async () => {
    const r = await roamdesk(home, ['login', url, '--user', 'admin'], `${ADMIN_PASSWORD}\n`);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--password-stdin/);
  });

  it('logs in and stores the session in a 0600 state file', async () => {
    const r = ok(await roamdesk(home, ['login', `${url}/`, '--user', 'admin', '--password-stdin', '--json'], `${ADMIN_PASSWORD}\n`));
    const out = json<{ server: string; user: { name: string; role: string }; expiresAt: string }>(r);
    assert.equal(out.server, url);
    assert.equal(out.user.name, 'admin');
    assert.equal(out.user.role, 'admin');
    assert.doesNotMatch(r.stdout, /rdt_/, 'the token is never printed');
    const st = await stat(join(home, 'state.json'));
    assert.equal(st.mode & 0o777, 0o600);
    const state = JSON.parse(await readFile(join(home, 'state.json'), 'utf8')) as { server: string; session: { token: string; user: string } };
    assert.equal(state.server, url);
    assert.equal(state.session.user, 'admin');
    assert.match(state.session.token, /^rdt_/);
  });

  it('lists no desktops yet', async () => {
    const r = ok(await roamdesk(home, ['desktops']));
    assert.match(r.stdout, /No desktops/);
    assert.deepEqual(json<{ desktops: unknown[] }>(ok(await roamdesk(home, ['desktops', '--json']))).desktops, []);
  });

  it('admin user add / list / remove', async () => {
    const add = ok(await roamdesk(home, ['admin', 'user', 'add', 'alice', '--password-stdin', '--json'], 'alice-password\n'));
    assert.equal(json<{ user: { name: string; role: string } }>(add).user.role, 'user');
    ok(await roamdesk(home, ['admin', 'user', 'add', 'bob', '--admin', '--password-stdin'], 'bob-password-1\n'));
    const list = ok(await roamdesk(home, ['admin', 'user', 'list']));
    assert.match(list.stdout, /^NAME\s+ROLE/m);
    assert.match(list.stdout, /^alice\s+user/m);
    assert.match(list.stdout, /^bob\s+admin/m);
    const rm1 = ok(await roamdesk(home, ['admin', 'user', 'remove', 'bob']));
    assert.match(rm1.stdout, /Removed user bob/);
    const users = json<{ users: Array<{ name: string }> }>(ok(await roamdesk(home, ['--json', 'admin', 'user', 'list']))).users.map((u) => u.name);
    assert.deepEqual(users.sort(), ['admin', 'alice']);
    const dup = await roamdesk(home, ['admin', 'user', 'add', 'alice', '--password-stdin'], 'alice-password\n');
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /\[CONFLICT\]/);
  });

  it('admin image import (server path and --upload) / list', async () => {
    const src = join(work, 'base.img');
    await writeFile(src, 'a tiny raw image');
    const imp = ok(await roamdesk(home, ['admin', 'image', 'import', 'base', src, '--format', 'raw', '--json']));
    assert.equal(json<{ image: { name: string; format: string; size: number } }>(imp).image.size, 16);
    const up = join(work, 'up.img');
    await writeFile(up, Buffer.alloc(3 * 1024 * 1024, 7));
    const upl = ok(await roamdesk(home, ['admin', 'image', 'import', 'uploaded', up, '--upload']));
    assert.match(upl.stdout, /Imported image uploaded: raw, 3\.0 MiB/);
    const list = ok(await roamdesk(home, ['admin', 'image', 'list']));
    assert.match(list.stdout, /^base\s+raw\s+16 B/m);
    assert.match(list.stdout, /^uploaded\s+raw/m);
    const missing = await roamdesk(home, ['admin', 'image', 'import', 'nope', join(work, 'missing.img')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /\[INVALID_PATH\]/);
    const bad = await roamdesk(home, ['admin', 'image', 'import', 'x', src, '--format', 'vmdk']);
    assert.equal(bad.code, 2);
  });

  it('admin image publish (server path and --upload) / show / list show versions', async () => {
    const v2 = join(work, 'base-v2.img');
    await writeFile(v2, 'a tiny raw imag2');
    const pub = ok(await roamdesk(home, ['admin', 'image', 'publish', 'base', v2, '--format', 'raw', '--json']));
    const body = json<{ image: { version: number; topObjectId: string }; version: { version: number; topObjectId: string; diffSize: number } }>(pub);
    assert.deepEqual([body.image.version, body.version.version, body.version.diffSize], [2, 2, 100]);
    assert.equal(body.image.topObjectId, body.version.topObjectId);
    const v3 = join(work, 'base-v3.img');
    await writeFile(v3, 'a tiny raw imag3');
    const upl = ok(await roamdesk(home, ['admin', 'image', 'publish', 'base', v3, '--upload', '--format', 'raw']));
    assert.match(upl.stdout, /Published version 3 of image base: a 100 B layer over version 2 \(top [0-9a-f]{12}\); new desktops start from it\./);
    const show = ok(await roamdesk(home, ['admin', 'image', 'show', 'base']));
    assert.match(show.stdout, /^Image base: raw, 32 B virtual, version 3, used by 0 desktops$/m);
    assert.match(show.stdout, /^VERSION\s+LAYER\s+TOP\s+CREATED\s+BY$/m);
    assert.match(show.stdout, /^1\s+16 B\s+[0-9a-f]{12}\s+\S+ \S+\s+admin$/m);
    assert.match(show.stdout, /^3\s+100 B\s+[0-9a-f]{12}\s+\S+ \S+\s+admin$/m);
    assert.match(ok(await roamdesk(home, ['admin', 'image', 'list'])).stdout, /^base\s+raw\s+16 B\s+32 B\s+3\s+0\s+/m);
    const big = join(work, 'big.img');
    await writeFile(big, 'a raw image bigger than the base');
    const mismatch = await roamdesk(home, ['admin', 'image', 'publish', 'base', big, '--format', 'raw']);
    assert.equal(mismatch.code, 1);
    assert.match(mismatch.stderr, /\[IMAGE_SIZE_MISMATCH\]/);
    assert.match(mismatch.stderr, /import it as a new image/);
    const missing = await roamdesk(home, ['admin', 'image', 'publish', 'nope', v2]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /\[NOT_FOUND\]/);
  });

  it('admin desktop create / list', async () => {
    const c = ok(await roamdesk(home, ['admin', 'desktop', 'create', 'work', '--image', 'base', '--owner', 'alice', '--memory', '512', '--cpus', '2', '--json']));
    const d = json<{ desktop: { name: string; memoryMiB: number; cpus: number; state: string } }>(c).desktop;
    assert.deepEqual([d.name, d.memoryMiB, d.cpus, d.state], ['work', 512, 2, 'stopped']);
    const list = ok(await roamdesk(home, ['admin', 'desktop', 'list']));
    assert.match(list.stdout, /^NAME\s+STATE\s+LOCATION\s+OWNER\s+IMAGE\s+MEMORY\s+CPUS$/m);
    assert.match(list.stdout, /^work\s+stopped\s+server\s+alice\s+base\s+512 MiB\s+2$/m);
    const usage = await roamdesk(home, ['admin', 'desktop', 'create', 'x', '--image', 'base', '--owner', 'alice', '--memory', 'lots']);
    assert.equal(usage.code, 2);
    const missingOpt = await roamdesk(home, ['admin', 'desktop', 'create', 'x', '--image', 'base']);
    assert.equal(missingOpt.code, 2);
  });

  it('start / stop / logs on the fake runtime', async () => {
    const s = ok(await roamdesk(home, ['start', 'work']));
    assert.match(s.stdout, /Desktop work is running/);
    assert.ok(t.runtime.calls.includes('start work'));
    const logs = ok(await roamdesk(home, ['logs', 'work']));
    assert.equal(logs.stdout, 'boot work\nlogin: ');
    const tail = json<{ log: string }>(ok(await roamdesk(home, ['logs', 'work', '--tail', '7', '--json'])));
    assert.equal(tail.log, 'login: ');
    const running = await roamdesk(home, ['export', 'work', join(work, 'running.qcow2')]);
    assert.equal(running.code, 1);
    assert.match(running.stderr, /\[DESKTOP_RUNNING\]/);
    assert.match(running.stderr, /hint: stop it first/);
    const st = ok(await roamdesk(home, ['stop', 'work', '--json']));
    assert.equal(json<{ desktop: { state: string } }>(st).desktop.state, 'stopped');
    assert.equal(t.runtime.calls.at(-1), `stop work ${STOP_TIMEOUT_MS}`, 'a graceful stop gets the server\'s timeout');
    ok(await roamdesk(home, ['start', 'work']));
    const forced = ok(await roamdesk(home, ['stop', 'work', '--force']));
    assert.match(forced.stdout, /Desktop work is stopped/);
    assert.equal(t.runtime.calls.at(-1), 'stop work 0', '--force: no time for a graceful power-down');
    ok(await roamdesk(home, ['start', 'work']));
    const patient = ok(await roamdesk(home, ['stop', 'work', '--timeout', '300']));
    assert.match(patient.stderr, /killed after 300 s/);
    assert.equal(t.runtime.calls.at(-1), 'stop work 300000', '--timeout: the guest gets that long');
    for (const bad of [['--timeout', '3601'], ['--timeout', 'soon'], ['--timeout', '5', '--force']]) {
      const r = await roamdesk(home, ['stop', 'work', ...bad]);
      assert.equal(r.code, 2, `${bad.join(' ')}: a usage error`);
    }
    assert.equal(t.runtime.calls.at(-1), 'stop work 300000', 'a refused stop changes nothing');
    const unknown = await roamdesk(home, ['start', 'nosuch']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /\[NOT_FOUND\]/);
  });

  it('export writes the qcow2 and refuses to overwrite without --force', async () => {
    const file = join(work, 'work.qcow2');
    const r = ok(await roamdesk(home, ['export', 'work', file, '--json']));
    const out = json<{ file: string; bytes: number }>(r);
    assert.equal(out.file, file);
    const bytes = await readFile(file);
    assert.equal(bytes.toString('latin1'), 'QFI\xfbchain of work');
    assert.equal(out.bytes, bytes.length);
    const again = await roamdesk(home, ['export', 'work', file]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already exists.*\[CLIENT_ERR_FILE_EXISTS\]/);
    assert.match(again.stderr, /--force/);
    ok(await roamdesk(home, ['export', 'work', file, '--force']));
  });

  it('console prints the console page URL', async () => {
    ok(await roamdesk(home, ['start', 'work']));
    try {
      const r = ok(await roamdesk(home, ['console', 'work']));
      assert.match(r.stdout.trim(), new RegExp(`^${url}/console/work`));
      const j = json<{ url: string; expiresAt: string }>(ok(await roamdesk(home, ['console', 'work', '--json'])));
      assert.ok(j.url.startsWith(`${url}/console/work`));
    } finally {
      ok(await roamdesk(home, ['stop', 'work']));
    }
  });

  it('console: a server without the console endpoint is named as such', async () => {
    // A stand-in server that answers every request like the server's not-found handler does.
    const fake = createHttpServer((req, res) => {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'NOT_FOUND', message: `no route ${req.method ?? ''} ${req.url ?? ''}` } }));
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const fakeUrl = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`;
    const fakeHome = await mkdtemp(join(tmpdir(), 'roamdesk-cli-old-'));
    try {
      const session = { user: 'admin', role: 'admin', token: 'rdt_x', expiresAt: '2099-01-01T00:00:00.000Z' };
      await writeFile(join(fakeHome, 'state.json'), JSON.stringify({ version: 1, server: fakeUrl, session }), { mode: 0o600 });
      const r = await roamdesk(fakeHome, ['console', 'work']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /does not support remote consoles \[CLI_CONSOLE_UNSUPPORTED\]/);
    } finally {
      await new Promise<void>((r) => fake.close(() => r()));
      await rm(fakeHome, { recursive: true, force: true });
    }
  });

  it('admin events shows what happened', async () => {
    const r = ok(await roamdesk(home, ['admin', 'events', '--desktop', 'work', '--json']));
    const actions = json<{ events: Array<{ action: string; result: string }> }>(r).events.map((e) => e.action);
    for (const a of ['desktop.create', 'desktop.start', 'desktop.stop', 'desktop.export']) assert.ok(actions.includes(a), `${a} in ${actions.join()}`);
    const human = ok(await roamdesk(home, ['admin', 'events', '--limit', '3']));
    assert.equal(human.stdout.trim().split('\n').length, 4);
    assert.match(human.stdout, /^ID\s+AT\s+ACTOR\s+ACTION\s+TARGET\s+RESULT$/m);
  });

  it('a non-admin gets FORBIDDEN with a hint', async () => {
    const aliceHome = await mkdtemp(join(tmpdir(), 'roamdesk-cli-alice-'));
    try {
      ok(await roamdesk(aliceHome, ['login', url, '--user', 'alice', '--password-stdin'], 'alice-password'));
      const mine = ok(await roamdesk(aliceHome, ['desktops']));
      assert.match(mine.stdout, /^work\s+stopped/m);
      const r = await roamdesk(aliceHome, ['admin', 'user', 'list']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /\[FORBIDDEN\]/);
      assert.match(r.stderr, /administrator account \(you are logged in as alice\)/);
    } finally {
      await rm(aliceHome, { recursive: true, force: true });
    }
  });

  it('admin desktop remove / image remove', async () => {
    const inUse = await roamdesk(home, ['admin', 'image', 'remove', 'base']);
    assert.equal(inUse.code, 1);
    assert.match(inUse.stderr, /\[IMAGE_IN_USE\]/);
    ok(await roamdesk(home, ['admin', 'desktop', 'remove', 'work']));
    ok(await roamdesk(home, ['admin', 'image', 'remove', 'base']));
    assert.match(ok(await roamdesk(home, ['admin', 'desktop', 'list'])).stdout, /No desktops/);
  });

  it('usage errors exit 2', async () => {
    assert.equal((await roamdesk(home, ['frobnicate'])).code, 2);
    assert.equal((await roamdesk(home, ['start'])).code, 2);
    assert.equal((await roamdesk(home, ['logs', 'work', '--tail', '-5'])).code, 2);
    assert.equal((await roamdesk(home, ['login', url])).code, 2);
    const halfTls = await roamdesk(home, ['server', '--data', join(home, 'never'), '--tls-cert', join(home, 'cert.pem')]);
    assert.equal(halfTls.code, 2);
    assert.match(halfTls.stderr, /--tls-cert and --tls-key go together/);
  });

  it('logout revokes the token; the next command says to log in', async () => {
    const before = JSON.parse(await readFile(join(home, 'state.json'), 'utf8')) as { session: { token: string } };
    const r = ok(await roamdesk(home, ['logout', '--json']));
    assert.deepEqual(json<{ loggedOut: boolean; revoked: boolean }>(r), { server: url, user: 'admin', loggedOut: true, revoked: true });
    const me = await t.request('GET', '/api/v1/me', { token: before.session.token });
    assert.equal(me.statusCode, 401);
    const after = await roamdesk(home, ['desktops']);
    assert.equal(after.code, 1);
    assert.match(after.stderr, new RegExp(`not logged in: run \`roamdesk login ${url} --user NAME\``));
    assert.match(ok(await roamdesk(home, ['logout'])).stdout, /Not logged in/);
  });

  it('an unreachable server is a clear error naming the URL', async () => {
    const port = await closedPort();
    const r = await roamdesk(home, ['login', `http://127.0.0.1:${port}`, '--user', 'admin', '--password-stdin'], 'x');
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`cannot reach the Roamdesk server at http://127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\) \\[CLIENT_ERR_UNREACHABLE\\]`));
    assert.match(r.stderr, /hint: check that the server is running/);
    const bad = await roamdesk(home, ['login', 'ftp://example', '--user', 'admin', '--password-stdin'], 'x');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /CLIENT_ERR_BAD_URL/);
  });
});
