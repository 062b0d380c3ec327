// Chain compaction on the server (issue 5 item 6): the first start after a check-in that left a desktop's chain
// longer than the policy squashes its layers into ONE layer over the desktop's image version, equal in guest view,
// recorded as derived from the old top, and removes the old objects nothing refers to; a retried check-in still
// finds its top; a lost race or a failure changes nothing. Real qcow2 objects in the harness's real store; the VM
// runtime is the fake one.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ChainResponse, CheckoutResponse, RegisterDeviceResponse } from '@roamdesk/api';
import { Store } from '@roamdesk/store';
import { recordUpload } from '../src/db/repositories/objects.ts';
import { createTestApp, type TestApp } from './harness.ts';

const hasQemuImg = spawnSync('qemu-img', ['--version']).status === 0;
const skip = hasQemuImg ? false : 'qemu-img is not installed';

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

describe('chain compaction on the server', { skip }, () => {
  let t: TestApp;
  let real: Store;
  let alice = '';
  let aliceId = '';
  let laptop: RegisterDeviceResponse;
  let imageId = '';
  let pattern = 0x20;
  const api = (p: string) => `/api/v1${p}`;
  const post = (url: string, token: string, body?: unknown) => t.request('POST', api(url), body === undefined ? { token } : { token, body });
  const row = (name: string) => t.db.selectFrom('desktops').selectAll().where('name', '=', name).executeTakeFirstOrThrow();
  const events = (name: string) => t.db.selectFrom('events').selectAll().where('action', '=', 'desktop.compact').where('target', '=', name).orderBy('id').execute();

  /** `n` real layers on `parent`, each with guest writes, "uploaded" by alice; the ids, bottom first. */
  const layersOn = async (parent: string, n: number): Promise<string[]> => {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const o = await real.createOverlay(ids.at(-1) ?? parent);
      pattern += 1;
      // Overlapping writes, so the compacted layer is smaller than the sum and overwritten data must not leak through.
      sh('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} ${(pattern % 4) * 64}k 192k`, o.path]);
      const l = await real.seal(o);
      await recordUpload(t.db, l.id, aliceId, new Date(t.clock.now()).toISOString());
      ids.push(l.id);
    }
    return ids;
  };

  /** Check `name` out to the laptop and back in with `n` new layers; the device's top and the generation it checked in at. */
  const roundTrip = async (name: string, n: number): Promise<{ top: string; generation: number }> => {
    const out = await post(`/desktops/${name}/checkout`, laptop.credential);
    assert.equal(out.statusCode, 201, out.body);
    const co = out.json<CheckoutResponse>();
    assert.equal((await post(`/desktops/${name}/checkout/confirm`, laptop.credential, { generation: co.lease.generation })).statusCode, 200);
    const top = (await layersOn(co.chain.at(-1)!.id, n)).at(-1)!;
    const r = await post(`/desktops/${name}/checkin`, laptop.credential, { generation: co.lease.generation, top });
    assert.equal(r.statusCode, 200, r.body);
    return { top, generation: co.lease.generation };
  };

  const chainOf = async (name: string): Promise<ChainResponse> => {
    const r = await t.request('GET', api(`/desktops/${name}/objects`), { token: alice });
    assert.equal(r.statusCode, 200, r.body);
    return r.json<ChainResponse>();
  };

  before(async () => {
    t = await createTestApp({ lease: { maxChainLength: 2 } });
    real = await Store.open(join(t.dir, 'store'));
    t.store.sealWith = async (o) => {
      sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', `${o.parent}.qcow2`, '-F', 'qcow2', o.path]);
      return real.seal(o);
    };
    t.store.differenceWith = (parent, target) => real.importDifference(parent, target);
    t.store.removeWith = (id) => real.remove(id);
    alice = await t.createUser('alice');
    aliceId = (await t.db.selectFrom('users').select('id').where('name', '=', 'alice').executeTakeFirstOrThrow()).id;
    const file = join(t.dir, 'base.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', file, '16M']);
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 4M', file]);
    const r = await t.request('POST', api('/images'), { token: t.adminToken, body: { name: 'base', path: file, format: 'qcow2' } });
    assert.equal(r.statusCode, 201, r.body);
    imageId = r.json<{ image: { id: string } }>().image.id;
    assert.equal((await real.importImage(file)).id, imageId);
    for (const name of ['desk', 'short', 'raced', 'broken']) assert.equal((await t.createDesktop(name, 'alice', 'base')).statusCode, 201);
    const d = await post('/devices', alice, { name: 'laptop' });
    laptop = d.json<RegisterDeviceResponse>();
  });
  after(() => t.close());

  it('the next start compacts a chain past the policy into one layer over the image, equal for the guest, recorded as derived; the old objects go', async () => {
    const { top: oldTop, generation } = await roundTrip('desk', 3);
    const oldChain = (await real.chain(oldTop)).map((o) => o.id);
    assert.equal(oldChain.length, 4);
    assert.deepEqual(await events('desk'), [], 'not at the check-in');
    assert.equal((await row('desk')).top_object_id, oldTop);
    const before = join(t.dir, 'desk-before.qcow2');
    sh('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', real.objectPath(oldTop), before]);
    assert.equal((await post('/desktops/desk/start', alice)).statusCode, 200);
    const d = await row('desk');
    assert.notEqual(d.top_object_id, oldTop);
    assert.equal(d.lease_state, 'server');
    assert.ok(t.store.calls.includes(`overlay ${d.top_object_id}`), 'the VM runs on the short chain');
    const chain = await chainOf('desk');
    assert.deepEqual(chain.objects.map((o) => o.id), [imageId, d.top_object_id]);
    assert.equal(chain.objects[1]?.parent, imageId);
    assert.equal(chain.objects[1]?.derivedFrom, oldTop, 'a device holding the old chain can derive it');
    const compare = spawnSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', real.objectPath(d.top_object_id), before]);
    assert.equal(compare.status, 0, 'the compacted chain shows the guest exactly what the old one showed');
    const [e] = await events('desk');
    assert.equal(e?.result, 'ok');
    assert.equal(e?.actor_id, null);
    assert.deepEqual(JSON.parse(e?.detail ?? '{}'), { from: oldTop, layers: 3, to: d.top_object_id, removed: 3 });
    assert.ok(await real.has(imageId));
    for (const id of oldChain.slice(1)) assert.equal(await real.has(id), false, `old chain object ${id} is removed`);
    assert.equal((await real.verify()).ok, true);
    assert.equal((await post('/desktops/desk/stop', alice)).statusCode, 200);

    // The device's check-in retried after a lost answer still gets the first answer, not LEASE_STALE.
    const again = await post('/desktops/desk/checkin', laptop.credential, { generation, top: oldTop });
    assert.equal(again.statusCode, 200, again.body);
    // A start with an overlay, and the next one: a short chain is left alone.
    assert.equal((await post('/desktops/desk/start', alice)).statusCode, 200);
    assert.equal((await post('/desktops/desk/stop', alice)).statusCode, 200);
    assert.equal((await events('desk')).length, 1);
  });

  it('leaves a chain within the policy as it is', async () => {
    const { top } = await roundTrip('short', 2);
    assert.equal((await post('/desktops/short/start', alice)).statusCode, 200);
    assert.equal((await row('short')).top_object_id, top);
    assert.deepEqual(await events('short'), []);
    assert.equal((await post('/desktops/short/stop', alice)).statusCode, 200);
  });

  it('changes nothing when the lease moved while it computed (the new layer stays unused)', async () => {
    t.store.differenceWith = async (parent, target) => {
      // A check-out of this desktop wins the row meanwhile (its generation moves on).
      await t.db.updateTable('desktops').set((eb) => ({ lease_generation: eb('lease_generation', '+', 1) })).where('name', '=', 'raced').execute();
      return real.importDifference(parent, target);
    };
    try {
      const { top } = await roundTrip('raced', 3);
      assert.equal((await post('/desktops/raced/start', alice)).statusCode, 200);
      const d = await row('raced');
      assert.equal(d.top_object_id, top);
      assert.ok(t.store.calls.includes(`overlay ${top}`), 'the start went on with the old chain');
      for (const id of (await real.chain(top)).map((o) => o.id)) assert.ok(await real.has(id), 'nothing was removed');
      const [e] = await events('raced');
      assert.equal(e?.result, 'ok');
      assert.equal((JSON.parse(e?.detail ?? '{}') as { to?: unknown }).to, null);
    } finally {
      t.store.differenceWith = (parent, target) => real.importDifference(parent, target);
    }
  });

  it('a failed compaction is recorded and the start goes on with the long chain', async () => {
    t.store.differenceWith = () => Promise.reject(Object.assign(new Error('qemu-img rebase failed'), { code: 'STORE_ERR_IMPORT_FAILED' }));
    try {
      const { top } = await roundTrip('broken', 3);
      const r = await post('/desktops/broken/start', alice);
      assert.equal(r.statusCode, 200, r.body);
      const d = await row('broken');
      assert.equal(d.top_object_id, top);
      assert.equal(d.state, 'running');
      assert.ok(t.store.calls.includes(`overlay ${top}`));
      assert.deepEqual((await events('broken')).map((e) => e.result), ['error']);
      assert.equal((await post('/desktops/broken/stop', alice)).statusCode, 200);
    } finally {
      t.store.differenceWith = (parent, target) => real.importDifference(parent, target);
    }
  });

  it('keeps the image version the desktop started from: only the layers above it are compacted', async () => {
    // The first layer of this chain stands for a published version 2 of the image (shared by other desktops).
    const [v2, ...rest] = await layersOn(imageId, 4);
    await t.db.insertInto('image_versions').values({
      image_id: (await t.db.selectFrom('images').select('id').where('name', '=', 'base').executeTakeFirstOrThrow()).id,
      version: 2, top_object_id: v2!, diff_size: 0, created_at: new Date(t.clock.now()).toISOString(), created_by: null,
    }).execute();
    const top = rest.at(-1)!;
    assert.equal((await t.createDesktop('versioned', 'alice', 'base')).statusCode, 201);
    await t.db.updateTable('desktops').set({ top_object_id: top }).where('name', '=', 'versioned').execute();
    // No check-in here: the start runs the compaction itself before it creates the overlay.
    assert.equal((await post('/desktops/versioned/start', alice)).statusCode, 200);
    const d = await row('versioned');
    const chain = (await chainOf('versioned')).objects;
    assert.deepEqual(chain.map((o) => o.id), [imageId, v2, d.top_object_id]);
    assert.equal(chain[2]?.derivedFrom, top);
    assert.ok(t.store.calls.includes(`overlay ${d.top_object_id}`));
    assert.ok(await real.has(v2!), 'the image version stays');
    for (const id of rest) assert.equal(await real.has(id), false);
    assert.equal((await post('/desktops/versioned/stop', alice)).statusCode, 200);
  });

  it('removes only old objects nothing else refers to: a layer in another desktop\'s chain stays', async () => {
    const [l1, l2, l3] = await layersOn(imageId, 3);
    for (const name of ['shared-a', 'shared-b']) assert.equal((await t.createDesktop(name, 'alice', 'base')).statusCode, 201);
    await t.db.updateTable('desktops').set({ top_object_id: l3! }).where('name', '=', 'shared-a').execute();
    await t.db.updateTable('desktops').set({ top_object_id: l2! }).where('name', '=', 'shared-b').execute();
    assert.equal((await post('/desktops/shared-a/start', alice)).statusCode, 200);
    const [e] = await events('shared-a');
    assert.equal((JSON.parse(e?.detail ?? '{}') as { removed?: unknown }).removed, 1);
    assert.equal(await real.has(l3!), false);
    assert.ok(await real.has(l2!), 'in the chain of shared-b');
    assert.ok(await real.has(l1!), 'in the chain of shared-b');
    assert.equal((await real.verify()).ok, true);
    assert.equal((await post('/desktops/shared-a/stop', alice)).statusCode, 200);
  });
});
