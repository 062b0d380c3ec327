/**
 * Reliability T6 (reliability.md): a slow link — 64 KB/s, 2 s ± 1 s one-way latency (seeded jitter) — between a
 * device and a real server (in-process, real store). What users do over it (check-out, then check-in, with
 * DeviceAgent) and the transfer engine's own download and upload must finish without any timeout → restart loop
 * (no piece retried, one piece request per object, bytes on the wire ≈ the object, a few connections), with
 * progress that never goes back; and the device's heartbeat must renew its offline grant while a transfer fills
 * the link: the lease never lapses. Objects are a few hundred KiB (at 64 KB/s, 64 KiB take a second). One upload of
 * 1 MiB crosses a slower link still (16 KB/s, in the background while the rest runs): its bytes wait in the
 * device's socket buffers for longer than the transfer engine's silence timer. No assertion is about elapsed
 * time: counts, bytes, order and outcomes only.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import type { HeartbeatResponse, Lease } from '@roamdesk/api';
import { type AgentProgress, DeviceAgent, type HeartbeatResult, verifyGrant } from '@roamdesk/client';
import type { ServerHandle } from '@roamdesk/server';
import { type ObjectInfo, Store } from '@roamdesk/store';
import { downloadObjects, type ObjectDescription, type TransferProgress, type TransferReport, uploadObjects } from '@roamdesk/transfer';

import { tempDir } from '../support/guest-vm.ts';
import { api, boot, login } from '../support/server.ts';
import { type Throttle, throttle } from '../support/throttle.ts';

const KiB = 1024;
/** The link of T6: 64 KB/s, 2 s ± 1 s each way. */
const RATE = 64 * 1000;
const LINK = { latencyMs: 2000, jitterMs: 1000, seed: 0x7e57_0006 };
/**
 * A slower link, same latency: an upload's last frame is handed to the kernel long before its bytes arrive (Linux
 * lets a socket buffer MBs), and the sender's socket stays quiet meanwhile. 1 MiB waits there longer than the
 * engine's 60 s silence timer at 16 KB/s, with any send buffer over 1 MB; at 64 KB/s it takes 3.8 MB, which
 * this machine's buffers reach only sometimes.
 */
const SLOWER_RATE = 16 * 1000;
/** A transfer's own bytes on the wire: its object plus framing, 10 % at most (T5's bound), never a second copy. */
const WIRE_FACTOR = 1.1;
/** What crosses the link besides: HTTP heads and the JSON of the calls around a transfer (lease calls, heartbeats). */
const CALLS_BYTES = 32 * KiB;
/**
 * Connections one transfer or lease operation opens through the link: a kept-alive one for its JSON calls, one for
 * the device's API calls (and one more for a call made at the same time), a piece stream or an upgraded upload.
 * A client that gave up a stalled-looking connection would open a new one for each attempt.
 */
const MAX_CONNECTIONS = 6;
/**
 * A heartbeat deadline that covers this link's round trip (at most 3 s each way, plus the wait behind a transfer's
 * bytes), as DeviceAgent's commands that need the server use. Its own default (start, status) is shorter: see the
 * last test.
 */
const HEARTBEAT_DEADLINE_MS = 30_000;
/** Only a bound, so that a hung call fails the test instead of hanging it; never an assertion. */
const HANG_MS = 240_000;

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

function sha256(file: string): string {
  return execFileSync('sha256sum', [file], { encoding: 'utf8' }).slice(0, 64);
}

/** A qcow2 image of `dataKiB` random KiB (4 KiB clusters: little metadata, so the file is mostly data). */
function makeImage(path: string, dataKiB: number, random: string): void {
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', path, '64M']);
  sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${random} 0 ${dataKiB}k`, path]);
}

/** Progress as a transfer reported it: bytes done never decrease and end at the total, the last phase is 'done'. */
function assertMonotonic(what: string, events: readonly TransferProgress[]): void {
  assert.ok(events.length >= 2, `${what}: ${events.length} progress events`);
  for (let i = 1; i < events.length; i++) {
    const [a, b] = [events[i - 1]!, events[i]!];
    assert.ok(b.bytesDone >= a.bytesDone, `${what}: progress went back from ${a.bytesDone} to ${b.bytesDone} (event ${i})`);
    assert.ok(b.bytesOnWire >= a.bytesOnWire, `${what}: bytes on the wire went back (event ${i})`);
    assert.equal(b.bytesTotal, a.bytesTotal, `${what}: the total changed (event ${i})`);
  }
  const last = events.at(-1)!;
  assert.equal(last.phase, 'done', `${what}: the last event`);
  assert.equal(last.bytesDone, last.bytesTotal, `${what}: ends at the total`);
}

/** One transfer over the link moved its object once: nothing retried, the wire about the object's size. */
function assertNoRestart(what: string, r: TransferReport, size: number, linkBytes: number): void {
  assert.equal(r.piecesRetried, 0, `${what}: pieces retried`);
  for (const o of r.objects) assert.ok(o.action !== 'transferred' || o.piecesSent === o.piecesTotal - o.piecesResumed, `${what}: ${JSON.stringify(o)}`);
  assert.ok(r.bytesOnWire >= size && r.bytesOnWire <= WIRE_FACTOR * size, `${what}: ${r.bytesOnWire} bytes on the wire for ${size}`);
  assert.ok(linkBytes >= size && linkBytes <= WIRE_FACTOR * size + CALLS_BYTES, `${what}: ${linkBytes} bytes crossed the link for ${size}`);
}

/** How many of `requests` (`METHOD /api/v1/path?query`) are `method` on a path ending with `end` (the query aside). */
function count(requests: readonly string[], method: string, end: string): number {
  return requests.filter((r) => r.startsWith(`${method} /api/v1/`) && r.split('?')[0]!.endsWith(end)).length;
}

interface Measured<T> {
  value: T;
  /** Bytes through the link, client → server and back, while it ran. */
  up: number;
  down: number;
  connections: number;
  requests: string[];
}

describe('T6 slow link: 64 KB/s, 2 s ± 1 s latency', { timeout: 900_000 }, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let h: ServerHandle;
  let link: Throttle;
  let token = '';
  let agent: DeviceAgent;
  let image: ObjectDescription;
  let slower: Throttle;
  /** The upload over the slower link, started in `before` so that its minute and a half overlaps the tests before its own. */
  let slowerUpload: Promise<Measured<{ report: TransferReport; layer: ObjectInfo; events: TransferProgress[] }>>;
  const file = (name: string): string => join(tmp.dir, name);
  const serverObject = (id: string): string => join(file('server'), 'store', 'objects', `${id}.qcow2`);

  async function lease(name: string): Promise<Lease> {
    const r = await api(h, 'GET', `/desktops/${name}/lease`, token);
    assert.equal(r.statusCode, 200, r.body);
    return r.json<{ lease: Lease }>().lease;
  }

  async function object(id: string): Promise<ObjectDescription> {
    const r = await api(h, 'GET', `/objects/${id}`, token);
    assert.equal(r.statusCode, 200, r.body);
    return r.json<{ object: ObjectDescription }>().object;
  }

  /** The issue time of the desktop's offline grant on the device, and whether it allows starting the local VM. */
  async function grant(name: string): Promise<{ issuedAt: number; ok: boolean }> {
    const rec = await agent.records.require(name);
    assert.ok(rec.grant !== null, `${name} has a grant`);
    const id = await agent.identity.require();
    const check = await agent.grantCheck(rec);
    return { issuedAt: Date.parse(verifyGrant(rec.grant, id.grantKey).issuedAt), ok: check?.ok === true };
  }

  /** Runs `fn`, returning also what it cost the link (the main one by default): bytes each way, connections, requests. */
  async function measured<T>(fn: () => Promise<T>, through: Throttle = link): Promise<Measured<T>> {
    const b0 = through.bytes();
    const c0 = through.connections();
    const r0 = through.requests().length;
    const value = await fn();
    const b1 = through.bytes();
    return { value, up: b1.up - b0.up, down: b1.down - b0.down, connections: through.connections() - c0, requests: through.requests().slice(r0) };
  }

  /** A layer of `dataKiB` random KiB over `img` (which the server holds), in a store of its own at `dir`. */
  async function layerOver(dir: string, dataKiB: number): Promise<{ store: Store; layer: ObjectInfo }> {
    const store = await Store.open(file(dir));
    assert.equal((await store.importImage(file('img.qcow2'), { format: 'qcow2' })).id, image.id);
    const overlay = await store.createOverlay(image.id);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${file('rnd')} 1M ${dataKiB}k`, overlay.path]);
    return { store, layer: await store.seal(overlay) };
  }

  before(async () => {
    tmp = await tempDir('roamdesk-e2e-slow-link-');
    execFileSync('sh', ['-c', `head -c ${4096 * KiB} /dev/urandom > ${file('rnd')}`]);
    h = await boot(file('server'));
    token = await login(h);
    // The desktop's image (what the check-out downloads): a stopped desktop that never ran, so its chain is the image.
    makeImage(file('img.qcow2'), 160, file('rnd'));
    const img = await api(h, 'POST', '/images', token, { name: 'img', path: file('img.qcow2'), format: 'qcow2' });
    assert.equal(img.statusCode, 201, img.body);
    image = await object(img.json<{ image: { id: string } }>().image.id);
    const dk = await api(h, 'POST', '/desktops', token, { name: 'slow', image: 'img', owner: 'admin', memoryMiB: 256, cpus: 1 });
    assert.equal(dk.statusCode, 201, dk.body);
    link = await throttle(h.url, RATE, LINK);
    // The device knows the server by the link's address only: every call it makes crosses the slow link.
    agent = new DeviceAgent({ home: file('device'), session: { server: link.url, token } });
    await agent.register({ name: 'slow-laptop' });

    const { store, layer } = await layerOver('slower-sender', 1024);
    slower = await throttle(h.url, SLOWER_RATE, LINK);
    const events: TransferProgress[] = [];
    slowerUpload = measured(async () => {
      const report = await uploadObjects({
        store, remote: { apiBase: `${slower.url}/api/v1`, token }, objects: [layer], signal: AbortSignal.timeout(HANG_MS), onProgress: (p) => events.push(p),
      });
      return { report, layer, events };
    }, slower);
    // Awaited by its test; until then a failure must not count as unhandled.
    slowerUpload.catch(() => undefined);
  });

  after(async () => {
    await slowerUpload?.catch(() => undefined);
    await slower?.close();
    await link?.close();
    await h?.close();
    await tmp?.remove();
  });

  it('check-out over the link: the download finishes verified, once, with monotonic progress; the lease and its grant arrive', async (t) => {
    const events: TransferProgress[] = [];
    const steps: string[] = [];
    const onProgress = (p: AgentProgress): void => {
      if (steps.at(-1) !== p.step) steps.push(p.step);
      if (p.step === 'download' && p.transfer !== undefined) events.push(p.transfer);
    };
    const before = await lease('slow');
    const m = await measured(() => agent.checkout('slow', { onProgress, signal: AbortSignal.timeout(HANG_MS) }));
    t.diagnostic(`check-out: ${m.connections} connections, ${m.requests.length} requests (${count(m.requests, 'POST', '/progress')} progress posts), ${m.down} bytes down for ${image.size}`);
    const co = m.value;
    assert.equal(co.already, false);
    assert.deepEqual(co.chain, [image.id]);
    assert.ok(co.download !== null);
    assert.deepEqual(co.download.objects.map((o) => o.action), ['transferred']);
    assertNoRestart('check-out', co.download, image.size, m.down);
    assert.equal(count(m.requests, 'GET', '/pieces'), 1, 'one piece request: never asked again');
    assert.equal(count(m.requests, 'GET', '/manifest'), 1);
    assert.deepEqual([count(m.requests, 'POST', '/checkout'), count(m.requests, 'POST', '/checkout/confirm')], [1, 1], 'one check-out call and one confirm');
    assertMonotonic('check-out download', events);
    assert.equal(events.at(-1)?.bytesTotal, image.size);
    assert.deepEqual(steps, ['heartbeat', 'checkout', 'download', 'verify', 'overlay', 'confirm']);
    assert.ok(m.connections <= MAX_CONNECTIONS, `${m.connections} connections for one check-out`);
    assert.equal(sha256((await agent.store()).objectPath(image.id)), image.id, 'the device holds the image, byte for byte');
    const l = await lease('slow');
    assert.deepEqual([l.state, l.deviceName, l.generation], ['checked-out', 'slow-laptop', before.generation + 1], 'the lease moved once, to this device');
    assert.ok(co.grantExpiresAt !== null);
    assert.equal((await grant('slow')).ok, true, 'the grant allows starting the local VM');
  });

  it('a download and an upload through the transfer engine at once, while the device heartbeats over the same link: no restart, monotonic progress, every renewal arrives', async (t) => {
    // Download: another image (256 KiB of data) into a store of its own.
    makeImage(file('other.qcow2'), 256, file('rnd'));
    const o = await api(h, 'POST', '/images', token, { name: 'other', path: file('other.qcow2'), format: 'qcow2' });
    assert.equal(o.statusCode, 201, o.body);
    const other = await object(o.json<{ image: { id: string } }>().image.id);
    const receiver = await Store.open(file('receiver'));
    // Upload: a layer of 192 KiB of new data.
    const { store: sender, layer } = await layerOver('sender', 192);

    const remote = { apiBase: `${link.url}/api/v1`, token };
    const signal = AbortSignal.timeout(HANG_MS);
    const down: TransferProgress[] = [];
    const up: TransferProgress[] = [];
    const before = await grant('slow');
    const generation = (await lease('slow')).generation;
    let finished = 0;
    const counted = (p: Promise<TransferReport>): Promise<TransferReport> => p.finally(() => finished++);
    const m = await measured(async () => {
      const transfers = Promise.all([
        counted(downloadObjects({ store: receiver, remote, objects: [other], signal, onProgress: (p) => down.push(p) })),
        // Small pieces, so that the one batch holds several: the server's interim counts move the progress before
        // its answer (upgraded-receiver.ts).
        counted(uploadObjects({ store: sender, remote, objects: [layer], signal, pieceSize: 64 * 1024, onProgress: (p) => up.push(p) })),
      ]);
      // The device's heartbeats, one after the other while the transfers run (a bounded number).
      const beats: Array<HeartbeatResult & { during: boolean; grant: { issuedAt: number; ok: boolean } }> = [];
      try {
        for (let i = 0; i < 4 && finished < 2; i++) {
          const hb = await agent.heartbeat({ timeoutMs: HEARTBEAT_DEADLINE_MS });
          beats.push({ ...hb, during: finished < 2, grant: await grant('slow') });
        }
      } finally {
        await transfers.catch(() => undefined);
      }
      return { reports: await transfers, beats };
    });
    const [dr, ur] = m.value.reports;
    const beats = m.value.beats;
    t.diagnostic(`transfers: ${m.connections} connections, ${beats.length} heartbeats, ${m.up} bytes up for ${layer.size}, ${m.down} bytes down for ${other.size}`);

    assert.ok(beats.length >= 1 && beats[0]?.during === true, 'a heartbeat was answered while the transfers ran');
    for (const [i, b] of beats.entries()) {
      assert.deepEqual([b.online, b.error, b.lost, b.invalid], [true, null, [], []], `heartbeat ${i + 1} during the transfers: ${JSON.stringify(b)}`);
      const previous = i === 0 ? before : beats[i - 1]!.grant;
      assert.ok(b.grant.issuedAt > previous.issuedAt, `heartbeat ${i + 1} renewed the grant`);
      assert.equal(b.grant.ok, true, `after heartbeat ${i + 1} the grant allows a start`);
    }

    assert.deepEqual(dr.objects.map((x) => x.action), ['transferred']);
    assert.equal(sha256(receiver.objectPath(other.id)), other.id, 'downloaded, verified');
    assert.deepEqual(ur.objects.map((x) => x.action), ['transferred']);
    assert.equal(sha256(serverObject(layer.id)), layer.id, 'uploaded, verified by the server');
    // The link's bytes each way also carry the heartbeats and the other transfer's requests: a few KiB.
    assertNoRestart('download', dr, other.size, m.down);
    assertNoRestart('upload', ur, layer.size, m.up);
    assert.equal(count(m.requests, 'GET', '/pieces'), 1, 'one piece request for the download');
    assert.equal(count(m.requests, 'PUT', '/pieces'), 1, 'one piece upload');
    assert.deepEqual(m.requests.filter((r) => r.startsWith('GET /api/v1/uploads/')), [], 'no retry asked the server what it holds');
    assert.equal(count(m.requests, 'POST', '/devices/heartbeat'), beats.length, 'one request per heartbeat');
    assertMonotonic('download', down);
    assertMonotonic('upload', up);
    assert.equal(up.at(-1)?.bytesTotal, layer.size);
    const midway = up.filter((p) => p.bytesDone > 0 && p.bytesDone < p.bytesTotal).map((p) => p.bytesDone);
    assert.ok(new Set(midway).size >= 2, `the upload's progress moved while its one batch streamed: ${midway.join(', ')}`);
    assert.ok(m.connections <= MAX_CONNECTIONS, `${m.connections} connections for two transfers and ${beats.length} heartbeats`);
    const l = await lease('slow');
    assert.deepEqual([l.state, l.deviceName, l.generation], ['checked-out', 'slow-laptop', generation], 'the lease stayed with the device');
  });

  it('check-in over the link: the layer goes up once, with monotonic progress; a heartbeat during the upload renews the grant; the lease comes back once', async (t) => {
    const rec = await agent.records.require('slow');
    assert.ok(rec.overlay !== null);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${file('rnd')} 2M 128k`, rec.overlay.path]);
    const id = await agent.identity.require();
    const held = await grant('slow');
    assert.equal(held.ok, true, 'the grant never lapsed');
    const before = await lease('slow');

    // Once the upload runs, the device's heartbeat goes over the same link (the route itself: DeviceAgent.heartbeat
    // would save the record the check-in is changing).
    let last: AgentProgress | null = null;
    let beat: Promise<{ answer: HeartbeatResponse; during: AgentProgress | null }> | null = null;
    const heartbeat = async (): Promise<{ answer: HeartbeatResponse; during: AgentProgress | null }> => {
      const r = await fetch(`${link.url}/api/v1/devices/heartbeat`, {
        method: 'POST', headers: { authorization: `Bearer ${id.credential}`, 'content-type': 'application/json' },
        body: JSON.stringify({ leases: [{ desktop: 'slow', generation: rec.generation }] }), signal: AbortSignal.timeout(HANG_MS),
      });
      const text = await r.text();
      assert.equal(r.status, 200, text);
      return { answer: JSON.parse(text) as HeartbeatResponse, during: last };
    };
    const events: TransferProgress[] = [];
    const steps: string[] = [];
    const onProgress = (p: AgentProgress): void => {
      last = p;
      if (steps.at(-1) !== p.step) steps.push(p.step);
      if (p.step !== 'upload' || p.transfer === undefined) return;
      events.push(p.transfer);
      if (beat === null && p.transfer.phase === 'transferring') beat = heartbeat();
    };
    const m = await measured(async () => {
      try {
        return await agent.checkin('slow', { onProgress, signal: AbortSignal.timeout(HANG_MS) });
      } finally {
        await (beat as Promise<unknown> | null)?.catch(() => undefined);
      }
    });
    t.diagnostic(`check-in: ${m.connections} connections, ${m.requests.length} requests (${count(m.requests, 'POST', '/progress')} progress posts), ${m.up} bytes up`);
    const ci = m.value;
    assert.equal(ci.alreadyCommitted, false);
    assert.equal(ci.layersSent.length, 1);
    assert.ok(ci.upload !== null);
    const sent = ci.upload.objects.find((o) => o.action === 'transferred');
    assert.ok(sent !== undefined, JSON.stringify(ci.upload.objects));
    assertNoRestart('check-in', ci.upload, sent.size, m.up);
    assert.equal(count(m.requests, 'PUT', '/pieces'), 1, 'one piece upload');
    assertMonotonic('check-in upload', events);
    assert.ok(m.connections <= MAX_CONNECTIONS, `${m.connections} connections for one check-in`);
    assert.equal(sha256(serverObject(ci.top)), ci.top, 'the server holds the layer, byte for byte');

    assert.ok(beat !== null, 'the heartbeat went out during the upload');
    const hb = await (beat as Promise<{ answer: HeartbeatResponse; during: AgentProgress | null }>);
    assert.equal(hb.during?.step, 'upload', 'it was answered while the upload ran');
    assert.ok(hb.during.transfer !== undefined && hb.during.transfer.phase !== 'done');
    const entry = hb.answer.leases[0];
    assert.ok(entry?.valid === true && entry.grant !== undefined, JSON.stringify(hb.answer));
    const renewed = verifyGrant(entry.grant, id.grantKey);
    assert.equal(renewed.generation, rec.generation);
    assert.ok(Date.parse(renewed.issuedAt) > held.issuedAt, 'the grant was renewed');

    const l = await lease('slow');
    assert.deepEqual([l.state, l.generation], ['server', before.generation + 1], 'the lease came back once');
    assert.equal(await agent.local('slow'), null);
  });

  it('an upload whose bytes wait in the socket buffers longer than the silence timer (16 KB/s) goes up once', async (t) => {
    const m = await slowerUpload;
    const { report, layer, events } = m.value;
    t.diagnostic(`slower link: ${m.connections} connections, ${m.requests.length} requests, ${m.up} bytes up for ${layer.size}`);
    assert.deepEqual(report.objects.map((o) => o.action), ['transferred']);
    assert.equal(sha256(serverObject(layer.id)), layer.id, 'uploaded, verified by the server');
    // The engine used to take the quiet socket for a stall: it gave up, asked the server what it held and sent the
    // batch again, while the abandoned connection's bytes were still arriving.
    assertNoRestart('upload', report, layer.size, m.up);
    assert.equal(count(m.requests, 'PUT', '/pieces'), 1, 'one piece upload');
    assert.deepEqual(m.requests.filter((r) => r.startsWith('GET /api/v1/uploads/')), [], 'no retry asked the server what it holds');
    assertMonotonic('upload', events);
    assert.ok(m.connections <= MAX_CONNECTIONS, `${m.connections} connections for one upload`);
  });

  it('DeviceAgent.heartbeat with its own default deadline (what start and status send) at this link\'s worst case, 3 s each way: a slow answer is not "offline"', async () => {
    // The worst case of "2 s ± 1 s", without jitter: the outcome does not depend on the draw.
    link.setLatency(3000, 0);
    try {
      const hb = await agent.heartbeat();
      assert.deepEqual([hb.online, hb.error], [true, null], 'a slow answer is not "offline"');
    } finally {
      link.setLatency(LINK.latencyMs, LINK.jitterMs);
    }
  });
});
