// The lease (issue 5): devices, check-out → confirm → replicate → check-in with generation checks, stale
// generations that change nothing, two devices racing, CHECKED_OUT refusals, rollback and its fencing, revoked
// devices, offline grants, heartbeats, operations. Real qcow2 objects in the harness's real store (the transfer
// engine describes chains from their headers); the VM runtime is the fake one.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type CheckoutResponse, type Desktop, type HeartbeatResponse, type LeaseResponse, type Operation, type RegisterDeviceResponse, verifyGrant } from '@roamdesk/api';
import { Store } from '@roamdesk/store';
import { recordUpload } from '../src/db/repositories/objects.ts';
import { loadOrCreateGrantKeys } from '../src/services/grants.ts';
import { createTestApp, errorCode, type TestApp } from './harness.ts';

const hasQemuImg = spawnSync('qemu-img', ['--version']).status === 0;
const skip = hasQemuImg ? false : 'qemu-img is not installed';

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

describe('leases', { skip }, () => {
  let t: TestApp;
  let real: Store;
  let alice = '';
  let aliceId = '';
  let bob = '';
  let laptop: RegisterDeviceResponse;
  let tablet: RegisterDeviceResponse;
  let bobDevice: RegisterDeviceResponse;
  let imageId = '';
  let otherImageId = '';
  let pattern = 0x10;
  const api = (p: string) => `/api/v1${p}`;

  const register = async (token: string, name: string): Promise<RegisterDeviceResponse> => {
    const r = await t.request('POST', api('/devices'), { token, body: { name } });
    assert.equal(r.statusCode, 201, r.body);
    return r.json<RegisterDeviceResponse>();
  };
  const desktop = async (name: string, token = alice): Promise<Desktop> => {
    const r = await t.request('GET', api(`/desktops/${name}`), { token });
    assert.equal(r.statusCode, 200, r.body);
    return r.json<{ desktop: Desktop }>().desktop;
  };
  const post = (url: string, token: string, body?: unknown) => t.request('POST', api(url), body === undefined ? { token } : { token, body });
  const row = (name: string) => t.db.selectFrom('desktops').selectAll().where('name', '=', name).executeTakeFirstOrThrow();
  /** Everything a refused call must leave as it was. */
  const snapshot = async () => ({
    desktops: await t.db.selectFrom('desktops').selectAll().orderBy('name').execute(),
    operations: await t.db.selectFrom('operations').selectAll().orderBy('id').execute(),
    devices: await t.db.selectFrom('devices').select(['id', 'revoked_at']).orderBy('id').execute(),
    runtime: [...t.runtime.calls],
    store: [...t.store.calls],
  });

  /** A real layer on `parent` in the server's store, "uploaded" by alice (as /uploads would record it). */
  const layerOn = async (parent: string, owner = aliceId): Promise<string> => {
    const o = await real.createOverlay(parent);
    pattern += 1;
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} ${pattern * 64}k 64k`, o.path]);
    const l = await real.seal(o);
    await recordUpload(t.db, l.id, owner, new Date(t.clock.now()).toISOString());
    return l.id;
  };

  /** Start the desktop on the server and give its (fake-runtime) overlay real guest writes, so check-out seals a real layer. */
  const startWithWrites = async (name: string): Promise<void> => {
    const r = await post(`/desktops/${name}/start`, alice);
    assert.equal(r.statusCode, 200, r.body);
    const d = await row(name);
    assert.ok(d.overlay_path !== null);
    const path = join(t.dir, d.overlay_path);
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', `${d.top_object_id}.qcow2`, '-F', 'qcow2', path]);
    pattern += 1;
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} 0 64k`, path]);
  };

  const checkout = async (name: string, device: RegisterDeviceResponse): Promise<CheckoutResponse> => {
    const r = await post(`/desktops/${name}/checkout`, device.credential);
    assert.equal(r.statusCode, 201, r.body);
    return r.json<CheckoutResponse>();
  };

  before(async () => {
    t = await createTestApp();
    real = await Store.open(join(t.dir, 'store'));
    // The fake runtime never writes an overlay: a desktop started without startWithWrites gets an empty real one here.
    t.store.sealWith = async (o) => {
      if (!existsSync(o.path)) sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', `${o.parent}.qcow2`, '-F', 'qcow2', o.path]);
      return real.seal(o);
    };
    alice = await t.createUser('alice');
    bob = await t.createUser('bob');
    aliceId = (await t.db.selectFrom('users').select('id').where('name', '=', 'alice').executeTakeFirstOrThrow()).id;
    for (const [name, size] of [['base', '64M'], ['other', '32M']] as const) {
      const file = join(t.dir, `${name}.qcow2`);
      sh('qemu-img', ['create', '-q', '-f', 'qcow2', file, size]);
      const r = await t.request('POST', api('/images'), { token: t.adminToken, body: { name, path: file, format: 'qcow2' } });
      assert.equal(r.statusCode, 201, r.body);
      const id = r.json<{ image: { id: string } }>().image.id;
      // The API imported it into the fake store; the same bytes in the real store have the same id.
      assert.equal((await real.importImage(file)).id, id);
      if (name === 'base') imageId = id;
      else otherImageId = id;
    }
    for (const name of ['desk', 'race', 'lost', 'fresh', 'stuck']) assert.equal((await t.createDesktop(name, 'alice', 'base')).statusCode, 201);
    laptop = await register(alice, 'laptop');
    tablet = await register(alice, 'tablet');
    bobDevice = await register(bob, 'bobs-pc');
  });
  after(() => t.close());

  it('registers devices: a credential shown once, stored hashed; users list their own, admins all', async () => {
    assert.match(laptop.credential, /^rdd_[A-Za-z0-9_-]{43}$/);
    assert.equal(laptop.device.owner, 'alice');
    assert.match(laptop.grantKey, /^-----BEGIN PUBLIC KEY-----/);
    const stored = await t.db.selectFrom('devices').selectAll().where('id', '=', laptop.device.id).executeTakeFirstOrThrow();
    assert.notEqual(stored.credential_hash, laptop.credential);
    assert.ok(!JSON.stringify(stored).includes(laptop.credential.slice(4)));
    const own = (await t.request('GET', api('/devices'), { token: alice })).json<{ devices: Array<{ name: string }> }>().devices;
    assert.deepEqual(own.map((d) => d.name), ['laptop', 'tablet']);
    const all = (await t.request('GET', api('/devices'), { token: t.adminToken })).json<{ devices: Array<{ name: string; owner: string }> }>().devices;
    assert.deepEqual(all.map((d) => `${d.owner}/${d.name}`), ['alice/laptop', 'alice/tablet', 'bob/bobs-pc']);
    // Bob cannot revoke alice's device: it answers like a missing one.
    const r = await t.request('DELETE', api(`/devices/${laptop.device.id}`), { token: bob });
    assert.equal(r.statusCode, 404);
    const unnamed = await t.request('POST', api('/devices'), { token: bob, body: {} });
    assert.match(unnamed.json<RegisterDeviceResponse>().device.name, /^device-/);
    // The device credential authenticates as its owner, with a user's rights.
    assert.equal((await t.request('GET', api('/desktops/desk'), { token: laptop.credential })).statusCode, 200);
    assert.equal((await t.request('GET', api('/desktops/desk'), { token: bobDevice.credential })).statusCode, 404);
  });

  it('a desktop at the server shows its lease; the grant key is served to any user', async () => {
    const d = await desktop('desk');
    assert.equal(d.location, 'server');
    assert.deepEqual(d.lease, { generation: 1, deviceId: null, deviceName: null, since: d.createdAt, state: 'server', replicatedTopObjectId: imageId, replicatedAt: null });
    const lease = (await t.request('GET', api('/desktops/desk/lease'), { token: alice })).json<LeaseResponse>();
    assert.equal(lease.maxChainLength, 16);
    assert.equal(lease.grant, undefined);
    assert.equal((await t.request('GET', api('/grant-key'), { token: bob })).json<{ grantKey: string }>().grantKey, laptop.grantKey);
    // The signing key was made at the first start, owner-only, and is reused by the next start.
    const file = join(t.dir, 'grant-key.pem');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await loadOrCreateGrantKeys(file)).publicKeyPem, laptop.grantKey);
  });

  it('the whole walk: check-out (stop, seal) → confirm → replicate → check-in, generation checked at every step', async () => {
    await startWithWrites('desk');
    const before = await row('desk');
    assert.equal(before.state, 'running');

    // Check-out: the VM is stopped (with the stop timeout), its overlay sealed into a layer; lease → checking-out, gen 2.
    const out = await checkout('desk', laptop);
    assert.ok(t.runtime.calls.includes(`stop desk ${t.config.stopTimeoutMs}`));
    const sealed = await row('desk');
    assert.equal(sealed.state, 'stopped');
    assert.equal(sealed.overlay_path, null);
    assert.notEqual(sealed.top_object_id, before.top_object_id);
    assert.deepEqual(out.chain.map((o) => o.id), [imageId, sealed.top_object_id]);
    assert.equal(out.chain[1]?.parent, imageId);
    assert.equal(out.lease.state, 'checking-out');
    assert.equal(out.lease.generation, 2);
    assert.equal(out.lease.deviceName, 'laptop');
    assert.equal(out.lease.replicatedTopObjectId, sealed.top_object_id);
    assert.equal(out.maxChainLength, 16);
    // Again by the same device while checking out: the same answer (resume), nothing sealed or stopped twice.
    const calls = t.runtime.calls.length;
    const again = await checkout('desk', laptop);
    assert.deepEqual(again, out);
    assert.equal(t.runtime.calls.length, calls);

    // Confirm with a stale generation: 409 LEASE_STALE {current}, nothing changes.
    let snap = await snapshot();
    const stale = await post('/desktops/desk/checkout/confirm', laptop.credential, { generation: 1 });
    assert.equal(stale.statusCode, 409);
    assert.equal(errorCode(stale), 'LEASE_STALE');
    assert.deepEqual(stale.json<{ error: { data: unknown } }>().error.data, { current: 2 });
    assert.deepEqual(await snapshot(), snap);
    // Another device of the same user with the right number: not the holder.
    assert.equal(errorCode(await post('/desktops/desk/checkout/confirm', tablet.credential, { generation: 2 })), 'CHECKED_OUT');
    // Replicating before confirming is refused.
    assert.equal(errorCode(await post('/desktops/desk/replicate', laptop.credential, { generation: 2, top: sealed.top_object_id })), 'CONFLICT');

    const confirmed = await post('/desktops/desk/checkout/confirm', laptop.credential, { generation: 2 });
    assert.equal(confirmed.statusCode, 200, confirmed.body);
    const c = confirmed.json<LeaseResponse>();
    assert.equal(c.lease.state, 'checked-out');
    assert.equal(c.lease.generation, 2);
    const grant = verifyGrant(c.grant ?? '', laptop.grantKey);
    assert.ok(grant.ok);
    assert.equal(grant.body.desktop, 'desk');
    assert.equal(grant.body.deviceId, laptop.device.id);
    assert.equal(grant.body.generation, 2);
    assert.equal(grant.body.maxOfflineSeconds, 7 * 24 * 3600);
    assert.equal(Date.parse(grant.body.expiresAt) - Date.parse(grant.body.issuedAt), 7 * 24 * 3600 * 1000);
    // Confirming again (a lost answer) answers the same.
    assert.equal((await post('/desktops/desk/checkout/confirm', laptop.credential, { generation: 2 })).json<LeaseResponse>().lease.state, 'checked-out');

    // Replicate: a layer on the check-out point.
    const l2 = await layerOn(sealed.top_object_id);
    snap = await snapshot();
    const staleRep = await post('/desktops/desk/replicate', laptop.credential, { generation: 1, top: l2 });
    assert.equal(errorCode(staleRep), 'LEASE_STALE');
    assert.deepEqual(await snapshot(), snap);
    const rep = await post('/desktops/desk/replicate', laptop.credential, { generation: 2, top: l2 });
    assert.equal(rep.statusCode, 200, rep.body);
    const r = rep.json<LeaseResponse>();
    assert.equal(r.lease.replicatedTopObjectId, l2);
    assert.equal(r.lease.state, 'checked-out');
    assert.equal(r.lease.generation, 2);
    assert.ok(r.grant !== undefined && verifyGrant(r.grant, laptop.grantKey).ok);
    // The server chain (what start would use) stays at the check-out point while the device holds the lease.
    assert.equal((await row('desk')).top_object_id, sealed.top_object_id);
    // Replicating the same top again (a lost answer) changes nothing and succeeds.
    assert.equal((await post('/desktops/desk/replicate', laptop.credential, { generation: 2, top: l2 })).statusCode, 200);

    // Check-in: one more layer; the chain becomes the server's, the lease returns (gen 3), the VM can start.
    const l3 = await layerOn(l2);
    const ci = await post('/desktops/desk/checkin', laptop.credential, { generation: 2, top: l3 });
    assert.equal(ci.statusCode, 200, ci.body);
    const ciBody = ci.json<LeaseResponse>();
    assert.equal(ciBody.lease.state, 'server');
    assert.equal(ciBody.lease.generation, 3);
    assert.equal(ciBody.grant, undefined);
    const after = await row('desk');
    assert.deepEqual([after.top_object_id, after.overlay_path, after.state, after.location, after.lease_device_id], [l3, null, 'stopped', 'server', null]);
    // The same check-in again (its answer was lost): the same answer, generation bumped once.
    const retry = await post('/desktops/desk/checkin', laptop.credential, { generation: 2, top: l3 });
    assert.equal(retry.statusCode, 200, retry.body);
    assert.equal(retry.json<LeaseResponse>().lease.generation, 3);
    assert.equal(Number((await row('desk')).lease_generation), 3);
    // Anything else with the old generation is stale.
    assert.equal(errorCode(await post('/desktops/desk/replicate', laptop.credential, { generation: 2, top: l3 })), 'LEASE_STALE');
    assert.equal((await post('/desktops/desk/start', alice)).statusCode, 200);
    assert.ok(t.store.calls.includes(`overlay ${l3}`), 'the next start builds its overlay on the checked-in top');
    assert.equal((await post('/desktops/desk/stop', alice)).statusCode, 200);

    // Every transition is an event.
    const events = (await t.request('GET', api('/events?desktop=desk&limit=1000'), { token: alice })).json<{ events: Array<{ action: string; result: string }> }>().events;
    for (const action of ['lease.checkout', 'lease.confirm', 'lease.replicate', 'lease.checkin']) {
      assert.ok(events.some((e) => e.action === action && e.result === 'ok'), action);
    }
    assert.ok(events.some((e) => e.action === 'lease.confirm' && e.result === 'error'));
    // And every long step is an operation.
    const ops = (await t.request('GET', api('/operations?desktop=desk'), { token: alice })).json<{ operations: Operation[] }>().operations;
    assert.ok(ops.some((o) => o.kind === 'checkout' && o.state === 'succeeded' && o.id === out.operation));
    assert.ok(ops.some((o) => o.kind === 'replicate' && o.state === 'succeeded' && o.result?.['top'] === l2));
    assert.ok(ops.some((o) => o.kind === 'checkin' && o.state === 'succeeded' && o.result?.['top'] === l3));
  });

  it('while checked out: start, restart, stop, console, export and delete answer CHECKED_OUT naming the device and since when', async () => {
    const out = await checkout('fresh', laptop);
    // Never started: nothing to stop or seal, the chain is the image.
    assert.deepEqual(out.chain.map((o) => o.id), [imageId]);
    const since = out.lease.since;
    {
      const before = await snapshot();
      for (const [method, url, token] of [
        ['POST', '/desktops/fresh/start', alice],
        ['POST', '/desktops/fresh/restart', alice],
        ['POST', '/desktops/fresh/stop', t.adminToken],
        ['POST', '/desktops/fresh/console', alice],
        ['GET', '/desktops/fresh/export', alice],
        ['DELETE', '/desktops/fresh', t.adminToken],
      ] as const) {
        const r = await t.request(method, api(url), { token });
        assert.equal(r.statusCode, 409, `${method} ${url}`);
        assert.equal(errorCode(r), 'CHECKED_OUT');
        const e = r.json<{ error: { message: string; data: Record<string, unknown> } }>().error;
        assert.match(e.message, /device "laptop"/);
        assert.ok(e.message.includes(since), e.message);
        assert.equal(e.data['device'], 'laptop');
      }
      assert.deepEqual(await snapshot(), before);
    }
    // A second check-out by another device loses.
    assert.equal(errorCode(await post('/desktops/fresh/checkout', tablet.credential)), 'CHECKED_OUT');
    // Cancel (not confirmed yet): the lease returns, gen+1; the check-out operation is cancelled.
    assert.equal(errorCode(await post('/desktops/fresh/checkout/cancel', laptop.credential, { generation: 1 })), 'LEASE_STALE');
    const cancel = await post('/desktops/fresh/checkout/cancel', laptop.credential, { generation: 2 });
    assert.equal(cancel.statusCode, 200, cancel.body);
    assert.deepEqual([cancel.json<LeaseResponse>().lease.state, cancel.json<LeaseResponse>().lease.generation], ['server', 3]);
    const op = (await t.request('GET', api(`/operations/${out.operation}`), { token: alice })).json<{ operation: Operation }>().operation;
    assert.equal(op.state, 'cancelled');
    assert.equal((await post('/desktops/fresh/start', alice)).statusCode, 200);
    assert.equal((await post('/desktops/fresh/stop', alice)).statusCode, 200);
  });

  it('two devices race to check out one desktop: exactly one wins, the server VM stays down', async () => {
    await startWithWrites('race');
    const [a, b] = await Promise.all([post('/desktops/race/checkout', laptop.credential), post('/desktops/race/checkout', tablet.credential)]);
    const codes = [a.statusCode, b.statusCode].sort();
    assert.deepEqual(codes, [201, 409], `${a.body} ${b.body}`);
    const loser = a.statusCode === 409 ? a : b;
    assert.ok(['CHECKED_OUT', 'LEASE_BUSY', 'DESKTOP_BUSY'].includes(errorCode(loser)), loser.body);
    const winner = (a.statusCode === 201 ? a : b).json<CheckoutResponse>();
    const d = await row('race');
    assert.equal(Number(d.lease_generation), 2, 'the generation moved once');
    assert.equal(d.lease_device_id, winner.lease.deviceId);
    assert.equal(d.state, 'stopped');
    assert.equal(t.store.calls.filter((c) => c.startsWith('seal ')).length >= 1, true);
    assert.equal(errorCode(await post('/desktops/race/start', alice)), 'CHECKED_OUT');
    assert.ok(!t.runtime.running.has(d.id));
    // Fifty at once (reliability.md T13), on a desktop back at the server: still exactly one; every loser is told
    // why, and nothing of theirs is recorded.
    const holder = winner.lease.deviceId === laptop.device.id ? laptop : tablet;
    assert.equal((await post('/desktops/race/checkout/cancel', holder.credential, { generation: 2 })).statusCode, 200);
    const extra = await Promise.all(Array.from({ length: 48 }, (_, i) => register(alice, `pc-${i}`)));
    const all = await Promise.all([laptop, tablet, ...extra].map((dev) => post('/desktops/race/checkout', dev.credential)));
    assert.equal(all.filter((r) => r.statusCode === 201).length, 1, all.map((r) => r.statusCode).join(','));
    for (const r of all.filter((x) => x.statusCode !== 201)) assert.ok(['CHECKED_OUT', 'LEASE_BUSY', 'DESKTOP_BUSY'].includes(errorCode(r)), r.body);
    assert.equal(Number((await row('race')).lease_generation), 4);
    const w = all.find((r) => r.statusCode === 201)!.json<CheckoutResponse>();
    const dev = [laptop, tablet, ...extra].find((x) => x.device.id === w.lease.deviceId)!;
    assert.equal((await post('/desktops/race/checkout/cancel', dev.credential, { generation: 4 })).statusCode, 200);
  });

  it('a desktop whose VM a full disk paused is not checked out (its pending writes would be lost): DESKTOP_PAUSED, nothing changes', async () => {
    await startWithWrites('stuck');
    const before = await row('stuck');
    t.runtime.pauses.set(before.id, { reason: 'no-space', since: '2026-12-02T10:00:00.000Z' });
    const r = await post('/desktops/stuck/checkout', laptop.credential);
    assert.equal(r.statusCode, 409, r.body);
    assert.equal(errorCode(r), 'DESKTOP_PAUSED');
    assert.deepEqual(await row('stuck'), before);
    assert.ok(t.runtime.running.has(before.id));
    // Resumed (room again), the check-out goes ahead.
    assert.equal((await post('/desktops/stuck/start', alice)).statusCode, 200);
    const out = await checkout('stuck', laptop);
    assert.equal(out.lease.generation, Number(before.lease_generation) + 1);
    assert.equal((await post('/desktops/stuck/checkout/cancel', laptop.credential, { generation: out.lease.generation })).statusCode, 200);
  });

  it('replicate and check-in check the chain: an ancestor, another image, a layer not uploaded by the owner are refused; a compacted chain is accepted', async () => {
    const out = await checkout('desk', laptop);
    const g = out.lease.generation;
    assert.equal((await post('/desktops/desk/checkout/confirm', laptop.credential, { generation: g })).statusCode, 200);
    const top = out.lease.replicatedTopObjectId;
    const a = await layerOn(top);
    assert.equal((await post('/desktops/desk/replicate', laptop.credential, { generation: g, top: a })).statusCode, 200);
    const before = await snapshot();
    // Going back to an ancestor would discard replicated work.
    const back = await post('/desktops/desk/replicate', laptop.credential, { generation: g, top });
    assert.equal(back.statusCode, 422);
    assert.equal(errorCode(back), 'CHAIN_MISMATCH');
    // A layer over another image.
    const foreign = await layerOn(otherImageId);
    assert.equal(errorCode(await post('/desktops/desk/checkin', laptop.credential, { generation: g, top: foreign })), 'CHAIN_MISMATCH');
    // A layer the owner never uploaded (bob's): as if it did not exist.
    const bobs = await layerOn(a, (await t.db.selectFrom('users').select('id').where('name', '=', 'bob').executeTakeFirstOrThrow()).id);
    const notYours = await post('/desktops/desk/checkin', laptop.credential, { generation: g, top: bobs });
    assert.equal(notYours.statusCode, 404);
    // An object that is not on the server at all.
    assert.equal((await post('/desktops/desk/replicate', laptop.credential, { generation: g, top: 'f'.repeat(64) })).statusCode, 404);
    const after = await snapshot();
    assert.deepEqual(after.desktops, before.desktops, 'refused layers change no desktop');
    // Failed attempts are recorded as failed operations, nothing else.
    assert.ok(after.operations.filter((o) => o.state === 'failed').length >= 4);

    // Compaction (issue 5 item 6): the device folded its layers into one over the image; the old objects stay.
    const compacted = await layerOn(imageId);
    const rep = await post('/desktops/desk/replicate', laptop.credential, { generation: g, top: compacted });
    assert.equal(rep.statusCode, 200, rep.body);
    assert.equal(rep.json<LeaseResponse>().lease.replicatedTopObjectId, compacted);
    assert.ok(await real.has(a) && await real.has(top), 'the objects of the old chain stay in the store');
    const ci = await post('/desktops/desk/checkin', laptop.credential, { generation: g, top: compacted });
    assert.equal(ci.statusCode, 200, ci.body);
    assert.equal((await row('desk')).top_object_id, compacted);
  });

  it('rollback returns the replicated top and bumps the generation; the rolled-back device is fenced (LEASE_STALE, nothing changes)', async () => {
    await startWithWrites('lost');
    const out = await checkout('lost', laptop);
    const g = out.lease.generation;
    assert.equal((await post('/desktops/lost/checkout/confirm', laptop.credential, { generation: g })).statusCode, 200);
    const replicated = await layerOn(out.lease.replicatedTopObjectId);
    assert.equal((await post('/desktops/lost/replicate', laptop.credential, { generation: g, top: replicated })).statusCode, 200);
    const unsent = await layerOn(replicated);
    // Bob cannot roll back alice's desktop (404); with the policy off, alice cannot either; an admin can.
    assert.equal((await post('/desktops/lost/rollback', bob)).statusCode, 404);
    t.config.lease.allowUserRollback = false;
    try {
      assert.equal(errorCode(await post('/desktops/lost/rollback', alice)), 'FORBIDDEN');
    } finally {
      t.config.lease.allowUserRollback = true;
    }
    // A replicate in progress when the rollback comes ends as failed.
    const op = await post('/desktops/lost/operations', laptop.credential, { kind: 'checkin', generation: g });
    assert.equal(op.statusCode, 201, op.body);
    const rb = await post('/desktops/lost/rollback', alice);
    assert.equal(rb.statusCode, 200, rb.body);
    const lease = rb.json<LeaseResponse>().lease;
    assert.deepEqual([lease.state, lease.generation, lease.replicatedTopObjectId], ['server', g + 1, replicated]);
    const d = await row('lost');
    assert.deepEqual([d.top_object_id, d.location, d.lease_device_id], [replicated, 'server', null]);
    const running = (await t.request('GET', api(`/operations/${op.json<{ operation: Operation }>().operation.id}`), { token: alice })).json<{ operation: Operation }>().operation;
    assert.equal(running.state, 'failed');
    assert.equal(running.error?.code, 'LEASE_STALE');
    assert.ok((await t.request('GET', api('/operations?desktop=lost'), { token: alice })).json<{ operations: Operation[] }>().operations.some((o) => o.kind === 'rollback' && o.state === 'succeeded' && o.result?.['top'] === replicated));
    assert.equal(errorCode(await post('/desktops/lost/rollback', alice)), 'CONFLICT', 'nothing to roll back any more');

    // The device comes back: its check-in is stale and changes nothing; its heartbeat says the lease is gone.
    const before = await snapshot();
    const late = await post('/desktops/lost/checkin', laptop.credential, { generation: g, top: unsent });
    assert.equal(late.statusCode, 409);
    assert.equal(errorCode(late), 'LEASE_STALE');
    assert.deepEqual(late.json<{ error: { data: unknown } }>().error.data, { current: g + 1 });
    assert.deepEqual(await snapshot(), before);
    const hb = (await post('/devices/heartbeat', laptop.credential, { leases: [{ desktop: 'lost', generation: g }] })).json<HeartbeatResponse>();
    assert.deepEqual(hb.leases, [{ desktop: 'lost', valid: false, generation: g + 1 }]);
    // The server can run the desktop again, at the replicated state.
    assert.equal((await post('/desktops/lost/start', alice)).statusCode, 200);
    assert.equal((await post('/desktops/lost/stop', alice)).statusCode, 200);
  });

  it('heartbeats renew grants for leases still held, say valid:false for others, and record when the device was seen', async () => {
    const out = await checkout('fresh', laptop);
    const g = out.lease.generation;
    const hbBefore = (await post('/devices/heartbeat', laptop.credential, { leases: [{ desktop: 'fresh', generation: g }] })).json<HeartbeatResponse>();
    assert.deepEqual(hbBefore.leases, [{ desktop: 'fresh', valid: true, generation: g }], 'valid while checking out, but no grant before confirm');
    assert.equal((await post('/desktops/fresh/checkout/confirm', laptop.credential, { generation: g })).statusCode, 200);
    t.clock.advance(3600_000);
    const r = await post('/devices/heartbeat', laptop.credential, {
      leases: [{ desktop: 'fresh', generation: g }, { desktop: 'fresh', generation: g - 1 }, { desktop: 'desk', generation: 9 }, { desktop: 'no-such', generation: 1 }],
    });
    assert.equal(r.statusCode, 200, r.body);
    const hb = r.json<HeartbeatResponse>();
    assert.equal(hb.device.lastSeenAt, new Date(t.clock.now()).toISOString());
    assert.equal(hb.leases[0]?.valid, true);
    const grant = verifyGrant(hb.leases[0]?.grant ?? '', laptop.grantKey);
    assert.ok(grant.ok);
    assert.equal(grant.body.issuedAt, new Date(t.clock.now()).toISOString());
    assert.deepEqual(hb.leases.slice(1), [
      { desktop: 'fresh', valid: false, generation: g },
      { desktop: 'desk', valid: false, generation: Number((await row('desk')).lease_generation) },
      { desktop: 'no-such', valid: false, generation: 1 },
    ]);
    // Another user's desktop: not valid, and its generation is not told.
    const other = (await post('/devices/heartbeat', bobDevice.credential, { leases: [{ desktop: 'fresh', generation: 1 }] })).json<HeartbeatResponse>();
    assert.deepEqual(other.leases, [{ desktop: 'fresh', valid: false, generation: 1 }]);
    // The tablet holds nothing.
    const tb = (await post('/devices/heartbeat', tablet.credential, { leases: [{ desktop: 'fresh', generation: g }] })).json<HeartbeatResponse>();
    assert.equal(tb.leases[0]?.valid, false);
  });

  it('a revoked device is fenced: every call 403 DEVICE_REVOKED, nothing changes; an admin rolls its desktop back', async () => {
    // The laptop holds "fresh" (checked out in the previous test).
    const d = await row('fresh');
    assert.equal(d.lease_device_id, laptop.device.id);
    const g = Number(d.lease_generation);
    const layer = await layerOn(d.replicated_top_object_id ?? d.top_object_id);
    const r = await t.request('DELETE', api(`/devices/${laptop.device.id}`), { token: t.adminToken });
    assert.equal(r.statusCode, 204);
    assert.equal((await t.request('DELETE', api(`/devices/${laptop.device.id}`), { token: alice })).statusCode, 204, 'revoking twice is fine');
    const before = await snapshot();
    for (const [url, body] of [
      ['/desktops/fresh/checkin', { generation: g, top: layer }],
      ['/desktops/fresh/replicate', { generation: g, top: layer }],
      ['/devices/heartbeat', { leases: [{ desktop: 'fresh', generation: g }] }],
      ['/desktops/desk/checkout', undefined],
    ] as const) {
      const res = await post(url, laptop.credential, body);
      assert.equal(res.statusCode, 403, url);
      assert.equal(errorCode(res), 'DEVICE_REVOKED');
    }
    assert.deepEqual(await snapshot(), before);
    const listed = (await t.request('GET', api('/devices'), { token: alice })).json<{ devices: Array<{ id: string; revokedAt: string | null }> }>().devices;
    assert.ok(listed.find((x) => x.id === laptop.device.id)?.revokedAt !== null);
    const rb = await post('/desktops/fresh/rollback', t.adminToken);
    assert.equal(rb.statusCode, 200, rb.body);
    assert.equal(rb.json<LeaseResponse>().lease.generation, g + 1);
    const events = (await t.request('GET', api('/events?limit=1000'), { token: t.adminToken })).json<{ events: Array<{ action: string }> }>().events;
    for (const action of ['device.register', 'device.revoke', 'lease.rollback', 'lease.cancel']) assert.ok(events.some((e) => e.action === action), action);
  });

  it('bad names, ids and bodies on device calls: 400 VALIDATION_FAILED, nothing touched', async () => {
    const tb = tablet.credential;
    const before = await snapshot();
    for (const [url, body] of [
      ['/desktops/..%2fetc/checkout', undefined],
      ['/desktops/a..b/checkout/confirm', { generation: 1 }],
      ['/desktops/race/checkout/confirm', { generation: 0 }],
      ['/desktops/race/checkout/confirm', { generation: '2' }],
      ['/desktops/race/replicate', { generation: 2, top: '../../etc/passwd' }],
      ['/desktops/race/checkin', { generation: 2, top: 'A'.repeat(64) }],
      ['/desktops/race/checkin', { generation: 2, top: 'a'.repeat(64), extra: true }],
      ['/desktops/race/operations', { kind: 'rollback', generation: 2 }],
      ['/devices/heartbeat', { leases: [{ desktop: '../x', generation: 1 }] }],
      ['/devices/heartbeat', { leases: Array.from({ length: 1001 }, () => ({ desktop: 'race', generation: 1 })) }],
      ['/operations/not-a-uuid/progress', { phase: 'x', bytesDone: 0, bytesTotal: 0, bytesOnWire: 0, bytesSaved: 0, rateBytesPerSec: 0, etaSeconds: null }],
      ['/operations/00000000-0000-4000-8000-000000000001/finish', { state: 'running' }],
    ] as const) {
      const r = await post(url, tb, body);
      assert.equal(r.statusCode, 400, `${url} ${r.body}`);
      assert.equal(errorCode(r), 'VALIDATION_FAILED');
    }
    for (const url of ['/devices/..%2f', '/devices/not-a-uuid']) assert.equal((await t.request('DELETE', api(url), { token: alice })).statusCode, 400);
    const longName = await t.request('POST', api('/devices'), { token: alice, body: { name: 'x'.repeat(65) } });
    assert.equal(errorCode(longName), 'VALIDATION_FAILED');
    assert.deepEqual(await snapshot(), before);
  });

  it('operations: one replicate or check-in at a time, progress from the device that runs it, bounded and validated', async () => {
    const out = await checkout('race', tablet);
    const g = out.lease.generation;
    assert.equal((await post('/desktops/race/checkout/confirm', tablet.credential, { generation: g })).statusCode, 200);
    const started = await post('/desktops/race/operations', tablet.credential, { kind: 'replicate', generation: g });
    assert.equal(started.statusCode, 201, started.body);
    const op = started.json<{ operation: Operation }>().operation;
    assert.deepEqual([op.kind, op.state, op.desktop, op.deviceId], ['replicate', 'running', 'race', tablet.device.id]);
    // A second one while the first runs: LEASE_BUSY.
    const busy = await post('/desktops/race/operations', tablet.credential, { kind: 'checkin', generation: g });
    assert.equal(errorCode(busy), 'LEASE_BUSY');
    assert.equal(errorCode(await post('/desktops/race/operations', tablet.credential, { kind: 'checkin', generation: g - 1 })), 'LEASE_STALE');

    const progress = { phase: 'upload', bytesDone: 50, bytesTotal: 100, bytesOnWire: 40, bytesSaved: 10, rateBytesPerSec: 1e6, etaSeconds: 2 };
    assert.equal((await post(`/operations/${op.id}/progress`, tablet.credential, progress)).statusCode, 204);
    assert.equal(errorCode(await post(`/operations/${op.id}/progress`, tablet.credential, { ...progress, bytesDone: 101 })), 'VALIDATION_FAILED');
    assert.equal((await post(`/operations/${op.id}/progress`, tablet.credential, { ...progress, bytesDone: -1 })).statusCode, 400);
    assert.equal((await post(`/operations/${op.id}/progress`, tablet.credential, { ...progress, extra: 1 })).statusCode, 204, 'unknown keys are dropped, not stored');
    // Another device of the owner: not its operation. Another user: 404.
    assert.equal(errorCode(await post(`/operations/${op.id}/progress`, (await register(alice, 'phone')).credential, progress)), 'FORBIDDEN');
    assert.equal((await post(`/operations/${op.id}/progress`, bobDevice.credential, progress)).statusCode, 404);
    assert.equal((await t.request('GET', api(`/operations/${op.id}`), { token: bob })).statusCode, 404);
    const seen = (await t.request('GET', api(`/operations/${op.id}`), { token: t.adminToken })).json<{ operation: Operation }>().operation;
    assert.deepEqual(seen.progress, progress);

    // The replicate names its operation, which then succeeds with the result.
    const layer = await layerOn(out.lease.replicatedTopObjectId);
    const wrongKind = await post('/desktops/race/checkin', tablet.credential, { generation: g, top: layer, operation: op.id });
    assert.equal(errorCode(wrongKind), 'CONFLICT');
    const rep = await post('/desktops/race/replicate', tablet.credential, { generation: g, top: layer, operation: op.id });
    assert.equal(rep.statusCode, 200, rep.body);
    const done = (await t.request('GET', api(`/operations/${op.id}`), { token: alice })).json<{ operation: Operation }>().operation;
    assert.equal(done.state, 'succeeded');
    assert.equal(done.result?.['top'], layer);
    assert.equal(errorCode(await post(`/operations/${op.id}/progress`, tablet.credential, progress)), 'CONFLICT', 'no progress after the end');

    // The device gives up on an operation: 'cancelled' (not 'succeeded': that is the server's to record).
    const second = (await post('/desktops/race/operations', tablet.credential, { kind: 'checkin', generation: g })).json<{ operation: Operation }>().operation;
    assert.equal(errorCode(await post(`/operations/${second.id}/finish`, tablet.credential, { state: 'succeeded' })), 'CONFLICT');
    assert.equal((await post(`/operations/${second.id}/finish`, tablet.credential, { state: 'cancelled', error: { code: 'CLIENT_ERR_INTERRUPTED', message: 'Ctrl-C' } })).statusCode, 204);
    assert.equal((await post(`/operations/${second.id}/finish`, tablet.credential, { state: 'cancelled' })).statusCode, 204, 'finishing twice is fine');
    const cancelled = (await t.request('GET', api(`/operations/${second.id}`), { token: alice })).json<{ operation: Operation }>().operation;
    assert.deepEqual([cancelled.state, cancelled.error], ['cancelled', { code: 'CLIENT_ERR_INTERRUPTED', message: 'Ctrl-C' }]);

    // An operation the device abandoned (silent for 15 minutes) no longer blocks the next.
    const third = (await post('/desktops/race/operations', tablet.credential, { kind: 'replicate', generation: g })).json<{ operation: Operation }>().operation;
    t.clock.advance(16 * 60_000);
    assert.equal((await post('/desktops/race/operations', tablet.credential, { kind: 'replicate', generation: g })).statusCode, 201);
    const abandoned = (await t.request('GET', api(`/operations/${third.id}`), { token: alice })).json<{ operation: Operation }>().operation;
    assert.deepEqual([abandoned.state, abandoned.error?.code], ['failed', 'ABANDONED']);

    // Lists: the owner sees their desktops' operations, other users none, admins all.
    assert.ok((await t.request('GET', api('/operations'), { token: alice })).json<{ operations: Operation[] }>().operations.length > 5);
    assert.deepEqual((await t.request('GET', api('/operations'), { token: bob })).json<{ operations: Operation[] }>().operations, []);
    assert.equal((await t.request('GET', api('/operations?desktop=race'), { token: bob })).statusCode, 404);
    assert.equal((await t.request('GET', api('/operations?limit=2'), { token: t.adminToken })).json<{ operations: Operation[] }>().operations.length, 2);
  });
});
