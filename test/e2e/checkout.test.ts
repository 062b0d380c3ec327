/**
 * Issue 5 end to end: a real server (in-process, real store and QEMU runtime), the tiny real guest, and device
 * agents in several client homes on this machine. The story (server writes → check-out → offline local work →
 * replicate → more local work → check-in → the server verifies everything), rollback with quarantine and
 * fencing, a check-out race, SIGKILLed transfers that resume, hostile check-in layers, compaction, and the
 * offline lease (expiry, clock set back, revocation). `qemu-img compare` checks server and device chains at every
 * acknowledged point. Every QEMU of this test (server data dir and client homes) is killed in `after`.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import type { Lease } from '@roamdesk/api';
import { findGuest, guestAppend, parseGuestSerial, summarizeBoot, type GuestBuild } from '@roamdesk/cli';
import { DeviceAgent, DISK_DEVICE, listQuarantine, localRunDir, localSerialLog, exportQuarantine, StateStore, type TimeSource, withLocalQmp } from '@roamdesk/client';
import type { ServerHandle } from '@roamdesk/server';
import { Store } from '@roamdesk/store';
import { TransferError, uploadObjects } from '@roamdesk/transfer';
import WebSocket from 'ws';

import { BIN, cli, inNamespaceOf, runCli } from '../support/cli.ts';
import { cycleBoot, tempDir } from '../support/guest-vm.ts';
import { runChild } from '../support/device-process.ts';
import { socketsOf } from '../support/sockets.ts';
import { throttle } from '../support/throttle.ts';
import { api, boot, createDesktop, killOurs, login, ourQemus, serial, state, until } from '../support/server.ts';

const MiB = 1024 * 1024;
const LEASE_POLICY = { maxOfflineSeconds: 60, maxChainLength: 2 };
const HOMES = ['home-a', 'home-b', 'home-c', 'home-d', 'home-e', 'home-f', 'home-g', 'home-h', 'home-i', 'home-j', 'home-k', 'home-l', 'home-m', 'home-n'];

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function identical(a: string, b: string): boolean {
  return spawnSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', a, b]).status === 0;
}

function sha256(file: string): string {
  return execFileSync('sha256sum', [file], { encoding: 'utf8' }).slice(0, 64);
}

/** An X server of our own (Xvfb picks a free display number and tells it on fd 3); stopped by `close`. */
async function startXvfb(): Promise<{ display: string; close(): void }> {
  const x = spawn('Xvfb', ['-displayfd', '3', '-screen', '0', '1024x768x24', '-nolisten', 'tcp'], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  const fd3 = x.stdio[3] as NodeJS.ReadableStream;
  const number = await new Promise<string>((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => reject(new Error('Xvfb did not start within 20 s')), 20_000);
    fd3.on('data', (c: Buffer) => {
      got += c.toString();
      if (got.includes('\n')) {
        clearTimeout(timer);
        resolve(got.trim());
      }
    });
    x.once('exit', (code) => reject(new Error(`Xvfb exited ${String(code)}`)));
  });
  return { display: `:${number}`, close: () => x.kill('SIGTERM') };
}

/** A machine whose clock the test controls (boot id, uptime, wall clock). */
function fakeTime(wall: number) {
  const t = { boot: 'boot-1', uptime: 1000, wall };
  const source: TimeSource = { bootId: () => Promise.resolve(t.boot), uptimeSeconds: () => Promise.resolve(t.uptime), wallMs: () => t.wall };
  return {
    t, source, pass(seconds: number) {
      t.uptime += seconds;
      t.wall += seconds * 1000;
    },
  };
}

describe('check-out, offline use, replicate, check-in, rollback (real server, real guest)', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let h: ServerHandle;
  let token = '';
  let guest: GuestBuild;
  let listen = '';
  const dataDir = (): string => join(tmp.dir, 'server');
  const home = (name: string): string => join(tmp.dir, name);
  const serverObject = (id: string): string => join(dataDir(), 'store', 'objects', `${id}.qcow2`);
  const agentFor = (name: string, extra: { server?: string; time?: TimeSource } = {}): DeviceAgent =>
    new DeviceAgent({ home: home(name), session: { server: extra.server ?? h.url, token }, ...(extra.time !== undefined ? { time: extra.time } : {}), callTimeoutMs: 120_000 });
  const deviceObject = async (agent: DeviceAgent, id: string): Promise<string> => (await agent.store()).objectPath(id);

  async function lease(name: string): Promise<Lease> {
    const r = await api(h, 'GET', `/desktops/${name}/lease`, token);
    assert.equal(r.statusCode, 200, r.body);
    return r.json<{ lease: Lease }>().lease;
  }

  async function serverTop(name: string): Promise<string> {
    const r = await api(h, 'GET', `/desktops/${name}/objects`, token);
    assert.equal(r.statusCode, 200, r.body);
    return r.json<{ objects: Array<{ id: string }> }>().objects.at(-1)!.id;
  }

  /** Boot the desktop's server VM with the cycle workload and return what the guest verified and wrote. */
  async function serverCycle(name: string): Promise<ReturnType<typeof summarizeBoot>> {
    const r = await api(h, 'POST', `/desktops/${name}/start`, token);
    assert.equal(r.statusCode, 200, r.body);
    await until(`${name}'s server VM to power off`, async () => ((await state(h, token, name)) === 'stopped' ? true : undefined), 180_000);
    return summarizeBoot(parseGuestSerial(await serial(h, token, name)));
  }

  /** Start the desktop on the device (cycle workload), wait for the guest to power off, summarize its serial log. */
  async function localCycle(agent: DeviceAgent, name: string): Promise<ReturnType<typeof summarizeBoot> & { online: boolean }> {
    const started = await agent.start(name);
    assert.equal(started.running, true);
    await until(`${name}'s local VM to power off`, async () => ((await agent.vm(name)).running ? undefined : true), 180_000);
    const rec = await agent.records.require(name);
    const s = summarizeBoot(parseGuestSerial(await localSerialLog(agent.home, rec.desktopId, 4 * MiB)));
    return { ...s, online: started.online };
  }

  before(async () => {
    tmp = await tempDir('roamdesk-e2e-checkout-');
    process.env['ROAMDESK_DISPLAY'] = 'none';
    guest = await findGuest();
    h = await boot(dataDir(), { lease: LEASE_POLICY });
    listen = new URL(h.url).host;
    token = await login(h);
    const img = await api(h, 'POST', '/images', token, { name: 'guest', path: guest.disk, format: 'qcow2' });
    assert.equal(img.statusCode, 201, img.body);
  });

  after(async () => {
    await h.close();
    await killOurs(dataDir());
    for (const name of HOMES) await killOurs(home(name)).catch(() => undefined);
    await tmp.remove();
  });

  it('the story: server writes → check-out → local work offline → replicate → more local work → check-in → the server verifies it all', async () => {
    await createDesktop(h, token, guest, 'story', guestAppend(guest, 'cycle', { genKib: 256 }));
    const first = await serverCycle('story');
    assert.deepEqual(first.written, [0], 'the server VM wrote generation 0');

    const a = agentFor('home-a');
    await a.register({ name: 'laptop-a' });
    const co = await a.checkout('story');
    const sealed = co.chain.at(-1)!;
    assert.equal(await serverTop('story'), sealed, 'the device holds the chain the server sealed');
    assert.ok(identical(serverObject(sealed), await deviceObject(a, sealed)), 'check-out point: server and device chains identical');
    const l1 = await lease('story');
    assert.equal(l1.state, 'checked-out');
    assert.equal(l1.deviceName, 'laptop-a');
    const refused = await api(h, 'POST', '/desktops/story/start', token);
    assert.equal(refused.statusCode, 409, refused.body);
    assert.match(refused.body, /CHECKED_OUT/);
    assert.match(refused.body, /laptop-a/, 'the refusal names the device');

    // Offline: the server process is gone while the local VM verifies 0 and writes 1.
    await h.close();
    const offline = await localCycle(a, 'story');
    assert.equal(offline.online, false);
    assert.deepEqual(offline.verified, [0]);
    assert.equal(offline.allOk, true);
    assert.deepEqual(offline.written, [1]);

    // The server comes back (same data dir and address): replicate.
    h = await boot(dataDir(), { listen, lease: LEASE_POLICY });
    const rep = await a.replicate('story');
    assert.equal(rep.layersSent.length, 1);
    assert.equal((await lease('story')).replicatedTopObjectId, rep.top);
    assert.ok(identical(serverObject(rep.top), await deviceObject(a, rep.top)), 'replicated point: identical');

    const online = await localCycle(a, 'story');
    assert.equal(online.online, true);
    assert.deepEqual(online.verified, [0, 1]);
    assert.deepEqual(online.written, [2]);

    const ci = await a.checkin('story');
    assert.equal(ci.layersSent.length, 1);
    assert.equal(await serverTop('story'), ci.top);
    assert.ok(identical(serverObject(ci.top), await deviceObject(a, ci.top)), 'check-in point: identical');
    assert.equal(sha256(serverObject(ci.top)), ci.top, 'the same bytes under the same id');
    assert.equal((await lease('story')).state, 'server');
    assert.equal(await a.local('story'), null, 'the local record and overlay are gone');

    const last = await serverCycle('story');
    assert.deepEqual(last.verified, [0, 1, 2], 'the server VM sees every generation');
    assert.equal(last.allOk, true);
    assert.deepEqual(last.written, [3]);
  });

  it('live replicate while `stream` writes: every generation logged before the seal is on the server, also across a live seal interrupted after its snapshot', async () => {
    await createDesktop(h, token, guest, 'live', guestAppend(guest, 'stream', { genKib: 256, intervalMs: 300 }));
    const j = agentFor('home-j');
    await j.register({ name: 'laptop-j' });
    await j.checkout('live');
    const { desktopId } = await j.records.require('live');
    await j.start('live');
    const writes = async (): Promise<number[]> => summarizeBoot(parseGuestSerial(await localSerialLog(j.home, desktopId, 4 * MiB))).written;
    await until('three streamed generations', async () => ((await writes()).length >= 3 ? true : undefined), 120_000);
    // A live seal that died after its blockdev-snapshot (the monitor's answer lost, or the device process killed): the
    // guest writes on into a newer overlay than the record names. The replicate must finish that seal first, not fail
    // on it, nor leave out the writes made since.
    const rec = await j.records.require('live');
    await withLocalQmp(j.home, desktopId, async (qmp, activeNode) => {
      const lossy = {
        execute: (async (name: string, args?: unknown) => {
          const r = await (qmp.execute as (n: string, a?: unknown) => Promise<unknown>)(name, args);
          if (name === 'blockdev-snapshot') throw new Error('the monitor went away');
          return r;
        }) as typeof qmp.execute,
      };
      await assert.rejects((await j.store()).sealLive(rec.overlay!, { qmp: lossy, device: DISK_DEVICE, activeNode }), { code: 'STORE_ERR_SEAL_FAILED' });
    });
    const before = (await writes()).length;
    await until('a generation written after the interrupted seal', async () => ((await writes()).length > before ? true : undefined), 60_000);
    const logged = await writes();
    const rep = await j.replicate('live');
    assert.equal(rep.layersSent.length, 2, 'the interrupted seal, finished, and the new one');
    assert.equal((await j.vm('live')).running, true, 'the local VM kept running through the live seal');
    assert.equal(sha256(serverObject(rep.top)), rep.top, 'the server holds exactly the sealed bytes');
    await j.stop('live');
    // The server's replicated state, booted: the same bytes (same id) from the device's store, on a throwaway overlay.
    const store = await j.store();
    const overlay = await store.createOverlay(rep.top);
    try {
      const check = await cycleBoot(store, overlay, join(tmp.dir, 'run-live'));
      assert.equal(check.allOk, true, check.serial.slice(-1500));
      for (const g of logged) assert.ok(check.verified.includes(g), `generation ${g} (logged before the seal) is in the replicated state`);
    } finally {
      await store.discardOverlay(overlay).catch(() => undefined);
    }
  });

  it('rollback after a replicate: the server is at the replicated state, unsent work sits in quarantine, the late check-in is fenced', async () => {
    await createDesktop(h, token, guest, 'rb', guestAppend(guest, 'cycle', { genKib: 256 }));
    const b = agentFor('home-b');
    await b.register({ name: 'laptop-b' });
    await b.checkout('rb');
    let rec = await b.records.require('rb');
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xa1 0 1M', rec.overlay!.path]);
    const rep = await b.replicate('rb');
    rec = await b.records.require('rb');
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xb2 1M 1M', rec.overlay!.path]);
    const unsent = await b.seal('rb');
    assert.ok(unsent.layer !== null);
    rec = await b.records.require('rb');
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xc3 2M 1M', rec.overlay!.path]);
    const generation = (await lease('rb')).generation;

    const rb = await api(h, 'POST', '/desktops/rb/rollback', token);
    assert.equal(rb.statusCode, 200, rb.body);
    const after = await lease('rb');
    assert.equal(after.state, 'server');
    assert.equal(after.generation, generation + 1);
    assert.equal(await serverTop('rb'), rep.top, 'the server is at the replicated state');

    // The server fences the old generation by itself (a raw call with the device credential)…
    const id = await b.identity.require();
    const raw = await fetch(`${h.url}/api/v1/desktops/rb/checkin`, {
      method: 'POST', headers: { authorization: `Bearer ${id.credential}`, 'content-type': 'application/json' },
      body: JSON.stringify({ generation, top: unsent.layer }),
    });
    assert.equal(raw.status, 409);
    assert.equal(((await raw.json()) as { error: { code: string } }).error.code, 'LEASE_STALE');
    // … and the agent's check-in is refused, its work quarantined, nothing on the server changed.
    await assert.rejects(b.checkin('rb'), { code: 'LEASE_STALE' });
    assert.deepEqual(await lease('rb'), after);
    assert.equal(await serverTop('rb'), rep.top);
    assert.equal(await b.local('rb'), null);
    const entries = (await listQuarantine(b.home)).filter((e) => e.desktop === 'rb');
    assert.equal(entries.length, 1);
    const q = entries[0]!;
    assert.deepEqual(q.unsentLayers, [unsent.layer]);
    assert.ok(q.overlay !== null);
    const out = join(tmp.dir, 'rb-quarantine.qcow2');
    await exportQuarantine(b.home, q.id, out);
    sh('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0xa1 0 1M', '-c', 'read -P 0xb2 1M 1M', '-c', 'read -P 0xc3 2M 1M', out]);
  });

  it('an administrator rollback lands while the device replicates (a real upload on a slow link): the replicate is fenced when it commits, the server stays at the replicated state, the work goes to quarantine (reliability.md T18)', async () => {
    await createDesktop(h, token, guest, 'mid', guestAppend(guest, 'idle'));
    // The device's calls cross an 8 MB/s link, so the rollback comes while its layer is on the way.
    const link = await throttle(h.url, 8 * MiB);
    const n = agentFor('home-n', { server: link.url });
    try {
      await n.register({ name: 'laptop-n' });
      await n.checkout('mid');
      const random = join(tmp.dir, 'mid-random');
      await writeFile(random, randomBytes(24 * MiB));
      let rec = await n.records.require('mid');
      sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xa1 0 1M', rec.overlay!.path]);
      const rep = await n.replicate('mid');
      rec = await n.records.require('mid');
      sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${random} 1M 24M`, rec.overlay!.path]);
      const generation = (await lease('mid')).generation;

      const replicating = n.replicate('mid');
      const up0 = link.bytes().up;
      await until('6 MiB of the second replication on the way', () => Promise.resolve(link.bytes().up - up0 > 6 * MiB ? true : undefined), 60_000);
      const rb = await api(h, 'POST', '/desktops/mid/rollback', token);
      assert.equal(rb.statusCode, 200, rb.body);
      await assert.rejects(replicating, { code: 'LEASE_STALE' });

      // (e) one holder, the generation moved once, the server at the replicated state and whole.
      const after = await lease('mid');
      assert.deepEqual([after.state, after.generation, after.replicatedTopObjectId], ['server', generation + 1, rep.top]);
      assert.equal(await serverTop('mid'), rep.top);
      const objects = (await api(h, 'GET', '/desktops/mid/objects', token)).json<{ objects: Array<{ id: string }> }>().objects.map((o) => o.id);
      for (const id of objects) assert.equal(sha256(serverObject(id)), id);
      // The device let go: no record, and the unsent work (24 MiB of it) in quarantine, readable.
      assert.equal(await n.local('mid'), null);
      const entries = (await listQuarantine(n.home)).filter((e) => e.desktop === 'mid');
      assert.equal(entries.length, 1);
      const out = join(tmp.dir, 'mid-quarantine.qcow2');
      await exportQuarantine(n.home, entries[0]!.id, out);
      const back = join(tmp.dir, 'mid-back');
      // qemu-img dd counts the skipped blocks in count.
      sh('qemu-img', ['dd', '-f', 'qcow2', '-O', 'raw', 'bs=1M', 'skip=1', 'count=25', `if=${out}`, `of=${back}`]);
      assert.equal(sha256(back), sha256(random), 'the quarantined work holds every byte written');
      sh('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0xa1 0 1M', out]);
    } finally {
      await link.close();
    }
  });

  it('two devices race to check out one desktop: exactly one wins; a console open on the server VM ends; the server VM stays down while it is checked out', async () => {
    await createDesktop(h, token, guest, 'race', guestAppend(guest, 'idle'));
    const start = await api(h, 'POST', '/desktops/race/start', token);
    assert.equal(start.statusCode, 200, start.body);
    await until('the idle guest', async () => (/ROAMDESK idle/.test(await serial(h, token, 'race')) ? true : undefined), 120_000);
    // Someone is at the server VM's console (real RFB through the server's proxy) when the check-out comes.
    const issued = await api(h, 'POST', '/desktops/race/console', token);
    assert.equal(issued.statusCode, 200, issued.body);
    const origin = new URL(h.url).origin;
    const ws = new WebSocket(`${origin.replace(/^http/, 'ws')}/api/v1/console/ws?token=${issued.json<{ token: string }>().token}`, ['binary'], { origin });
    const greeting = await new Promise<string>((resolve, reject) => {
      ws.once('message', (m: Buffer) => resolve(m.toString()));
      ws.once('error', reject);
    });
    assert.match(greeting, /^RFB 003\.00\d\n$/);
    const consoleClosed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    const c = agentFor('home-c');
    const d = agentFor('home-d');
    await c.register({ name: 'laptop-c' });
    await d.register({ name: 'laptop-d' });
    const results = await Promise.allSettled([c.checkout('race'), d.checkout('race')]);
    // The session ended with the server VM: nobody keeps a view of (or input into) a desktop that moved away.
    const closedWith = await Promise.race([consoleClosed, new Promise<string>((r) => setTimeout(() => r('still open 30 s after the check-out'), 30_000))]);
    assert.equal(typeof closedWith, 'number', String(closedWith));
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as { code?: string }] : []));
    assert.equal(won.length, 1, JSON.stringify(results.map((r) => r.status)));
    assert.equal(lost[0]?.code, 'CHECKED_OUT');
    const loser = results[0]?.status === 'rejected' ? c : d;
    const winner = loser === c ? d : c;
    assert.equal(await loser.local('race'), null, 'the loser keeps no record');
    // The server's image and the layer sealed for the winner are whole (each hashes to its id), and the winner's
    // chain is exactly the server's.
    const objects = (await api(h, 'GET', '/desktops/race/objects', token)).json<{ objects: Array<{ id: string }> }>().objects.map((o) => o.id);
    for (const id of objects) assert.equal(sha256(serverObject(id)), id);
    assert.deepEqual((await winner.records.require('race')).chain.map((o) => o.id), objects);
    assert.equal(await state(h, token, 'race'), 'stopped');
    assert.deepEqual(await ourQemus(dataDir()), [], 'no server VM runs');
    for (const path of ['/desktops/race/start', '/desktops/race/console']) {
      const r = await api(h, 'POST', path, token);
      assert.equal(r.statusCode, 409, `${path}: ${r.body}`);
      assert.match(r.body, /CHECKED_OUT/);
    }
  });

  it('check-out and check-in survive the client being SIGKILLed mid-transfer; verified pieces are not sent again', async () => {
    // A 96 MiB image of random data, through a 24 MiB/s link, so the kill lands in the middle.
    const base = join(tmp.dir, 'big.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', base, '256M']);
    execFileSync('sh', ['-c', `head -c ${96 * MiB} /dev/urandom > ${join(tmp.dir, 'rnd')}`]);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${join(tmp.dir, 'rnd')} 0 96M`, base]);
    const img = await api(h, 'POST', '/images', token, { name: 'big', path: base, format: 'qcow2' });
    assert.equal(img.statusCode, 201, img.body);
    const dk = await api(h, 'POST', '/desktops', token, { name: 'kill', image: 'big', owner: 'admin', memoryMiB: 256, cpus: 1 });
    assert.equal(dk.statusCode, 201, dk.body);
    const link = await throttle(h.url, 24 * MiB);
    try {
      const e = agentFor('home-e', { server: link.url });
      await e.register({ name: 'laptop-e' });
      const child = (op: 'checkout' | 'checkin', killAfter: number | null) => runChild(home('home-e'), op, 'kill', link.url, token, killAfter);

      const first = await child('checkout', 24 * MiB);
      assert.equal(first.killed, true, 'the first check-out was killed mid-transfer');
      const second = await child('checkout', null);
      const report = (second.result as { download: { objects: Array<{ kind: string; piecesTotal: number; piecesSent: number; piecesResumed: number }> } }).download;
      const image = report.objects.find((o) => o.kind === 'image')!;
      assert.ok(image.piecesResumed > 0, `resumed pieces: ${JSON.stringify(image)}`);
      assert.equal(image.piecesResumed + image.piecesSent, image.piecesTotal, 'every piece was either resumed or sent once');
      const top = await serverTop('kill');
      assert.ok(identical(serverObject(top), await deviceObject(e, top)));
      assert.equal((await lease('kill')).state, 'checked-out');

      // 64 MiB of new guest data on the device, then a check-in killed during its upload.
      const rec = await e.records.require('kill');
      sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${join(tmp.dir, 'rnd')} 128M 64M`, rec.overlay!.path]);
      const third = await child('checkin', 16 * MiB);
      assert.equal(third.killed, true, 'the first check-in was killed mid-upload');
      assert.equal((await lease('kill')).state, 'checked-out', 'nothing committed yet');
      const fourth = await child('checkin', null);
      const ci = fourth.result as { top: string; upload: { objects: Array<{ piecesTotal: number; piecesSent: number; piecesResumed: number }> } };
      const layer = ci.upload.objects[0]!;
      assert.ok(layer.piecesResumed > 0, `resumed pieces: ${JSON.stringify(layer)}`);
      assert.equal(layer.piecesResumed + layer.piecesSent, layer.piecesTotal);
      assert.equal(await serverTop('kill'), ci.top);
      assert.ok(identical(serverObject(ci.top), await deviceObject(e, ci.top)));
      assert.equal((await lease('kill')).state, 'server');
    } finally {
      await link.close();
    }
  });

  it('malicious check-in: hostile layers are refused before any QEMU tool opens them, and the server state does not change', async () => {
    await createDesktop(h, token, guest, 'evil', guestAppend(guest, 'cycle', { genKib: 256 }));
    const f = agentFor('home-f');
    await f.register({ name: 'laptop-f' });
    await f.checkout('evil');
    const rec = await f.records.require('evil');
    const parent = rec.replicatedTop;
    const before = await lease('evil');
    const id = await f.identity.require();
    const evilStore = await Store.open(join(tmp.dir, 'evil-store'));
    const make = (name: string, args: string[]): string => {
      const file = join(tmp.dir, `${name}.qcow2`);
      sh('qemu-img', ['create', '-q', '-f', 'qcow2', ...args, file, '1G']);
      return file;
    };
    const dirty = make('dirty', ['-u', '-b', `${parent}.qcow2`, '-F', 'qcow2', '-o', 'lazy_refcounts=on']);
    const hdr = execFileSync('sh', ['-c', `printf '\\000\\000\\000\\000\\000\\000\\000\\001' | dd of=${dirty} bs=1 seek=72 conv=notrunc status=none`]);
    assert.ok(hdr !== undefined);
    await writeFile(join(tmp.dir, 'data.raw'), Buffer.alloc(0));
    const hostile: Record<string, string> = {
      'backing /etc/passwd': make('passwd', ['-u', '-b', '/etc/passwd', '-F', 'qcow2']),
      'backing ../x': make('dotdot', ['-u', '-b', '../x', '-F', 'qcow2']),
      'backing json:': make('json', ['-u', '-b', 'json:{"driver":"file","filename":"/etc/passwd"}', '-F', 'qcow2']),
      'backing nbd://': make('nbd', ['-u', '-b', 'nbd://127.0.0.1:10809/x', '-F', 'qcow2']),
      'external data file': make('datafile', ['-u', '-b', `${parent}.qcow2`, '-F', 'qcow2', '-o', `data_file=${join(tmp.dir, 'data.raw')}`]),
      'dirty bit': dirty,
    };
    for (const [what, file] of Object.entries(hostile)) {
      const sum = sha256(file);
      await copyFile(file, evilStore.objectPath(sum));
      const desc = { id: sum, kind: 'layer' as const, parent, size: (await stat(file)).size, virtualSize: 1024 * MiB };
      await assert.rejects(
        uploadObjects({ store: evilStore, remote: { apiBase: `${h.url}/api/v1`, token: id.credential }, objects: [desc] }),
        (e: unknown) => e instanceof TransferError && /^QCOW2_ERR_/.test(String(e.data['code'])),
        `${what}: refused by the TypeScript header check`,
      );
      assert.equal((await api(h, 'GET', `/objects/${sum}`, token)).statusCode, 404, `${what}: nothing published`);
      const ci = await fetch(`${h.url}/api/v1/desktops/evil/checkin`, {
        method: 'POST', headers: { authorization: `Bearer ${id.credential}`, 'content-type': 'application/json' },
        body: JSON.stringify({ generation: before.generation, top: sum }),
      });
      assert.equal(ci.status, 404, `${what}: a check-in naming it is refused`);
      assert.deepEqual(await lease('evil'), before, `${what}: the lease is unchanged`);
    }
    assert.equal(await serverTop('evil'), parent);
  });

  it('compaction: more unsent layers than maxChainLength go up as ONE layer over the replicated top', async () => {
    await createDesktop(h, token, guest, 'compact', guestAppend(guest, 'cycle', { genKib: 256 }));
    const g = agentFor('home-g');
    await g.register({ name: 'laptop-g' });
    await g.checkout('compact');
    const replicated = (await g.records.require('compact')).replicatedTop;
    const before = await api(h, 'GET', '/desktops/compact/objects', token);
    const serverChain = before.json<{ objects: Array<{ id: string }> }>().objects.map((o) => o.id);
    const sealedHere: string[] = [];
    for (let i = 0; i < 3; i++) {
      const rec = await g.records.require('compact');
      sh('qemu-io', ['-f', 'qcow2', '-c', `write -P ${0x10 + i} ${i}M 1M`, rec.overlay!.path]);
      const s = await g.seal('compact');
      sealedHere.push(s.layer!);
    }
    const rec = await g.records.require('compact');
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x20 3M 1M', rec.overlay!.path]);
    const expected = join(tmp.dir, 'compact-expected.qcow2');
    await (await g.store()).exportChain(rec.overlay!, expected);

    const r = await g.replicate('compact');
    assert.equal(r.compacted, true);
    assert.equal(r.layersSent.length, 1, 'one layer went up');
    const lz = await lease('compact');
    assert.equal(lz.replicatedTopObjectId, r.top);
    const chain = (await api(h, 'GET', `/objects/${r.top}`, token)).json<{ object: { parent: string } }>().object;
    assert.equal(chain.parent, replicated, 'the new layer sits on the replicated top');
    assert.ok(identical(serverObject(r.top), expected), 'the server shows the guest exactly the local view');
    for (const id of serverChain) assert.ok(await stat(serverObject(id)).then(() => true, () => false), 'objects the server held are untouched');
    const store = await g.store();
    for (const id of sealedHere) assert.equal(await store.has(id), false, 'the replaced local layers are gone');
    const after = await g.records.require('compact');
    assert.equal(after.overlay?.parent, r.top);
    const info = JSON.parse(sh('qemu-img', ['info', '-f', 'qcow2', '--output=json', after.overlay.path])) as { 'backing-filename': string };
    assert.equal(info['backing-filename'], `${r.top}.qcow2`, 'the overlay now rests on the compacted layer');
    const ci = await g.checkin('compact');
    assert.ok(identical(serverObject(ci.top), expected));

    // Back at the server, its side is compacted too once the chain passes the policy (at the next start of the
    // server VM); the device that holds the old chain derives the compacted layer from its own copies instead of
    // downloading it.
    await g.checkout('compact');
    const again = await g.records.require('compact');
    // Two layers this time (one sealed now, one at check-in): within the device's policy, past the server's.
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x30 5M 1M', again.overlay!.path]);
    await g.seal('compact');
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x31 5M 512k', (await g.records.require('compact')).overlay!.path]);
    const expected2 = join(tmp.dir, 'compact-expected-2.qcow2');
    await (await g.store()).exportChain((await g.records.require('compact')).overlay!, expected2);
    const ci2 = await g.checkin('compact');
    const longChain = (await (await g.store()).chain(ci2.top)).map((o) => o.id);
    assert.ok(longChain.length - 1 > LEASE_POLICY.maxChainLength, `the checked-in chain has ${longChain.length - 1} layers`);
    // This guest's disk was written with qemu-io, not by the guest: it fails to mount it and powers off cleanly.
    await serverCycle('compact');
    const compacted = (await api(h, 'GET', '/desktops/compact/objects', token)).json<{ objects: Array<{ id: string; parent: string | null; derivedFrom?: string }> }>().objects;
    assert.equal(compacted.length, 2, 'the image and the compacted layer (the VM wrote into its new overlay)');
    assert.equal(compacted[1]?.parent, longChain[0]);
    assert.equal(compacted[1]?.derivedFrom, ci2.top);
    assert.ok(identical(serverObject(compacted[1].id), expected2), 'the compacted chain shows the guest what the device checked in');
    const co3 = await g.checkout('compact');
    const got = co3.download?.objects ?? [];
    assert.deepEqual(got.slice(0, 2).map((o) => o.action), ['present', 'derived'], 'the compacted layer was derived here');
    // Only what the server VM wrote since (sealed at this check-out) travels.
    const sealedNow = got.slice(2);
    assert.ok(sealedNow.every((o) => o.action === 'transferred'));
    assert.equal(co3.download?.bytesTransferred, sealedNow.reduce((n, o) => n + o.size, 0));
    assert.ok(identical((await g.store()).objectPath(compacted[1].id), expected2));
    await g.checkin('compact');
  });

  it('offline lease: refused after maxOfflineSeconds without contact, a clock set back does not help, contact renews it; a revoked device is fenced', async () => {
    await createDesktop(h, token, guest, 'away', guestAppend(guest, 'cycle', { genKib: 256 }));
    // The device's clocks start an hour behind the server's, so the server's expiresAt never decides here.
    const m = fakeTime(Date.now() - 3_600_000);
    const hh = agentFor('home-h', { time: m.source });
    await hh.register({ name: 'laptop-h' });
    await hh.checkout('away');
    m.pass(30);
    assert.equal((await hh.grantCheck(await hh.records.require('away')))?.ok, true);
    m.pass(31);
    await assert.rejects(hh.start('away', { offline: true }), { code: 'DEVICE_ERR_GRANT_EXPIRED' });
    m.t.wall -= 2 * 24 * 3_600_000;
    await assert.rejects(hh.start('away', { offline: true }), { code: 'DEVICE_ERR_GRANT_EXPIRED' }, 'the clock set back extends nothing');
    m.t.boot = 'boot-2';
    m.t.uptime = 5;
    await assert.rejects(hh.start('away', { offline: true }), { code: 'DEVICE_ERR_GRANT_EXPIRED' }, 'nor does a reboot with the clock set back');
    assert.deepEqual(await ourQemus(hh.home), [], 'no local VM was started');
    const hb = await hh.heartbeat();
    assert.equal(hb.online, true);
    assert.equal((await hh.grantCheck(await hh.records.require('away')))?.ok, true, 'contact with the server renews the grant');
    // The device's clock jumps 30 days ahead of the server's (reliability.md T12). The grant's lifetime counts on the
    // device's own elapsed time from its arrival, so a wrong wall clock neither spends it nor extends it; the server,
    // which never judges a device by its clock, takes the device's replication at its generation; and the grants
    // that contact brings are as good as the others (compared with the server's expiresAt, the device's clock would
    // have found every one expired on arrival).
    m.t.wall += 30 * 24 * 3_600_000;
    m.pass(1);
    assert.equal((await hh.grantCheck(await hh.records.require('away')))?.ok, true, 'a clock set forward spends nothing');
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', (await hh.records.require('away')).overlay!.path]);
    const skewed = await hh.replicate('away');
    assert.equal((await lease('away')).replicatedTopObjectId, skewed.top);
    const renewed = await hh.grantCheck(await hh.records.require('away'));
    assert.equal(renewed?.ok, true, 'the grant the replication brought allows a start');
    m.pass(61);
    assert.equal((await hh.grantCheck(await hh.records.require('away')))?.ok, false, 'and no longer than the server gave it');

    // Revoked: the device learns it at its next contact, its work goes to quarantine, its calls are fenced.
    const id = await hh.identity.require();
    const del = await api(h, 'DELETE', `/devices/${id.id}`, token);
    assert.equal(del.statusCode, 204, del.body);
    await assert.rejects(hh.checkin('away'), { code: 'LEASE_STALE' });
    assert.equal((await listQuarantine(hh.home)).filter((e) => e.desktop === 'away').length, 1);
    const raw = await fetch(`${h.url}/api/v1/devices/heartbeat`, {
      method: 'POST', headers: { authorization: `Bearer ${id.credential}`, 'content-type': 'application/json' }, body: JSON.stringify({ leases: [] }),
    });
    assert.equal(raw.status, 403);
    assert.equal((await lease('away')).state, 'checked-out', 'the lease waits for an administrator rollback');
  });

  it('the CLI: device register, checkout, status --json (disk files), start here, local console (noVNC page, RFB over the one-time WebSocket), live replicate, stop, checkin', async () => {
    await createDesktop(h, token, guest, 'cli', guestAppend(guest, 'idle'));
    const dir = home('home-i');
    await new StateStore(dir).save({ version: 1, server: h.url, session: { user: 'admin', role: 'admin', token, expiresAt: new Date(Date.now() + 3_600_000).toISOString() } });
    assert.equal((await cli(dir, ['device', 'register', '--name', 'laptop-i']))['created'], true);
    const co = await cli(dir, ['checkout', 'cli']);
    assert.equal(co['already'], false);
    const st = await cli(dir, ['status', 'cli']);
    assert.equal(st['location'], 'this-device');
    assert.equal(st['generation'], co['generation']);
    assert.equal(typeof st['image'], 'string');
    assert.ok(Array.isArray(st['layers']));
    assert.equal(typeof st['overlay'], 'string');
    for (const f of [st['image'], ...(st['layers'] as string[]), st['overlay']]) assert.ok((await stat(String(f))).isFile(), `${String(f)} exists`);
    assert.equal((st['offlineLease'] as { ok: boolean }).ok, true);
    assert.equal(st['bytesPendingUpload'], 0, 'a fresh check-out has nothing to send');
    assert.ok((st['objects'] as Array<{ local: string }>).every((o) => o.local === 'complete'), 'the chain status keys, all local');
    const all = await cli(dir, ['status']);
    assert.deepEqual((all['checkouts'] as Array<{ desktop: string }>).map((c) => c.desktop), ['cli']);

    const started = await cli(dir, ['start', 'cli']);
    assert.equal(started['location'], 'this-device');
    assert.equal(started['display'], 'none');
    const local = agentFor('home-i');
    const desktopId = (await local.records.require('cli')).desktopId;
    await until('the local idle guest', async () => (/ROAMDESK idle/.test(await localSerialLog(dir, desktopId, MiB)) ? true : undefined), 120_000);
    assert.match(String((await cli(dir, ['logs', 'cli']))['log']), /ROAMDESK idle/, 'logs reads the local serial console');
    assert.ok(Number((await cli(dir, ['status', 'cli']))['bytesPendingUpload']) > 0, 'the running guest wrote to its overlay');
    // The local VM is reachable from nothing but this user's own processes (reliability.md T32): no inet socket, and
    // UNIX sockets only in its private run directory that nobody but the owner may write.
    const { inet, unix } = await socketsOf((await local.vm('cli')).pid!);
    assert.deepEqual(inet, []);
    const listening = unix.filter((x) => x.listening);
    assert.ok(listening.length >= 2, JSON.stringify(unix));
    for (const x of listening) {
      assert.equal(dirname(x.path), localRunDir(dir, desktopId), x.path);
      assert.equal((await stat(x.path)).mode & 0o022, 0, x.path);
      assert.equal((await stat(dirname(x.path))).mode & 0o077, 0, dirname(x.path));
    }

    // The local console: a page on 127.0.0.1 and a one-time WebSocket to the VM's VNC socket.
    const con = spawn(process.execPath, [BIN, 'console', 'cli'], { env: { ...process.env, ROAMDESK_HOME: dir }, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let buf = '';
        con.stdout.on('data', (c: Buffer) => {
          buf += c.toString();
          const line = buf.split('\n')[0];
          if (buf.includes('\n') && line !== undefined) resolve(line.trim());
        });
        con.once('exit', (code) => reject(new Error(`console exited ${String(code)}`)));
      });
      const u = new URL(url);
      assert.equal(u.hostname, '127.0.0.1');
      const t = new URLSearchParams(u.hash.slice(1)).get('token') ?? '';
      assert.ok(t.length >= 32);
      assert.equal((await fetch(`${u.origin}/`)).status, 200);
      assert.equal((await fetch(`${u.origin}/novnc/core/rfb.js`)).status, 200);
      assert.equal((await fetch(`${u.origin}/novnc/core/../../../../etc/passwd`)).status, 404);
      const greeting = await new Promise<string>((resolve, reject) => {
        const ws = new WebSocket(`ws://${u.host}/ws?token=${t}`, ['binary'], { origin: u.origin });
        ws.once('message', (d: Buffer) => {
          resolve(d.toString('latin1'));
          ws.close();
        });
        ws.once('error', reject);
      });
      assert.equal(greeting, 'RFB 003.008\n', 'QEMU VNC answers through the local console');
      const again = await new Promise<number>((resolve) => {
        const ws = new WebSocket(`ws://${u.host}/ws?token=${t}`, ['binary'], { origin: u.origin });
        ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.once('open', () => resolve(101));
        ws.once('error', () => resolve(-1));
      });
      assert.equal(again, 403, 'the token works once');
    } finally {
      con.kill('SIGTERM');
    }

    // Live replicate: the VM keeps running on a new overlay.
    const rep = await cli(dir, ['replicate', 'cli']);
    assert.equal((rep['layersSent'] as string[]).length, 1);
    assert.equal((await lease('cli')).replicatedTopObjectId, rep['top']);
    assert.equal((await local.vm('cli')).running, true, 'the local VM kept running');
    const stopped = await cli(dir, ['stop', 'cli']);
    assert.equal(stopped['wasRunning'], true);
    const ci = await cli(dir, ['checkin', 'cli']);
    assert.equal(await serverTop('cli'), ci['top']);
    assert.equal((await lease('cli')).state, 'server');
    assert.deepEqual((await cli(dir, ['status']))['checkouts'], []);
  });

  it('with a display the local VM opens a QEMU window; a display QEMU cannot open falls back to VNC only; stop --force quits at once', async () => {
    await createDesktop(h, token, guest, 'win', guestAppend(guest, 'idle'));
    const dir = home('home-k');
    await new StateStore(dir).save({ version: 1, server: h.url, session: { user: 'admin', role: 'admin', token, expiresAt: new Date(Date.now() + 3_600_000).toISOString() } });
    await cli(dir, ['device', 'register', '--name', 'laptop-k']);
    await cli(dir, ['checkout', 'win']);
    const desktopId = (await agentFor('home-k').records.require('win')).desktopId;
    // A guest still booting has no ACPI handler yet, and would only stop at the forced end of the stop timeout.
    const idle = () => until('the local idle guest', async () => (/ROAMDESK idle/.test(await localSerialLog(dir, desktopId, MiB)) ? true : undefined), 120_000);
    const x = await startXvfb();
    try {
      const started = await cli(dir, ['start', 'win'], { DISPLAY: x.display, ROAMDESK_DISPLAY: '' });
      assert.equal(started['display'], 'gtk');
      const tree = await until('the QEMU window on the X display', () => {
        const out = spawnSync('xwininfo', ['-root', '-tree', '-display', x.display], { encoding: 'utf8' }).stdout;
        return Promise.resolve(out.includes(`roamdesk-${desktopId}`) ? out : undefined);
      }, 60_000);
      assert.match(tree, /QEMU/);
      await idle();
      assert.equal((await cli(dir, ['stop', 'win']))['wasRunning'], true);
    } finally {
      x.close();
    }
    // DISPLAY names an X server that is not there: QEMU cannot open its window, the desktop still starts, headless.
    const headless = await cli(dir, ['start', 'win'], { DISPLAY: ':987', ROAMDESK_DISPLAY: '' });
    assert.equal(headless['display'], 'none');
    assert.equal((await agentFor('home-k').vm('win')).running, true);
    // --force: no graceful power-down, even for a guest still booting (it would ignore the power button).
    const forced = await cli(dir, ['stop', 'win', '--force']);
    assert.deepEqual([forced['wasRunning'], forced['how']], [true, 'quit']);
    assert.equal((await agentFor('home-k').vm('win')).running, false);
  });

  it('a device whose disk is full (a real 1 MiB tmpfs): check-out is refused before a byte moves, with what to do; the re-run with space resumes', async () => {
    await createDesktop(h, token, guest, 'full', guestAppend(guest, 'idle'));
    const dir = home('home-l');
    await new StateStore(dir).save({ version: 1, server: h.url, session: { user: 'admin', role: 'admin', token, expiresAt: new Date(Date.now() + 3_600_000).toISOString() } });
    assert.equal((await cli(dir, ['device', 'register', '--name', 'laptop-l']))['created'], true);
    const storeDir = join(dir, 'store');
    await mkdir(storeDir, { recursive: true });
    // A mount namespace of the CLI's own (unshare -rm): the tmpfs exists for that process only, and vanishes with it.
    // Asynchronously: the server runs in this process.
    const child = spawn('unshare', ['-rm', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs "$1" && shift && exec "$@"', 'sh', storeDir, process.execPath, BIN, 'checkout', 'full', '--json'], {
      env: { ...process.env, ROAMDESK_HOME: dir }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    const r = { stdout: '', stderr: '', status: null as number | null };
    child.stdout.on('data', (c: Buffer) => (r.stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (r.stderr += c.toString()));
    r.status = await new Promise<number | null>((resolve) => child.once('close', resolve));
    assert.notEqual(r.status, 0, r.stdout + r.stderr);
    const err = (JSON.parse(r.stdout) as { error: { code: string; message: string; data: Record<string, unknown> } }).error;
    assert.equal(err.code, 'XFER_ERR_NO_SPACE', r.stdout + r.stderr);
    assert.match(err.message, /needs [\d.]+ MB more in .*incoming, which has [\d.]+ MB free/);
    assert.match(String(err.data['hint']), /free at least [\d.]+ MB/);
    const l = await lease('full');
    assert.equal(l.state, 'checking-out', 'the lease waits for this device to resume or cancel');
    // With room, the same command resumes the check-out and completes it.
    const co = await cli(dir, ['checkout', 'full']);
    assert.equal((await lease('full')).state, 'checked-out');
    assert.equal(co['generation'], l.generation);
  });

  it('a full disk under the local VM (a real tmpfs): the guest pauses, status says why and what to do, stop and start are refused until there is room, then start resumes it and no write is lost', async () => {
    await createDesktop(h, token, guest, 'roomy', guestAppend(guest, 'stream', { genKib: 1024, intervalMs: 100 }));
    const dir = home('home-m');
    await new StateStore(dir).save({ version: 1, server: h.url, session: { user: 'admin', role: 'admin', token, expiresAt: new Date(Date.now() + 3_600_000).toISOString() } });
    assert.equal((await cli(dir, ['device', 'register', '--name', 'laptop-m']))['created'], true);
    const storeDir = join(dir, 'store');
    await mkdir(storeDir, { recursive: true });
    // The store on a tmpfs in a mount namespace of our own (unshare -rm), held open by a bounded sleep; every CLI
    // call of this test enters it (nsenter), and so does the local QEMU they start.
    const holder = spawn('unshare', ['-rm', 'sh', '-c', 'mount -t tmpfs -o size=256m tmpfs "$1" && echo mounted && exec sleep 600', 'sh', storeDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    const via = inNamespaceOf(holder.pid);
    const inNs = (args: string[]): string => sh(via[0]!, [...via.slice(1), ...args]);
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.once('data', () => resolve());
        holder.once('exit', (code) => reject(new Error(`unshare exited ${String(code)}`)));
      });
      const co = await cli(dir, ['checkout', 'roomy'], {}, { via });
      assert.equal((await lease('roomy')).state, 'checked-out');
      assert.ok(String(co['overlay']).startsWith(storeDir));
      // Leave 3 MiB: the guest's stream of 1 MiB generations fills it within a few writes.
      const used = Number(inNs(['df', '-B1', '--output=used', storeDir]).split('\n')[1]);
      inNs(['mount', '-o', `remount,size=${used + 3 * MiB}`, storeDir]);
      await cli(dir, ['start', 'roomy'], {}, { via });
      const desktopId = (await agentFor('home-m').records.require('roomy')).desktopId;
      type Vm = { running: boolean; paused: { reason: string; dir: string; freeBytes: number; hint: string } | null };
      const vmOf = async (): Promise<Vm> => (await cli(dir, ['status', 'roomy'], {}, { via }))['vm'] as Vm;
      const paused = await until('the local VM to pause on the full disk', async () => {
        const vm = await vmOf();
        return vm.paused !== null ? vm : undefined;
      }, 180_000);
      assert.equal(paused.running, true);
      assert.equal(paused.paused?.reason, 'no-space');
      assert.equal(paused.paused?.dir, join(storeDir, 'objects'));
      assert.ok((paused.paused?.freeBytes ?? -1) < MiB, JSON.stringify(paused));
      assert.match(paused.paused?.hint ?? '', /is full .*free at least 16\.8 MB there, then run roamdesk start roomy/);
      const writes = async (): Promise<number> => parseGuestSerial(await localSerialLog(dir, desktopId, 4 * MiB)).filter((e) => e.step === 'write').length;
      const before = await writes();
      assert.ok(before < 3, `at most two 1 MiB generations fit in 3 MiB (${before})`);
      // A graceful stop cannot reach a paused guest, and would lose its pending writes: refused, nothing changes.
      const stop = await runCli(dir, ['stop', 'roomy'], { via });
      assert.notEqual(stop.code, 0);
      const stopErr = stop.json['error'] as { code: string; data: { hint: string } };
      assert.equal(stopErr.code, 'DEVICE_ERR_VM_PAUSED', stop.stdout);
      assert.match(stopErr.data.hint, /roamdesk stop roomy --force/);
      // A replication's live seal needs room for a new overlay: refused with the same explanation, nothing sent.
      const rep = await runCli(dir, ['replicate', 'roomy'], { via });
      assert.equal((rep.json['error'] as { code: string }).code, 'DEVICE_ERR_VM_PAUSED', rep.stdout + rep.stderr);
      assert.equal((await lease('roomy')).replicatedAt, null);
      // Still full: start (resume) is refused, and the VM stays paused.
      const full = await runCli(dir, ['start', 'roomy'], { via });
      assert.equal((full.json['error'] as { code: string }).code, 'DEVICE_ERR_NO_SPACE', full.stdout + full.stderr);
      assert.equal((await vmOf()).paused?.reason, 'no-space');
      assert.equal(await writes(), before);
      // Room again: start resumes the guest where it stopped.
      inNs(['mount', '-o', 'remount,size=256m', storeDir]);
      const resumed = await cli(dir, ['start', 'roomy'], {}, { via });
      assert.equal((resumed['resumed'] as { reason: string }).reason, 'no-space');
      await until('two more generations after the resume', async () => ((await writes()) >= before + 2 ? true : undefined), 120_000);
      assert.equal((await vmOf()).paused, null);
      assert.equal((await cli(dir, ['stop', 'roomy'], {}, { via }))['how'], 'powerdown');
      const written = await writes();
      // The next boot verifies every generation the first one wrote, across the pause.
      await cli(dir, ['start', 'roomy'], {}, { via });
      const verified = await until('the next boot to verify', async () => {
        const v = parseGuestSerial(await localSerialLog(dir, desktopId, 4 * MiB)).find((e) => e.step === 'verified');
        return v?.step === 'verified' ? v : undefined;
      }, 120_000);
      assert.deepEqual([verified.count, verified.ok], [written, true]);
      await cli(dir, ['stop', 'roomy'], {}, { via });
    } finally {
      await runCli(dir, ['stop', 'roomy', '--force'], { via }).catch(() => undefined);
      await killOurs(dir).catch(() => undefined);
      holder.kill('SIGKILL');
    }
  });
});
