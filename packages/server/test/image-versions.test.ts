// New image versions as layers, through the HTTP API over the REAL store and qemu-img (small images, seconds):
// publishing version N+1 stores ONE layer over version N's top object, whose chain shows the guest exactly the
// uploaded disk; new desktops start from the latest version; every refusal leaves the database rows and the
// store's objects exactly as they were.

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Store } from '@roamdesk/store';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import type { Kysely } from 'kysely';
import { pino } from 'pino';
import { buildApp } from '../src/app.ts';
import { ensureInitialAdmin } from '../src/auth/bootstrap.ts';
import { dataPaths, parseConfig } from '../src/config.ts';
import { migrateToLatest } from '../src/db/migrations.ts';
import type { Database } from '../src/db/schema.ts';
import { openSqlite } from '../src/db/sqlite.ts';
import { storeAdapter } from '../src/runtime/store-adapter.ts';
import { ManifestCache } from '@roamdesk/transfer';
import { transferAdapter } from '../src/runtime/transfer-adapter.ts';
import { FakeClock, FakeRuntime, SeqIds } from './fakes.ts';
import { ADMIN_PASSWORD, errorCode, testHasher, USER_PASSWORD } from './harness.ts';

const MiB = 1024 * 1024;
const haveTools = spawnSync('qemu-img', ['--version']).status === 0 && spawnSync('qemu-io', ['--version']).status === 0;

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** qemu-io writes: `-P pattern` data, or `-z` zeroes. Offsets and lengths in MiB or KiB strings as qemu-io reads them. */
function qemuIo(file: string, ...commands: string[]): void {
  run('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), file]);
}

/** Flatten into a standalone qcow2 (the file layout shifts: clusters land elsewhere than in the source). */
function flatten(source: string, dest: string, extra: string[] = []): void {
  run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', ...extra, source, dest]);
}

/** `qemu-img compare`: the guest views of the two are identical (exit 0). */
function sameGuestView(a: string, b: string, formatB: 'qcow2' | 'raw' = 'qcow2'): boolean {
  return spawnSync('qemu-img', ['compare', '-f', 'qcow2', '-F', formatB, a, b]).status === 0;
}

type VersionBody = { version: number; topObjectId: string; diffSize: number; createdAt: string; createdBy: string | null };
type ImageBody = { id: string; name: string; size: number; virtualSize: number; version: number; topObjectId: string; versions: VersionBody[] };
type PublishBody = { image: ImageBody; version: VersionBody };

describe('image versions as layers (real store and qemu-img)', { skip: haveTools ? false : 'qemu-img / qemu-io not installed' }, () => {
  let dir = '';
  let app: FastifyInstance;
  let db: Kysely<Database>;
  let store: Store;
  let admin = '';
  let gina = '';
  const src = (name: string) => join(dir, 'src', name);

  const request = (method: InjectOptions['method'], url: string, token: string, body?: unknown, headers: Record<string, string> = {}) => {
    const o: InjectOptions = { url, headers: { ...headers, authorization: `Bearer ${token}` } };
    if (method !== undefined) o.method = method;
    if (body !== undefined) o.payload = body as NonNullable<InjectOptions['payload']>;
    return app.inject(o);
  };
  const login = async (user: string, password: string) =>
    (await request('POST', '/api/v1/auth/login', '', { user, password })).json<{ token: string }>().token;
  const publish = (image: string, path: string, format?: 'qcow2' | 'raw', token = admin) =>
    request('POST', `/api/v1/images/${image}/versions`, token, { path, ...(format === undefined ? {} : { format }) });
  const upload = (image: string, path: string, token = admin) =>
    request('PUT', `/api/v1/images/${image}/versions?format=qcow2`, token, createReadStream(path), { 'content-type': 'application/octet-stream' });
  const getImage = async (name: string) => (await request('GET', `/api/v1/images/${name}`, admin)).json<{ image: ImageBody }>().image;
  const ok = (r: LightMyRequestResponse, status = 201) => {
    assert.equal(r.statusCode, status, r.body);
    return r;
  };

  /** Everything a refused publish must leave as it was. */
  const snapshot = async () => ({
    images: await db.selectFrom('images').selectAll().orderBy('id').execute(),
    versions: await db.selectFrom('image_versions').selectAll().orderBy('image_id').orderBy('version').execute(),
    desktops: await db.selectFrom('desktops').selectAll().orderBy('id').execute(),
    objects: (await store.list()).map((o) => o.id).sort(),
    files: (await readdir(join(dir, 'data', 'store', 'objects'))).sort(),
    uploads: await readdir(join(dir, 'data', 'uploads')),
  });

  let v1 = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'roamdesk-versions-'));
    await mkdir(join(dir, 'src'));
    const config = parseConfig({ dataDir: join(dir, 'data'), logLevel: 'silent' }, {});
    const paths = dataPaths(config.dataDir);
    for (const d of [paths.store, paths.vms, paths.uploads]) await mkdir(d, { recursive: true });
    db = openSqlite(paths.database);
    await migrateToLatest(db);
    store = await Store.open(paths.store);
    const deps = {
      db, store: storeAdapter(store), transfer: transferAdapter(store, new ManifestCache(paths.manifests)), runtime: new FakeRuntime(), clock: new FakeClock(), ids: new SeqIds(), hasher: testHasher, config,
      logger: pino({ level: 'silent' }),
    };
    await ensureInitialAdmin(deps, ADMIN_PASSWORD);
    app = await buildApp(deps);
    admin = await login('admin', ADMIN_PASSWORD);
    ok(await request('POST', '/api/v1/users', admin, { name: 'gina', password: USER_PASSWORD, role: 'user' }));
    gina = await login('gina', USER_PASSWORD);

    // v1: 64 MiB virtual, 6 MiB written. v2: v1 with rewritten clusters, writes into holes and zeroed data,
    // flattened. v3: v2 plus one more write, flattened.
    run('qemu-img', ['create', '-q', '-f', 'qcow2', src('v1.qcow2'), '64M']);
    qemuIo(src('v1.qcow2'), 'write -P 0x11 0 4M', 'write -P 0x22 16M 2M');
    await copyFile(src('v1.qcow2'), src('work.qcow2'));
    qemuIo(src('work.qcow2'), 'write -P 0x33 1M 256k', 'write -P 0x44 40M 1M', 'write -P 0x45 63M 64k', 'write -z 16M 64k');
    flatten(src('work.qcow2'), src('v2.qcow2'));
    qemuIo(src('work.qcow2'), 'write -P 0x55 50M 512k');
    flatten(src('work.qcow2'), src('v3.qcow2'));

    const image = ok(await request('POST', '/api/v1/images', admin, { name: 'base', path: src('v1.qcow2'), format: 'qcow2' }));
    v1 = image.json<{ image: ImageBody }>().image.id;
    ok(await request('POST', '/api/v1/desktops', admin, { name: 'early', owner: 'gina', image: 'base' }));
  });
  after(async () => {
    await app.close();
    await db.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  it('a new image is its own version 1', async () => {
    const image = await getImage('base');
    assert.equal(image.version, 1);
    assert.equal(image.topObjectId, v1);
    assert.deepEqual(image.versions.map((v) => [v.version, v.topObjectId, v.diffSize, v.createdBy]), [[1, v1, image.size, 'admin']]);
  });

  let layer2 = '';
  it('publishing v2 stores one layer over v1 whose chain shows the guest v2, far smaller than v2', async () => {
    const r = ok(await publish('base', src('v2.qcow2')));
    const { image, version } = r.json<PublishBody>();
    layer2 = version.topObjectId;
    assert.equal(version.version, 2);
    assert.equal(version.createdBy, 'admin');
    assert.equal(image.id, v1, 'the image keeps its identity');
    assert.equal(image.version, 2);
    assert.equal(image.topObjectId, layer2);
    assert.deepEqual(image.versions.map((v) => v.version), [1, 2]);

    const info = await store.get(layer2);
    assert.equal(info?.kind, 'layer');
    assert.equal(info?.parent, v1);
    assert.deepEqual((await store.chain(layer2)).map((o) => o.id), [v1, layer2], 'headers name the parent, relatively');
    assert.ok(sameGuestView(store.objectPath(layer2), src('v2.qcow2')), 'qemu-img compare: chain v1 → layer = v2');
    assert.ok(!sameGuestView(store.objectPath(v1), src('v2.qcow2')), 'and v2 really differs from v1');

    const v2Size = (await stat(src('v2.qcow2'))).size;
    assert.equal(version.diffSize, (await stat(store.objectPath(layer2))).size);
    assert.ok(version.diffSize * 3 < v2Size, `layer ${version.diffSize} bytes vs v2 ${v2Size} bytes`);

    // Only v1 and the layer are left: the standalone v2 and the temp overlay are gone.
    assert.deepEqual((await store.list()).map((o) => o.id).sort(), [v1, layer2].sort());
    assert.deepEqual((await readdir(join(dir, 'data', 'store', 'objects'))).filter((n) => !/^[0-9a-f]{64}\.qcow2$/.test(n)), []);
  });

  it('a desktop created afterwards starts on v2; one created before stays on v1', async () => {
    ok(await request('POST', '/api/v1/desktops', admin, { name: 'late', owner: 'gina', image: 'base' }));
    const rows = await db.selectFrom('desktops').select(['name', 'image_id', 'top_object_id']).orderBy('name').execute();
    assert.deepEqual(rows, [
      { name: 'early', image_id: v1, top_object_id: v1 },
      { name: 'late', image_id: v1, top_object_id: layer2 },
    ]);
    // Its overlay, made at first start, sits on the v2 layer.
    ok(await request('POST', '/api/v1/desktops/late/start', gina), 200);
    const row = await db.selectFrom('desktops').select('overlay_path').where('name', '=', 'late').executeTakeFirstOrThrow();
    const overlay = join(dir, 'data', row.overlay_path ?? '');
    const backing = JSON.parse(run('qemu-img', ['info', '-f', 'qcow2', '--output=json', '-U', overlay])) as { 'backing-filename'?: string };
    assert.equal(backing['backing-filename'], `${layer2}.qcow2`);
    assert.ok(sameGuestView(overlay, src('v2.qcow2')));
    ok(await request('POST', '/api/v1/desktops/late/stop', gina), 200);
  });

  let layer3 = '';
  it('a third version (streamed upload) chains on the second', async () => {
    const r = ok(await upload('base', src('v3.qcow2')));
    const { image, version } = r.json<PublishBody>();
    layer3 = version.topObjectId;
    assert.equal(version.version, 3);
    assert.equal(image.topObjectId, layer3);
    assert.equal((await store.get(layer3))?.parent, layer2);
    assert.deepEqual((await store.chain(layer3)).map((o) => o.id), [v1, layer2, layer3]);
    assert.ok(sameGuestView(store.objectPath(layer3), src('v3.qcow2')));
    assert.ok(version.diffSize < 2 * MiB, `layer 3 is ${version.diffSize} bytes for a 512 KiB change`);
    assert.deepEqual((await store.list()).map((o) => o.id).sort(), [v1, layer2, layer3].sort());
    assert.deepEqual(await readdir(join(dir, 'data', 'uploads')), []);
    const listed = (await request('GET', '/api/v1/images', gina)).json<{ images: ImageBody[] }>().images;
    assert.deepEqual(listed.map((i) => [i.name, i.version, i.topObjectId, i.versions.length]), [['base', 3, layer3, 3]]);
  });

  it('the same disk again (other bytes, same guest view; raw too) is 409 IMAGE_VERSION_UNCHANGED and changes nothing', async () => {
    const before = await snapshot();
    flatten(src('v3.qcow2'), src('v3-again.qcow2'), ['-o', 'cluster_size=131072']);
    run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', src('v3.qcow2'), src('v3.raw')]);
    for (const [path, format] of [[src('v3.qcow2'), 'qcow2'], [src('v3-again.qcow2'), 'qcow2'], [src('v3.raw'), 'raw']] as const) {
      const r = await publish('base', path, format);
      assert.equal(r.statusCode, 409, r.body);
      assert.equal(errorCode(r), 'IMAGE_VERSION_UNCHANGED');
      assert.deepEqual(r.json<{ error: { data: unknown } }>().error.data, { name: 'base', version: 3 });
    }
    assert.deepEqual(await snapshot(), before);
  });

  it('bad inputs leave the database rows and the store objects exactly as they were', async () => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', src('big.qcow2'), '128M']);
    await writeFile(src('garbage.qcow2'), Buffer.alloc(3 * 65536, 0x5a));
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', src('v1.qcow2'), '-F', 'qcow2', src('backed.qcow2')]);
    ok(await request('POST', '/api/v1/images', admin, { name: 'other', path: src('big.qcow2'), format: 'qcow2' }));
    const before = await snapshot();

    const cases: Array<[string, () => Promise<LightMyRequestResponse>, number, string]> = [
      ['different virtual size', () => publish('base', src('big.qcow2')), 422, 'IMAGE_SIZE_MISMATCH'],
      ['different virtual size, uploaded', () => upload('base', src('big.qcow2')), 422, 'IMAGE_SIZE_MISMATCH'],
      ['garbage as qcow2', () => publish('base', src('garbage.qcow2'), 'qcow2'), 422, 'QCOW2_ERR_BAD_MAGIC'],
      ['garbage, uploaded', () => upload('base', src('garbage.qcow2')), 422, 'QCOW2_ERR_BAD_MAGIC'],
      ['garbage, detected as raw (and so of another size)', () => publish('base', src('garbage.qcow2')), 422, 'IMAGE_SIZE_MISMATCH'],
      ['a qcow2 with a backing file', () => publish('base', src('backed.qcow2')), 422, 'QCOW2_ERR_UNEXPECTED_BACKING'],
      ['unknown image', () => publish('nope', src('v2.qcow2')), 404, 'NOT_FOUND'],
      ['unknown image, uploaded', () => upload('nope', src('v2.qcow2')), 404, 'NOT_FOUND'],
      ["a desktop's name", () => publish('early', src('v2.qcow2')), 404, 'NOT_FOUND'],
      ["a user's name", () => upload('gina', src('v2.qcow2')), 404, 'NOT_FOUND'],
      ['non-admin', () => publish('base', src('v2.qcow2'), undefined, gina), 403, 'FORBIDDEN'],
      ['non-admin, uploaded', () => upload('base', src('v2.qcow2'), gina), 403, 'FORBIDDEN'],
      ['relative path', () => publish('base', 'src/v2.qcow2'), 400, 'VALIDATION_FAILED'],
      ['missing file', () => publish('base', src('missing.qcow2')), 400, 'INVALID_PATH'],
      ['a directory', () => publish('base', dir), 400, 'INVALID_PATH'],
      ['an image of another size over the other image', () => publish('other', src('v2.qcow2')), 422, 'IMAGE_SIZE_MISMATCH'],
    ];
    for (const [label, call, status, code] of cases) {
      const r = await call();
      assert.equal(r.statusCode, status, `${label}: ${r.body}`);
      assert.equal(errorCode(r), code, label);
      assert.deepEqual(await snapshot(), before, label);
    }
    const mismatch = (await publish('base', src('big.qcow2'))).json<{ error: { message: string; data: unknown } }>().error;
    assert.deepEqual(mismatch.data, { name: 'base', imageVirtualSize: 64 * MiB, versionVirtualSize: 128 * MiB });
    assert.match(mismatch.message, /not supported yet/);
    ok(await request('DELETE', '/api/v1/images/other', admin), 204);
  });

  it('writes one image.publish event per version, failures included', async () => {
    const r = await request('GET', '/api/v1/events?limit=1000', admin);
    const events = r.json<{ events: Array<{ action: string; target: string; result: string; detail: Record<string, unknown> }> }>().events;
    const published = events.filter((e) => e.action === 'image.publish' && e.result === 'ok').reverse();
    assert.deepEqual(published.map((e) => [e.target, e.detail['version'], e.detail['topObjectId'], e.detail['source']]), [
      ['base', 2, layer2, 'path'],
      ['base', 3, layer3, 'upload'],
    ]);
    const failed = events.filter((e) => e.action === 'image.publish' && e.result === 'error');
    assert.ok(failed.some((e) => (e.detail['error'] as { code?: string } | undefined)?.code === 'IMAGE_SIZE_MISMATCH'));
  });

  it('deleting the image removes every version, rows and objects', async () => {
    const overlay = (await db.selectFrom('desktops').select('overlay_path').where('name', '=', 'late').executeTakeFirstOrThrow()).overlay_path;
    for (const d of ['early', 'late']) ok(await request('DELETE', `/api/v1/desktops/${d}`, admin), 204);
    // The fake runtime keeps overlays; the real one discards them with the desktop.
    await store.discardOverlay({ path: join(dir, 'data', overlay ?? ''), parent: layer2 });
    ok(await request('DELETE', '/api/v1/images/base', admin), 204);
    assert.deepEqual(await db.selectFrom('image_versions').selectAll().execute(), []);
    assert.deepEqual(await store.list(), []);
  });

  it('two publishes at once run one after the other: consecutive versions, the second over the first', async () => {
    const image = ok(await request('POST', '/api/v1/images', admin, { name: 'twin', path: src('v1.qcow2'), format: 'qcow2' }));
    const id = image.json<{ image: ImageBody }>().image.id;
    const [a, b] = await Promise.all([publish('twin', src('v2.qcow2')), upload('twin', src('v3.qcow2'))]);
    const results = [ok(a), ok(b)].map((r) => r.json<PublishBody>().version);
    const byVersion = [...results].sort((x, y) => x.version - y.version);
    assert.deepEqual(byVersion.map((v) => v.version), [2, 3]);
    const [second, third] = byVersion as [VersionBody, VersionBody];
    assert.deepEqual((await store.chain(third.topObjectId)).map((o) => o.id), [id, second.topObjectId, third.topObjectId]);
    // The chain of version 3 shows whichever disk was published last.
    const last = results[0]?.version === 3 ? src('v2.qcow2') : src('v3.qcow2');
    assert.ok(sameGuestView(store.objectPath(third.topObjectId), last));
    assert.deepEqual((await store.list()).map((o) => o.id).sort(), [id, second.topObjectId, third.topObjectId].sort());
  });
});
