import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { EngineError } from './fakes.ts';
import { createTestApp, errorCode, type TestApp } from './harness.ts';

type ImageBody = { image: { id: string; name: string; size: number; virtualSize: number; usage: number; format: string; createdBy: string | null } };

describe('images', () => {
  let t: TestApp;
  let userToken: string;
  before(async () => {
    t = await createTestApp({ uploadMaxBytes: 1024 });
    userToken = await t.createUser('gina');
  });
  after(() => t.close());

  const uploads = () => readdir(join(t.dir, 'uploads'));
  const imageCount = async () => (await t.db.selectFrom('images').select('id').execute()).length;

  it('imports from a server path', async () => {
    const r = await t.importImage('debian', 'debian bytes');
    assert.equal(r.statusCode, 201);
    const { image } = r.json<ImageBody>();
    assert.equal(image.id, createHash('sha256').update('debian bytes').digest('hex'));
    assert.equal(image.size, 12);
    assert.equal(image.virtualSize, 24);
    assert.equal(image.usage, 0);
    assert.equal(image.format, 'raw');
    assert.equal(image.createdBy, 'admin');
    assert.ok(t.store.objects.has(image.id));
  });

  it('refuses a path that is relative, missing, or not a regular file, before calling the store', async () => {
    const calls = t.store.calls.length;
    for (const [path, status, code] of [
      ['relative/file', 400, 'VALIDATION_FAILED'],
      ['/nonexistent/file.img', 400, 'INVALID_PATH'],
      [t.dir, 400, 'INVALID_PATH'],
      ['/etc/../nonexistent', 400, 'INVALID_PATH'],
    ] as const) {
      const r = await t.request('POST', '/api/v1/images', { token: t.adminToken, body: { name: 'p', path } });
      assert.equal(r.statusCode, status, path);
      assert.equal(errorCode(r), code, path);
    }
    assert.equal(t.store.calls.length, calls);
  });

  it('uploads a streamed body and removes the temp file', async () => {
    const r = await t.request('PUT', '/api/v1/images/uploaded/content?format=qcow2', {
      token: t.adminToken,
      body: Readable.from([Buffer.from('part one, '), Buffer.from('part two')]),
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(r.statusCode, 201, r.body);
    const { image } = r.json<ImageBody>();
    assert.equal(image.size, 18);
    assert.equal(image.format, 'qcow2');
    assert.deepEqual(await uploads(), []);
  });

  it('refuses an upload over the limit, an empty one and a wrong content type; nothing is left behind', async () => {
    const n = await imageCount();
    const big = await t.request('PUT', '/api/v1/images/big/content', {
      token: t.adminToken,
      body: Readable.from([Buffer.alloc(600), Buffer.alloc(600)]),
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(big.statusCode, 413);
    assert.equal(errorCode(big), 'PAYLOAD_TOO_LARGE');
    const declared = await t.request('PUT', '/api/v1/images/big/content', {
      token: t.adminToken,
      body: Buffer.alloc(2000),
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(declared.statusCode, 413);
    const empty = await t.request('PUT', '/api/v1/images/empty/content', {
      token: t.adminToken,
      body: Buffer.alloc(0),
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(empty.statusCode, 400);
    const json = await t.request('PUT', '/api/v1/images/j/content', { token: t.adminToken, body: { a: 1 } });
    assert.equal(json.statusCode, 415);
    assert.equal(errorCode(json), 'UNSUPPORTED_MEDIA_TYPE');
    assert.equal(await imageCount(), n);
    assert.deepEqual(await uploads(), []);
  });

  it('a failed import leaves nothing: no row, no object, no temp; the engine code passes through', async () => {
    const n = await imageCount();
    const objects = t.store.objects.size;
    const r = await t.request('PUT', '/api/v1/images/bad/content?format=qcow2', {
      token: t.adminToken,
      body: Buffer.from('BAD header'),
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(r.statusCode, 422);
    assert.equal(errorCode(r), 'QCOW2_ERR_BAD_MAGIC');
    assert.deepEqual(r.json<{ error: { data: unknown } }>().error.data, { found: '0x42414400' });
    t.store.failNext = new Error('disk on fire at /secret/path');
    const internal = await t.importImage('boom');
    assert.equal(internal.statusCode, 500);
    assert.equal(errorCode(internal), 'INTERNAL');
    assert.ok(!internal.body.includes('/secret/path') && !internal.body.includes('at '));
    assert.equal(await imageCount(), n);
    assert.equal(t.store.objects.size, objects);
    assert.deepEqual(await uploads(), []);
  });

  it('refuses a taken name, and the same bytes under a second name without dropping the first', async () => {
    const dup = await t.importImage('debian', 'other bytes');
    assert.equal(dup.statusCode, 409);
    const same = await t.importImage('debian-copy', 'debian bytes');
    assert.equal(same.statusCode, 409);
    assert.equal(errorCode(same), 'CONFLICT');
    const id = createHash('sha256').update('debian bytes').digest('hex');
    assert.ok(t.store.objects.has(id), 'the object of the existing image is kept');
    const upload = await t.request('PUT', '/api/v1/images/debian/content', {
      token: t.adminToken,
      body: Buffer.from('x'),
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(upload.statusCode, 409);
  });

  it('lists images with usage; users may read, not write', async () => {
    assert.equal((await t.createDesktop('gina-desk', 'gina', 'debian')).statusCode, 201);
    const r = await t.request('GET', '/api/v1/images', { token: userToken });
    assert.equal(r.statusCode, 200);
    const images = r.json<{ images: ImageBody['image'][] }>().images;
    assert.deepEqual(images.map((i) => [i.name, i.usage]), [['debian', 1], ['uploaded', 0]]);
    assert.equal((await t.request('GET', '/api/v1/images/debian', { token: userToken })).statusCode, 200);
    assert.equal((await t.request('DELETE', '/api/v1/images/uploaded', { token: userToken })).statusCode, 403);
    assert.equal((await t.request('POST', '/api/v1/images', { token: userToken, body: { name: 'x', path: '/etc/hostname' } })).statusCode, 403);
  });

  it('deletes an image only when unused, and then drops its object', async () => {
    const inUse = await t.request('DELETE', '/api/v1/images/debian', { token: t.adminToken });
    assert.equal(inUse.statusCode, 409);
    assert.equal(errorCode(inUse), 'IMAGE_IN_USE');
    assert.deepEqual(inUse.json<{ error: { data: unknown } }>().error.data, { desktops: 1 });

    const id = (await t.request('GET', '/api/v1/images/uploaded', { token: t.adminToken })).json<ImageBody>().image.id;
    assert.equal((await t.request('DELETE', '/api/v1/images/uploaded', { token: t.adminToken })).statusCode, 204);
    assert.ok(!t.store.objects.has(id));
    assert.equal((await t.request('GET', '/api/v1/images/uploaded', { token: t.adminToken })).statusCode, 404);

    assert.equal((await t.request('DELETE', '/api/v1/desktops/gina-desk', { token: t.adminToken })).statusCode, 204);
    assert.equal((await t.request('DELETE', '/api/v1/images/debian', { token: t.adminToken })).statusCode, 204);
  });

  it('writes image events, failures included', async () => {
    const r = await t.request('GET', '/api/v1/events?limit=1000', { token: t.adminToken });
    const events = r.json<{ events: Array<{ action: string; target: string; result: string; detail: { error?: { code: string } } }> }>().events;
    const find = (action: string, target: string, result: string) => events.find((e) => e.action === action && e.target === target && e.result === result);
    assert.ok(find('image.import', 'debian', 'ok'));
    assert.equal(find('image.upload', 'bad', 'error')?.detail.error?.code, 'QCOW2_ERR_BAD_MAGIC');
    assert.equal(find('image.import', 'boom', 'error')?.detail.error?.code, 'INTERNAL');
    assert.equal(find('image.delete', 'debian', 'error')?.detail.error?.code, 'IMAGE_IN_USE');
    assert.ok(find('image.delete', 'uploaded', 'ok'));
  });

  it('cleans an engine error raised with data through', async () => {
    t.store.failNext = new EngineError('STORE_ERR_UNSUPPORTED_SOURCE', 'not an image', { source: 'f.img' });
    const src = join(t.dir, 'x');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'f.img'), 'bytes');
    const r = await t.request('POST', '/api/v1/images', { token: t.adminToken, body: { name: 'odd', path: join(src, 'f.img') } });
    assert.equal(r.statusCode, 422);
    assert.deepEqual(r.json(), { error: { code: 'STORE_ERR_UNSUPPORTED_SOURCE', message: 'not an image', data: { source: 'f.img' } } });
  });

  it("a full disk under the server's store is 507, with the message and without the server's details", async () => {
    t.store.failNext = new EngineError('STORE_ERR_NO_SPACE', 'the object needs 5.0 MB in /srv/store/objects, which has 1.0 MB free', { needed: 5e6, free: 1e6 });
    const r = await t.request('POST', '/api/v1/images', { token: t.adminToken, body: { name: 'nospace', path: join(t.dir, 'x', 'f.img') } });
    assert.equal(r.statusCode, 507);
    const body = r.json<{ error: { code: string; message: string; data: Record<string, unknown> } }>();
    assert.equal(body.error.code, 'STORE_ERR_NO_SPACE');
    assert.match(body.error.message, /needs 5\.0 MB/);
    assert.deepEqual(Object.keys(body.error.data), ['requestId']);
  });
});
