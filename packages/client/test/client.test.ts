// ApiClient against a real server (buildApp over SQLite with the fake store and runtime) on 127.0.0.1.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { ApiClient, ApiError, ClientError, normalizeServerUrl, type Progress } from '../src/index.ts';
import { ADMIN_PASSWORD, createTestApp, type TestApp } from '../../server/test/harness.ts';

describe('ApiClient', () => {
  let t: TestApp;
  let url: string;
  let dir: string;
  let admin: ApiClient;

  before(async () => {
    t = await createTestApp();
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    url = `http://127.0.0.1:${(t.app.server.address() as AddressInfo).port}`;
    dir = await mkdtemp(join(tmpdir(), 'roamdesk-client-'));
    admin = new ApiClient({ server: url });
    const r = await admin.login('admin', ADMIN_PASSWORD);
    assert.equal(r.user.name, 'admin');
    assert.equal(admin.token, r.token);
  });
  after(async () => {
    await t.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('turns a refusal into ApiError with the server code, message, data and status', async () => {
    const anon = new ApiClient({ server: url });
    await assert.rejects(anon.login('admin', 'wrong'), (err: unknown) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.code, 'AUTH_INVALID');
      assert.equal(err.status, 401);
      return true;
    });
    await assert.rejects(anon.listDesktops(), { name: 'ApiError', code: 'AUTH_REQUIRED', status: 401 });
    await assert.rejects(admin.getDesktop('nosuch'), (err: unknown) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.status, 404);
      assert.deepEqual(err.data, { resource: 'desktop', name: 'nosuch' });
      assert.equal(err.isUnknownRoute, false);
      return true;
    });
    await assert.rejects(admin.createUser({ name: 'Bad Name', password: 'long-enough' }), { code: 'VALIDATION_FAILED', status: 400 });
  });

  it('users, images, desktops, lifecycle, log, events', async () => {
    const alice = await admin.createUser({ name: 'alice', password: 'alice-password' });
    assert.equal(alice.role, 'user');
    assert.deepEqual((await admin.listUsers()).map((u) => u.name).sort(), ['admin', 'alice']);
    assert.equal((await admin.getUser('alice')).name, 'alice');

    const src = join(dir, 'img.raw');
    await writeFile(src, 'raw bytes');
    const img = await admin.importImage({ name: 'base', path: src, format: 'raw' });
    assert.equal(img.size, 9);
    const upload = join(dir, 'upload.raw');
    await writeFile(upload, Buffer.alloc(2 * 1024 * 1024 + 5, 1));
    const seen: Progress[] = [];
    const up = await admin.uploadImage('up', upload, { format: 'raw', onProgress: (p) => seen.push(p) });
    assert.equal(up.size, 2 * 1024 * 1024 + 5);
    assert.deepEqual(seen.at(-1), { bytes: 2 * 1024 * 1024 + 5, total: 2 * 1024 * 1024 + 5 });
    assert.deepEqual((await admin.listImages()).map((i) => i.name).sort(), ['base', 'up']);
    await admin.deleteImage('up');

    const d = await admin.createDesktop({ name: 'desk', image: 'base', owner: 'alice', memoryMiB: 256 });
    assert.equal(d.memoryMiB, 256);
    assert.equal((await admin.startDesktop('desk')).state, 'running');
    assert.equal(await admin.serialLog('desk', { tail: 7 }), 'login: ');
    assert.equal((await admin.restartDesktop('desk')).state, 'running');
    assert.equal((await admin.stopDesktop('desk')).state, 'stopped');

    const aliceClient = new ApiClient({ server: url });
    await aliceClient.login('alice', 'alice-password');
    assert.deepEqual((await aliceClient.listDesktops()).map((x) => x.name), ['desk']);
    assert.equal((await aliceClient.me()).name, 'alice');
    await assert.rejects(aliceClient.listUsers(), { code: 'FORBIDDEN', status: 403 });

    const events = await admin.listEvents({ desktop: 'desk', limit: 10 });
    assert.ok(events.some((e) => e.action === 'desktop.start'));
    assert.equal((await admin.listEvents({ limit: 1 })).length, 1);
  });

  it('exports to a file through a temp file, with progress, refusing to overwrite', async () => {
    const file = join(dir, 'desk.qcow2');
    const seen: Progress[] = [];
    const r = await admin.exportDesktop('desk', file, { onProgress: (p) => seen.push(p) });
    const bytes = await readFile(file);
    assert.equal(bytes.toString('latin1'), 'QFI\xfbchain of desk');
    assert.equal(r.bytes, bytes.length);
    assert.equal(seen.at(-1)?.bytes, bytes.length);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    await writeFile(file, 'keep me');
    await assert.rejects(admin.exportDesktop('desk', file), (err: unknown) => err instanceof ClientError && err.code === 'CLIENT_ERR_FILE_EXISTS');
    assert.equal(await readFile(file, 'utf8'), 'keep me');
    await admin.exportDesktop('desk', file, { overwrite: true });
    assert.equal((await readFile(file)).length, bytes.length);
    // A refused export leaves nothing behind: no target, no temp file.
    await admin.startDesktop('desk');
    const other = join(dir, 'running.qcow2');
    await assert.rejects(admin.exportDesktop('desk', other), { code: 'DESKTOP_RUNNING', status: 409 });
    await assert.rejects(stat(other), { code: 'ENOENT' });
    await admin.stopDesktop('desk');
  });

  it('console: a URL made absolute, or an unknown-route 404', async () => {
    await assert.rejects(admin.createConsole('desk'), (err: unknown) => err instanceof ApiError && !err.isUnknownRoute);
    await admin.startDesktop('desk');
    try {
      const c = await admin.createConsole('desk');
      assert.ok(c.url.startsWith(`${url}/console/desk`), c.url);
    } catch (err) {
      // A server without the console feature answers with its not-found handler.
      assert.ok(err instanceof ApiError && err.isUnknownRoute, String(err));
    } finally {
      await admin.stopDesktop('desk');
    }
  });

  it('logout revokes the token', async () => {
    const c = new ApiClient({ server: url });
    await c.login('alice', 'alice-password');
    const token = c.token ?? '';
    await c.logout();
    assert.equal(c.token, undefined);
    await assert.rejects(new ApiClient({ server: url, token }).me(), { code: 'AUTH_INVALID', status: 401 });
  });

  it('an unreachable server is CLIENT_ERR_UNREACHABLE naming the URL and what to check', async () => {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const { port } = srv.address() as AddressInfo;
    await new Promise<void>((r) => srv.close(() => r()));
    const c = new ApiClient({ server: `http://127.0.0.1:${port}` });
    await assert.rejects(c.listDesktops(), (err: unknown) => {
      assert.ok(err instanceof ClientError);
      assert.equal(err.code, 'CLIENT_ERR_UNREACHABLE');
      assert.match(err.message, new RegExp(`http://127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`));
      assert.equal(err.data['cause'], 'ECONNREFUSED');
      assert.match(String(err.data['hint']), /server is running/);
      return true;
    });
  });

  it('a non-API answer is CLIENT_ERR_BAD_RESPONSE', async () => {
    const c = new ApiClient({ server: url, fetch: () => Promise.resolve(new Response('<html>proxy</html>', { status: 502 })) });
    await assert.rejects(c.listDesktops(), { code: 'CLIENT_ERR_BAD_RESPONSE' });
  });

  it('normalizes server URLs and refuses bad ones', () => {
    assert.equal(normalizeServerUrl('http://h:1/'), 'http://h:1');
    assert.equal(normalizeServerUrl('https://h/roamdesk/'), 'https://h/roamdesk');
    for (const bad of ['h:1', 'ftp://h', 'http://u:p@h', 'http://h/?x=1', 'not a url']) {
      assert.throws(() => normalizeServerUrl(bad), { code: 'CLIENT_ERR_BAD_URL' });
    }
  });
});
