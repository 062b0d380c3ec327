import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { type Kysely, sql } from 'kysely';
import { isForeignKeyViolation, isUniqueViolation } from '../src/db/constraints.ts';
import { MIGRATIONS, migrateTo, migrateToLatest } from '../src/db/migrations.ts';
import { openPostgres } from '../src/db/postgres.ts';
import { findDeviceByHash } from '../src/db/repositories/devices.ts';
import { findDesktopById, listDesktops, moveLease, transitionState } from '../src/db/repositories/desktops.ts';
import { finishOperation, insertOperation, listOperations } from '../src/db/repositories/operations.ts';
import { listEvents } from '../src/db/repositories/events.ts';
import { findImageByName, insertImage, insertImageVersion, listImages } from '../src/db/repositories/images.ts';
import { findUserByName } from '../src/db/repositories/users.ts';
import type { Database } from '../src/db/schema.ts';
import { openSqlite } from '../src/db/sqlite.ts';
import { createTestApp, errorCode } from './harness.ts';

const run = promisify(execFile);

/** Repository queries that must behave the same on both databases. */
async function exerciseRepositories(db: Kysely<Database>): Promise<void> {
  const at = '2025-01-01T00:00:00.000Z';
  await db.insertInto('users').values({ id: 'u1', name: 'ann', password_hash: 'x', role: 'user', created_at: at, disabled: 0 }).execute();
  await assert.rejects(
    db.insertInto('users').values({ id: 'u2', name: 'ann', password_hash: 'x', role: 'user', created_at: at, disabled: 0 }).execute(),
    (e: unknown) => isUniqueViolation(e),
  );
  const big = 5 * 1024 ** 3; // above 2^32: the bigint column round-trips as a number
  await db.insertInto('images').values({ id: 'a'.repeat(64), name: 'img', format: 'qcow2', size: big, virtual_size: big * 2, created_at: at, created_by: 'u1' }).execute();
  await db.insertInto('desktops').values({
    id: 'd1', name: 'desk', owner_id: 'u1', image_id: 'a'.repeat(64), memory_mib: 512, cpus: 1, kernel: null, initrd: null,
    append: 'console=ttyS0', state: 'stopped', location: 'server', lease_generation: 1, top_object_id: 'a'.repeat(64),
    overlay_path: 'vms/d1/overlay.qcow2', created_at: at, updated_at: at,
  }).execute();
  const [image] = await listImages(db);
  assert.equal(image?.size, big);
  assert.equal(image?.usage, 1);
  assert.equal(image?.created_by_name, 'ann');
  // A row written around insertImage has no version rows: it reads as its own version 1.
  assert.deepEqual([image?.version, image?.top_object_id, image?.versions.map((v) => [v.version, v.diff_size])], [1, 'a'.repeat(64), [[1, big]]]);
  await exerciseImageVersions(db, at);
  assert.equal(await transitionState(db, 'd1', ['stopped'], 'starting', at), true);
  assert.equal(await transitionState(db, 'd1', ['stopped'], 'starting', at), false);
  assert.equal((await listDesktops(db, { ownerId: 'u1' }))[0]?.state, 'starting');
  await exerciseLeases(db, at);
  await assert.rejects(db.deleteFrom('images').execute(), (e: unknown) => isForeignKeyViolation(e));
  for (const action of ['desktop.start', 'desktop.stop']) {
    await db.insertInto('events').values({ at, actor_id: 'u1', actor_name: 'ann', action, desktop_id: 'd1', target: 'desk', result: 'ok', detail: '{}' }).execute();
  }
  const events = await listEvents(db, { ownerId: 'u1', limit: 10 });
  assert.deepEqual(events.map((e) => e.action), ['desktop.stop', 'desktop.start']);
  assert.equal(typeof events[0]?.id, 'number');
  assert.equal((await findUserByName(db, 'ann'))?.role, 'user');
  // Cascade: the user's tokens go with the user.
  await db.insertInto('tokens').values({ id: 't1', user_id: 'u1', token_hash: 'h', kind: 'session', created_at: at, expires_at: at, revoked_at: null, last_used_at: null, desktop_id: null, used_at: null }).execute();
  await db.deleteFrom('events').execute();
  await db.deleteFrom('desktops').execute();
  await db.deleteFrom('images').execute();
  await db.deleteFrom('users').execute();
  assert.equal((await db.selectFrom('tokens').selectAll().execute()).length, 0);
}

/** Migration 0004: devices, the lease columns (one compare-and-set move wins), operations going with their desktop. */
async function exerciseLeases(db: Kysely<Database>, at: string): Promise<void> {
  const device = { id: 'v1', user_id: 'u1', name: 'laptop', credential_hash: 'ch', created_at: at, last_seen_at: null, revoked_at: null };
  await db.insertInto('devices').values(device).execute();
  await assert.rejects(db.insertInto('devices').values({ ...device, id: 'v2' }).execute(), (e: unknown) => isUniqueViolation(e));
  assert.equal((await findDeviceByHash(db, 'ch'))?.user.name, 'ann');
  const d = await findDesktopById(db, 'd1');
  assert.deepEqual([d?.lease_state, d?.lease_device_id, d?.lease_device_name, d?.replicated_top_object_id], ['server', null, null, null]);
  const move = () => moveLease(db, 'd1', { generation: 1, state: 'server', deviceId: null }, { lease_state: 'checking-out', location: 'device', lease_device_id: 'v1', lease_generation: 2, lease_since: at });
  assert.equal(await move(), true);
  assert.equal(await move(), false, 'the same move again finds generation 2: it changes nothing');
  assert.equal(await moveLease(db, 'd1', { generation: 2, state: 'checking-out', deviceId: 'other' }, { lease_state: 'checked-out' }), false);
  assert.equal(await moveLease(db, 'd1', { generation: 2, state: 'checking-out', deviceId: 'v1', replicatedTop: null }, { lease_state: 'checked-out' }), true);
  assert.equal((await findDesktopById(db, 'd1'))?.lease_device_name, 'laptop');
  await assert.rejects(db.updateTable('desktops').set({ lease_state: 'lost' as 'server' }).where('id', '=', 'd1').execute());
  await insertOperation(db, { id: 'o1', kind: 'checkout', desktopId: 'd1', deviceId: 'v1', userId: 'u1', at });
  assert.equal(await finishOperation(db, 'o1', 'succeeded', at, { result: { generation: 2 } }), true);
  assert.equal(await finishOperation(db, 'o1', 'failed', at), false);
  assert.deepEqual((await listOperations(db, { ownerId: 'u1', limit: 10 })).map((o) => [o.id, o.state, o.desktop_name]), [['o1', 'succeeded', 'desk']]);
  await assert.rejects(insertOperation(db, { id: 'o2', kind: 'checkout', desktopId: 'nope', deviceId: null, userId: null, at }), (e: unknown) => isForeignKeyViolation(e));
}

/** Image versions: version 1 with the image, numbers taken once, the latest top, cascade with the image. */
async function exerciseImageVersions(db: Kysely<Database>, at: string): Promise<void> {
  const id = 'b'.repeat(64);
  const layer = 'c'.repeat(64);
  await insertImage(db, { id, name: 'versioned', format: 'qcow2', size: 100, virtual_size: 1000, created_at: at, created_by: 'u1' });
  const version = { image_id: id, version: 2, top_object_id: layer, diff_size: 7, created_at: at, created_by: 'u1' };
  await insertImageVersion(db, version);
  await assert.rejects(insertImageVersion(db, { ...version, top_object_id: 'd'.repeat(64) }), (e: unknown) => isUniqueViolation(e));
  await assert.rejects(insertImageVersion(db, { ...version, image_id: 'e'.repeat(64) }), (e: unknown) => isForeignKeyViolation(e));
  const image = await findImageByName(db, 'versioned');
  assert.equal(image?.version, 2);
  assert.equal(image?.top_object_id, layer);
  assert.deepEqual(image?.versions.map((v) => [v.version, v.top_object_id, v.diff_size, v.created_by_name]), [[1, id, 100, 'ann'], [2, layer, 7, 'ann']]);
  await db.deleteFrom('images').where('id', '=', id).execute();
  assert.deepEqual(await db.selectFrom('image_versions').selectAll().where('image_id', '=', id).execute(), []);
}

/** 0002 over data written under 0001: every existing image becomes its own version 1. */
async function exerciseVersionBackfill(db: Kysely<Database>): Promise<void> {
  const at = '2025-01-01T00:00:00.000Z';
  assert.deepEqual(await migrateTo(db, '0001_initial'), ['0001_initial']);
  await db.insertInto('users').values({ id: 'u1', name: 'ann', password_hash: 'x', role: 'admin', created_at: at, disabled: 0 }).execute();
  const big = 5 * 1024 ** 3;
  await db.insertInto('images').values({ id: 'a'.repeat(64), name: 'old', format: 'qcow2', size: big, virtual_size: big * 2, created_at: at, created_by: 'u1' }).execute();
  await db.insertInto('images').values({ id: 'f'.repeat(64), name: 'orphan', format: 'raw', size: 9, virtual_size: 9, created_at: at, created_by: null }).execute();
  // A desktop from before 0004: its lease is at the server since it was created.
  await sql`INSERT INTO desktops (id, name, owner_id, image_id, memory_mib, cpus, state, location, lease_generation, top_object_id, created_at, updated_at)
    VALUES ('d0', 'old-desk', 'u1', ${'a'.repeat(64)}, 512, 1, 'stopped', 'server', 3, ${'a'.repeat(64)}, ${at}, '2025-02-01T00:00:00.000Z')`.execute(db);
  assert.deepEqual(await migrateToLatest(db), Object.keys(MIGRATIONS).slice(1));
  const old = await db.selectFrom('desktops').selectAll().where('id', '=', 'd0').executeTakeFirstOrThrow();
  assert.deepEqual([old.lease_state, old.lease_device_id, old.lease_since, old.replicated_top_object_id, Number(old.lease_generation)], ['server', null, at, null, 3]);
  const rows = await db.selectFrom('image_versions').selectAll().orderBy('image_id').execute();
  assert.deepEqual(rows, [
    { image_id: 'a'.repeat(64), version: 1, top_object_id: 'a'.repeat(64), diff_size: big, created_at: at, created_by: 'u1' },
    { image_id: 'f'.repeat(64), version: 1, top_object_id: 'f'.repeat(64), diff_size: 9, created_at: at, created_by: null },
  ]);
}

describe('database on SQLite', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'roamdesk-db-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('migrates, and migrating again is a no-op', async () => {
    const file = join(dir, 'a.db');
    let db = openSqlite(file);
    assert.deepEqual(await migrateToLatest(db), Object.keys(MIGRATIONS));
    assert.deepEqual(await migrateToLatest(db), []);
    await db.destroy();
    db = openSqlite(file);
    assert.deepEqual(await migrateToLatest(db), []);
    const tables = await db.introspection.getTables();
    for (const t of ['users', 'tokens', 'images', 'image_versions', 'desktops', 'events', 'uploaded_objects', 'devices', 'operations']) assert.ok(tables.some((x) => x.name === t), t);
    await db.destroy();
  });

  it('0002 backfills every existing image as its version 1', async () => {
    const db = openSqlite(join(dir, 'c.db'));
    await exerciseVersionBackfill(db);
    await db.destroy();
  });

  it('runs the repository queries, with WAL and foreign keys on', async () => {
    const db = openSqlite(join(dir, 'b.db'));
    await migrateToLatest(db);
    await exerciseRepositories(db);
    await db.destroy();
  });
});

async function findPgBin(): Promise<string | undefined> {
  for (const dir of ['/usr/lib/postgresql/15/bin', ...(process.env['PATH'] ?? '').split(':')]) {
    try {
      await run(join(dir, 'pg_ctl'), ['--version']);
      return dir;
    } catch {
      // not here
    }
  }
  return undefined;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr !== null ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

describe('database on PostgreSQL', async () => {
  const bin = await findPgBin();
  // initdb refuses to run as root; as root the cluster is run as the `postgres` system user.
  const isRoot = process.getuid?.() === 0;
  let pgUid: number | undefined;
  if (isRoot) {
    try {
      pgUid = Number((await run('id', ['-u', 'postgres'])).stdout.trim());
    } catch {
      pgUid = undefined;
    }
  }
  const skip = bin === undefined ? 'PostgreSQL (pg_ctl/initdb) is not installed' : isRoot && pgUid === undefined ? 'running as root without a postgres user for initdb' : false;

  it('runs the migrations twice and the repository queries, then the API itself', { skip }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'roamdesk-pg-'));
    const data = join(dir, 'data');
    const asPg = (cmd: string, args: string[]) => (isRoot ? run('runuser', ['-u', 'postgres', '--', cmd, ...args]) : run(cmd, args));
    let started = false;
    try {
      if (isRoot && pgUid !== undefined) await chown(dir, pgUid, 0);
      await asPg(join(bin!, 'initdb'), ['-A', 'trust', '-U', 'roamdesk', '-D', data, '--no-sync']);
      const port = await freePort();
      await asPg(join(bin!, 'pg_ctl'), ['-D', data, '-l', join(dir, 'log'), '-w', '-o', `-p ${port} -k ${dir} -c listen_addresses='' -c fsync=off`, 'start']);
      started = true;

      const open = () => openPostgres({ host: dir, port, user: 'roamdesk', database: 'postgres' });
      const db = open();
      assert.deepEqual(await migrateToLatest(db), Object.keys(MIGRATIONS));
      assert.deepEqual(await migrateToLatest(db), []);
      await exerciseRepositories(db);
      await sql`CREATE DATABASE backfill`.execute(db);
      await db.destroy();
      const fresh = openPostgres({ host: dir, port, user: 'roamdesk', database: 'backfill' });
      try {
        await exerciseVersionBackfill(fresh);
      } finally {
        await fresh.destroy();
      }

      // The whole API on PostgreSQL: the same queries as on SQLite.
      const t = await createTestApp({}, { db: open() });
      try {
        const alice = await t.createUser('alice');
        assert.equal((await t.importImage('base')).statusCode, 201);
        assert.equal((await t.createDesktop('alice-desk', 'alice', 'base')).statusCode, 201);
        assert.equal((await t.request('POST', '/api/v1/desktops/alice-desk/start', { token: alice })).statusCode, 200);
        const images = (await t.request('GET', '/api/v1/images', { token: alice })).json<{ images: Array<{ usage: number }> }>();
        assert.equal(images.images[0]?.usage, 1);
        assert.equal(errorCode(await t.request('DELETE', '/api/v1/images/base', { token: t.adminToken })), 'IMAGE_IN_USE');
        assert.equal(errorCode(await t.request('POST', '/api/v1/users', { token: t.adminToken, body: { name: 'alice', password: 'longenough' } })), 'CONFLICT');
        const events = (await t.request('GET', '/api/v1/events', { token: alice })).json<{ events: Array<{ action: string; id: number }> }>();
        assert.deepEqual(events.events.map((e) => e.action), ['desktop.start', 'desktop.create']);
        // Devices and leases on PostgreSQL: register, heartbeat, the lease of a desktop.
        const dev = (await t.request('POST', '/api/v1/devices', { token: alice, body: { name: 'laptop' } })).json<{ credential: string }>().credential;
        const hb = await t.request('POST', '/api/v1/devices/heartbeat', { token: dev, body: { leases: [{ desktop: 'alice-desk', generation: 1 }] } });
        assert.deepEqual(hb.json<{ leases: unknown[] }>().leases, [{ desktop: 'alice-desk', valid: false, generation: 1 }]);
        assert.equal((await t.request('GET', '/api/v1/desktops/alice-desk/lease', { token: dev })).json<{ lease: { state: string } }>().lease.state, 'server');
        assert.equal(errorCode(await t.request('POST', '/api/v1/desktops/alice-desk/rollback', { token: alice })), 'CONFLICT');
      } finally {
        await t.close();
      }
    } finally {
      if (started) await asPg(join(bin!, 'pg_ctl'), ['-D', data, '-m', 'immediate', 'stop']).catch(() => {});
      await rm(dir, { recursive: true, force: true });
    }
  });
});
