// The device agent's local pieces without a server: the monotonic clock (injected time sources), offline
// grants (signature, expiry, offline time, clock set back), local records, the per-desktop lock, and the
// quarantine (real qemu-img on tiny images: moved, listed, exported identical).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { link, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import type { GrantBody } from '@roamdesk/api';
import { Store } from '@roamdesk/store';

import { advance, checkGrant, DeviceAgent, DeviceClock, DeviceError, exportQuarantine, listQuarantine, lockDesktop, offlineElapsed, quarantineDesktop, RecordStore, verifyGrant, type LocalDesktop, type TimeSource } from '../src/device/index.ts';
import { startLocalVm } from '../src/device/local-vm.ts';

const { publicKey, privateKey } = generateKeyPairSync('ed25519');
const PEM = publicKey.export({ type: 'spki', format: 'pem' }).toString();

function grantOf(body: GrantBody, key = privateKey): string {
  const payload = Buffer.from(JSON.stringify(body)).toString('base64url');
  return `${payload}.${sign(null, Buffer.from(payload, 'ascii'), key).toString('base64url')}`;
}

const DESKTOP_ID = '11111111-2222-4333-8444-555555555555';
const DEVICE_ID = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';

function body(over: Partial<GrantBody> = {}): GrantBody {
  return {
    desktop: 'work', desktopId: DESKTOP_ID, deviceId: DEVICE_ID, generation: 3, issuedAt: '2030-01-01T00:00:00.000Z',
    expiresAt: '2030-01-08T00:00:00.000Z', maxOfflineSeconds: 3600, ...over,
  };
}

/** A controllable machine: boot id, uptime and wall clock. */
function fakeTime(start: { boot?: string; uptime?: number; wall: number }) {
  const t = { boot: start.boot ?? 'boot-1', uptime: start.uptime ?? 100, wall: start.wall };
  const source: TimeSource = { bootId: () => Promise.resolve(t.boot), uptimeSeconds: () => Promise.resolve(t.uptime), wallMs: () => t.wall };
  return {
    t, source,
    /** Real time passes: both clocks move. */
    pass(seconds: number) {
      t.uptime += seconds;
      t.wall += seconds * 1000;
    },
  };
}

describe('device clock', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'roamdesk-clock-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('within one boot counts uptime, whatever the wall clock does', () => {
    const s0 = advance(null, { bootId: 'b', uptime: 10, wallMs: 1_000_000 }, () => 'e');
    const s1 = advance(s0, { bootId: 'b', uptime: 70, wallMs: 1_000_000 - 86_400_000 }); // clock set back a day
    assert.equal(s1.elapsed, 60);
    assert.equal(s1.trustedWallMs, 1_000_000 + 60_000, 'the trusted wall clock keeps advancing');
    const s2 = advance(s1, { bootId: 'b', uptime: 80, wallMs: 5_000_000 }); // set forward: counts as time passed
    assert.equal(s2.elapsed, 70);
    assert.equal(s2.trustedWallMs, 5_000_000);
  });

  it('across a reboot uses the wall clock from the highest value seen, never negatively', () => {
    const s0 = advance(null, { bootId: 'b1', uptime: 500, wallMs: 10_000_000 }, () => 'e');
    const back = advance(s0, { bootId: 'b2', uptime: 5, wallMs: 10_000_000 - 3_600_000 });
    assert.equal(back.elapsed, 0, 'a clock set back while powered off adds nothing');
    assert.equal(back.trustedWallMs, 10_000_000, 'and does not lower the trusted clock');
    const later = advance(back, { bootId: 'b2', uptime: 65, wallMs: 10_000_000 - 3_600_000 + 60_000 });
    assert.equal(later.elapsed, 60);
    const reboot = advance(later, { bootId: 'b3', uptime: 1, wallMs: later.trustedWallMs + 7_200_000 });
    assert.equal(reboot.elapsed, 60 + 7200);
  });

  it('persists in ROAMDESK_HOME; a lost clock file makes the offline time unknown', async () => {
    const m = fakeTime({ wall: Date.parse('2030-01-01T00:00:00Z') });
    const clock = new DeviceClock(join(dir, 'a'), m.source);
    const first = await clock.now();
    m.pass(120);
    const second = await clock.now();
    assert.equal(offlineElapsed(first, second), 120);
    assert.equal((await stat(clock.file)).mode & 0o777, 0o600);
    await rm(clock.file);
    const fresh = await clock.now();
    assert.equal(offlineElapsed(first, fresh), Number.POSITIVE_INFINITY);
  });
});

describe('offline grants', () => {
  it('verifies the server signature and refuses forgeries and other keys', () => {
    const g = grantOf(body());
    assert.equal(verifyGrant(g, PEM).desktop, 'work');
    const [payload, sig] = g.split('.') as [string, string];
    const forged = `${Buffer.from(JSON.stringify(body({ maxOfflineSeconds: 10_000_000 }))).toString('base64url')}.${sig}`;
    assert.throws(() => verifyGrant(forged, PEM), { code: 'DEVICE_ERR_GRANT_INVALID' });
    const other = generateKeyPairSync('ed25519').privateKey;
    assert.throws(() => verifyGrant(grantOf(body(), other), PEM), { code: 'DEVICE_ERR_GRANT_INVALID' });
    assert.throws(() => verifyGrant(`${payload}`, PEM), { code: 'DEVICE_ERR_GRANT_INVALID' });
  });

  it('allows a start within maxOfflineSeconds and before expiresAt; setting the clock back extends nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'roamdesk-grant-'));
    try {
      const m = fakeTime({ wall: Date.parse('2030-01-01T00:00:00Z') });
      const clock = new DeviceClock(dir, m.source);
      const expect = { desktop: 'work', deviceId: DEVICE_ID, generation: 3 };
      const b = body({ maxOfflineSeconds: 600 });
      const contact = await clock.now();
      m.pass(300);
      assert.equal(checkGrant(b, expect, contact, await clock.now()).ok, true);
      m.pass(301);
      const late = checkGrant(b, expect, contact, await clock.now());
      assert.equal(late.ok, false);
      assert.match(late.reason ?? '', /without server contact/);
      // The user sets the clock back by an hour: still expired.
      m.t.wall -= 3_600_000;
      assert.equal(checkGrant(b, expect, contact, await clock.now()).ok, false);
      // ... and after a reboot with the clock set back, too.
      m.t.boot = 'boot-2';
      m.t.uptime = 3;
      assert.equal(checkGrant(b, expect, contact, await clock.now()).ok, false);
      // A grant for another generation or device never counts.
      assert.equal(checkGrant(body(), { ...expect, generation: 4 }, contact, contact).ok, false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses once the grant's lifetime has passed since it arrived, even when a later contact (without a new grant) allows the offline time", () => {
    // The grant (7 days) arrived on 1 January; the last contact was a minute before its week ran out.
    const received = { epoch: 'e', elapsed: 0, trustedWallMs: Date.parse('2030-01-01T00:00:00Z') };
    const contact = { epoch: 'e', elapsed: 7 * 86_400 - 60, trustedWallMs: Date.parse('2030-01-07T23:59:00Z') };
    const now = { epoch: 'e', elapsed: 7 * 86_400 + 60, trustedWallMs: Date.parse('2030-01-08T00:01:00Z') };
    const expect = { desktop: 'work', deviceId: DEVICE_ID, generation: 3 };
    const r = checkGrant(body(), expect, contact, now, received);
    assert.equal(r.ok, false);
    assert.match(r.reason ?? '', /expired: it allows 604800 s from its arrival, and 604860 s have passed/);
    assert.equal(r.expiresAt, '2030-01-08T00:00:00.000Z');
    const before = checkGrant(body(), expect, contact, { ...now, elapsed: 7 * 86_400 - 30 }, received);
    assert.deepEqual([before.ok, before.secondsLeft], [true, 30]);
  });

  it("counts the grant's lifetime on this device's clock, whatever its wall clock says of the server's time", () => {
    const expect = { desktop: 'work', deviceId: DEVICE_ID, generation: 3 };
    const b = body({ maxOfflineSeconds: 3600, issuedAt: '2030-01-01T00:00:00.000Z', expiresAt: '2030-01-01T01:00:00.000Z' });
    // The device's clock is 30 days ahead of the server's: the grant arrived "after" its expiresAt, and still allows
    // its hour; the device's clock 30 days behind gives it no more than that hour.
    for (const skewDays of [30, -30]) {
      const arrival = Date.parse('2030-01-01T00:00:01Z') + skewDays * 86_400_000;
      const received = { epoch: 'e', elapsed: 100, trustedWallMs: arrival };
      const at = (s: number) => ({ epoch: 'e', elapsed: 100 + s, trustedWallMs: arrival + s * 1000 });
      assert.equal(checkGrant(b, expect, received, at(60), received).ok, true, `${skewDays} days: a minute after arrival`);
      assert.equal(checkGrant(b, expect, received, at(3600), received).ok, false, `${skewDays} days: an hour after arrival`);
    }
  });
});

describe('local records, lock and quarantine', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'roamdesk-device-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses path-like desktop names', async () => {
    const records = new RecordStore(dir);
    assert.throws(() => records.file('../x'), { code: 'DEVICE_ERR_STATE_INVALID' });
    await assert.rejects(lockDesktop(dir, 'a/b', 'x'), { code: 'DEVICE_ERR_STATE_INVALID' });
  });

  it('one operation per desktop: a live holder is BUSY, a dead one is taken over', async () => {
    const lock = await lockDesktop(dir, 'work', 'replication');
    await assert.rejects(lockDesktop(dir, 'work', 'check-in'), { code: 'DEVICE_ERR_BUSY' });
    await lock.release();
    // A holder killed mid-transfer (a pid that no longer exists).
    await writeFile(join(dir, 'locks', 'work.lock'), JSON.stringify({ pid: 2 ** 22 + 12345, what: 'replication' }));
    const again = await lockDesktop(dir, 'work', 'check-in');
    await again.release();
  });

  it('moves unsent layers and the overlay to quarantine, lists it, and exports the chain identical', async () => {
    const home = join(dir, 'home');
    const store = await Store.open(join(home, 'store'));
    const base = join(dir, 'base.qcow2');
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
    qemu('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 1M', base]);
    const image = await store.importImage(base, { format: 'qcow2' });
    const ov1 = await store.createOverlay(image.id);
    qemu('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x22 1M 1M', ov1.path]);
    const l1 = await store.seal(ov1);
    const ov2 = await store.createOverlay(l1.id);
    qemu('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 2M 1M', ov2.path]);
    const l2 = await store.seal(ov2);
    const ov3 = await store.createOverlay(l2.id);
    qemu('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x44 3M 1M', ov3.path]);
    const expected = join(dir, 'expected.qcow2');
    await store.exportChain(ov3, expected);

    const d = (o: typeof image) => ({ id: o.id, kind: o.kind, parent: o.parent, size: o.size, virtualSize: o.virtualSize });
    const rec: LocalDesktop = {
      version: 1, name: 'work', desktopId: DESKTOP_ID, server: 'http://127.0.0.1:1', deviceId: DEVICE_ID, state: 'lost', generation: 3,
      operation: null, checkedOutAt: new Date().toISOString(), chain: [d(image), d(l1), d(l2)], replicatedTop: l1.id, replicatedAt: null,
      lastReplication: null, overlay: ov3, grant: null, lastContact: null, config: { memoryMiB: 64, cpus: 1, kernel: null, initrd: null, append: null },
      garbage: [], lostReason: 'rolled back', maxChainLength: null, layersOperation: null,
    };
    const entry = await quarantineDesktop(home, store, rec, 'rolled back by admin');
    assert.deepEqual(entry.unsentLayers, [l2.id]);
    assert.equal(await store.has(l2.id), false, 'the unsent layer left the store');
    assert.equal(await store.has(l1.id), true, 'replicated objects stay');
    await assert.rejects(stat(ov3.path), 'the overlay moved');
    assert.ok((await readdir(entry.path)).includes('README.txt'));
    const listed = await listQuarantine(home);
    assert.deepEqual(listed.map((e) => e.id), [entry.id]);
    const out = join(dir, 'out.qcow2');
    await exportQuarantine(home, entry.id, out);
    assert.equal(spawnSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', expected, out]).status, 0, 'the export shows what the device saw');
    await assert.rejects(exportQuarantine(home, '../../etc', out), { code: 'DEVICE_ERR_QUARANTINE' });
  });
});

describe('device agent without a server', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'roamdesk-agent-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A desktop `work` checked out in `home` (no server): an empty image, an overlay that holds `pattern` at 0. */
  async function checkedOut(home: string, pattern: number) {
    const agent = new DeviceAgent({ home });
    const store = await agent.store();
    const base = join(dir, `base-${basename(home)}.qcow2`);
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
    const image = await store.importImage(base, { format: 'qcow2' });
    const ov = await store.createOverlay(image.id, { label: 'local' });
    qemu('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} 0 1M`, ov.path]);
    const d = { id: image.id, kind: image.kind, parent: image.parent, size: image.size, virtualSize: image.virtualSize };
    const rec: LocalDesktop = {
      version: 1, name: 'work', desktopId: DESKTOP_ID, server: 'http://127.0.0.1:1', deviceId: DEVICE_ID, state: 'checked-out', generation: 2,
      operation: null, checkedOutAt: new Date().toISOString(), chain: [d], replicatedTop: image.id, replicatedAt: null, lastReplication: null,
      overlay: ov, grant: null, lastContact: null, config: { memoryMiB: 64, cpus: 1, kernel: null, initrd: null, append: null },
      garbage: [], lostReason: null, maxChainLength: null, layersOperation: null,
    };
    await agent.records.save(rec);
    return { agent, store, ov };
  }

  it('a crash between a seal and the record save loses nothing: the next seal finds the sealed layer', async () => {
    const { agent, store, ov } = await checkedOut(join(dir, 'home'), 0x5e);
    const sealed = await store.seal(ov); // ... and the process dies before the record is saved
    const r = await agent.seal('work');
    assert.equal(r.layer, sealed.id, 'the orphaned layer is back in the chain');
    assert.equal(r.pending, 1);
    const after = await agent.records.require('work');
    assert.ok(after.overlay !== null && after.overlay.parent === sealed.id, 'a fresh overlay rests on it');
    const out = join(dir, 'view.qcow2');
    await store.exportChain(after.overlay, out);
    qemu('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0x5e 0 1M', out]);
  });

  for (const stage of ['after blockdev-snapshot', 'after change-backing-file'] as const) {
    it(`a live seal interrupted ${stage} (the VM stopped under it): the newer overlay's writes stay in the chain`, async () => {
      const { agent, store, ov } = await checkedOut(join(dir, `home-${stage.split(' ')[1]!}`), 0x61);
      // What the live seal had done: the next overlay, backed by the recorded one by name; the guest wrote there.
      const next = join(store.objectsDir, 'overlay-local-00000000000000aa.qcow2');
      qemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', basename(ov.path), '-F', 'qcow2', '-u', next, '64M']);
      qemu('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x62 1M 1M', next]);
      if (stage === 'after change-backing-file') {
        // … and published the recorded overlay as a layer (a second name), and named that layer in the next overlay.
        const layer = await store.seal(ov);
        await link(store.objectPath(layer.id), ov.path);
        qemu('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', `${layer.id}.qcow2`, '-F', 'qcow2', next]);
      }
      const r = await agent.seal('work');
      assert.ok(r.layer !== null);
      const after = await agent.records.require('work');
      assert.equal(after.chain.length, 3, 'the recorded overlay and the newer one are both layers now');
      const out = join(dir, `view-${stage.split(' ')[1]!}.qcow2`);
      await store.exportChain(after.overlay!, out);
      qemu('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0x61 0 1M', '-c', 'read -P 0x62 1M 1M', out]);
      assert.equal((await store.verify()).ok, true);
    });
  }

  it('a heartbeat never writes back a record that changed, or was removed, during its round trip', async () => {
    const home = join(dir, 'home-heartbeat');
    await checkedOut(home, 0x33);
    let during: (() => Promise<void>) | null = null;
    const fetch = async (_url: string, init: RequestInit): Promise<Response> => {
      const sent = JSON.parse(init.body as string) as { leases: Array<{ desktop: string; generation: number }> };
      await during?.();
      const device = { id: DEVICE_ID, name: 'laptop', owner: 'ann', createdAt: new Date().toISOString(), lastSeenAt: null, revokedAt: null };
      return Response.json({ device, leases: sent.leases.map((l) => ({ ...l, valid: true })) });
    };
    const agent = new DeviceAgent({ home, fetch });
    await agent.identity.save({ version: 1, server: 'http://127.0.0.1:1', id: DEVICE_ID, name: 'laptop', owner: 'ann', credential: `rdd_${'a'.repeat(43)}`, grantKey: 'unused', registeredAt: new Date().toISOString() });
    // A check-in (or the keeper) adds a layer while the heartbeat is on its way: the layer stays in the record.
    during = async () => {
      const r = await agent.records.require('work');
      r.chain.push({ ...r.chain[0]!, id: 'f'.repeat(64), kind: 'layer', parent: r.chain[0]!.id });
      await agent.records.save(r);
    };
    assert.equal((await agent.heartbeat()).online, true);
    assert.equal((await agent.records.require('work')).chain.length, 2, 'the change made during the round trip is kept');
    assert.ok((await agent.records.require('work')).lastContact !== null, 'and the contact is recorded');
    // A check-in that ends (its record removed) while the heartbeat is on its way: the record stays gone.
    during = () => agent.records.remove('work');
    await agent.heartbeat();
    assert.equal(await agent.records.load('work'), null, 'a removed record is not brought back');
  });

  it('a ROAMDESK_HOME too long for the local VM\'s sockets is named before anything starts', async () => {
    const home = join(dir, 'h'.repeat(80));
    const store = await Store.open(join(dir, 'long-store'));
    const rec = { name: 'work', desktopId: DESKTOP_ID, overlay: null, config: { memoryMiB: 64, cpus: 1, kernel: null, initrd: null, append: null } } as unknown as LocalDesktop;
    await assert.rejects(startLocalVm(home, store, rec), (e: unknown) => {
      assert.ok(e instanceof DeviceError);
      assert.equal(e.code, 'DEVICE_ERR_VM_CONFIG');
      assert.match(e.message, /ROAMDESK_HOME .* bytes too long for the local VM's UNIX sockets/);
      assert.match(String(e.data['hint']), /shorter path/);
      return true;
    });
    await assert.rejects(stat(join(home, 'vms')), /ENOENT/, 'no run directory was made');
  });
});

function qemu(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}
