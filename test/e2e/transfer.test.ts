/**
 * The transfer engine against a real server and real qcow2 objects: downloads and uploads that come out
 * identical (qemu-img compare, equal ids), resume after the receiver is killed, corrupted and cut streams,
 * lying manifests, seeds, a new image version fetched as a difference, hostile uploads, and authorization on
 * every object endpoint.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import fs from 'node:fs';
import fsp, { copyFile, mkdir, readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { after, before, describe, it, mock } from 'node:test';

import type { ServerHandle } from '@roamdesk/server';
import { type ObjectInfo, Store } from '@roamdesk/store';
import { computeManifest, downloadObjects, encodeFrameHeader, type ObjectDescription, PIECES_CONTENT_TYPE, PIECES_UPGRADE, type Remote, TransferError, uploadObjects } from '@roamdesk/transfer';

import { startCutProxy } from '../support/cut-proxy.ts';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { tempDir } from '../support/guest-vm.ts';
import { seededRandom } from '../support/prng.ts';
import { api, boot, login } from '../support/server.ts';

const MiB = 1024 * 1024;

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

function identical(a: string, b: string): boolean {
  return spawnSync('qemu-img', ['compare', '-q', a, b]).status === 0;
}

/** The END_FRAME of an upgraded piece stream (frames.ts), spelled out: magic, zero index, encoding 0xff. */
const END = Buffer.concat([Buffer.from('RDP1'), Buffer.alloc(4), Buffer.from([0xff]), Buffer.alloc(11)]);

/**
 * One hand-made upgraded PUT: sends `head` (+ `early`, bytes before any 101), then `stream` once the server
 * switched; returns everything the server sent until it closed.
 */
async function upgradedPut(base: string, head: string, stream: Buffer, early = Buffer.alloc(0)): Promise<string> {
  const url = new URL(base);
  const socket = connect(Number(url.port), url.hostname);
  await once(socket, 'connect');
  let got = Buffer.alloc(0);
  let switched = false;
  socket.on('data', (d: Buffer) => {
    got = Buffer.concat([got, d]);
    if (!switched && got.includes('\r\n\r\n') && got.toString('latin1').startsWith('HTTP/1.1 101')) {
      switched = true;
      socket.write(stream);
    }
  });
  socket.on('error', () => undefined);
  // Bounded: a server that never closes fails the test instead of hanging it.
  socket.setTimeout(15_000, () => socket.destroy());
  socket.write(Buffer.concat([Buffer.from(head, 'latin1'), early]));
  await once(socket, 'close');
  return got.toString('latin1');
}

function upgradeHead(uploadId: string, token: string | null, protocol = PIECES_UPGRADE): string {
  const auth = token === null ? '' : `Authorization: Bearer ${token}\r\n`;
  return `PUT /api/v1/uploads/${uploadId}/pieces HTTP/1.1\r\nHost: x\r\n${auth}Connection: Upgrade\r\nUpgrade: ${protocol}\r\nContent-Type: ${PIECES_CONTENT_TYPE}\r\nContent-Length: 0\r\n\r\n`;
}

/** Status codes of the answers in `text`, in order (a 101, then the upgraded stream's answer). */
function statuses(text: string): number[] {
  return [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
}

function isXfer(code: string) {
  return (e: unknown) => e instanceof TransferError && e.code === code;
}

describe('transfer engine end to end', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let server: ServerHandle;
  let admin = '';
  let uma = '';
  let proxy: FaultProxy;
  let image: ObjectDescription;
  let layer: ObjectInfo;
  const file = (name: string) => join(tmp.dir, name);
  const remote = (token = admin, base = server.url): Remote => ({ apiBase: `${base}/api/v1`, token });
  const serverObject = (id: string) => join(tmp.dir, 'server', 'store', 'objects', `${id}.qcow2`);
  const store = (name: string) => Store.open(file(name));

  /** A store of uma's holding the image and a layer of `mib` MiB of random data over it (at 10 MiB). */
  async function layerOfUma(name: string, mib: number): Promise<{ s: Store; mine: ObjectInfo }> {
    const s = await store(name);
    await downloadObjects({ store: s, remote: remote(uma), objects: [image] });
    const overlay = await s.createOverlay(image.id);
    execFileSync('sh', ['-c', `head -c ${mib * MiB} /dev/urandom > ${file(`rnd-${name}`)}`]);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${file(`rnd-${name}`)} 10M ${mib}M`, overlay.path]);
    return { s, mine: await s.seal(overlay) };
  }

  before(async () => {
    tmp = await tempDir('roamdesk-transfer-');
    // A 512 MiB disk with 96 MiB of guest data: random (incompressible) and patterned (compressible) regions.
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', file('base.qcow2'), '512M']);
    execFileSync('sh', ['-c', `head -c ${48 * MiB} /dev/urandom > ${file('rnd')}`]);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${file('rnd')} 0 48M`, '-c', 'write -P 0x5a 200M 40M', '-c', 'write -P 0x01 500M 8M', file('base.qcow2')]);
    server = await boot(file('server'));
    admin = await login(server);
    const r = await api(server, 'POST', '/images', admin, { name: 'base', path: file('base.qcow2') });
    assert.equal(r.statusCode, 201, r.body);
    const o = await api(server, 'GET', `/objects/${r.json<{ image: { id: string } }>().image.id}`, admin);
    assert.equal(o.statusCode, 200, o.body);
    image = o.json<{ object: ObjectDescription }>().object;
    assert.equal((await api(server, 'POST', '/users', admin, { name: 'uma', password: 'uma-password-1', role: 'user' })).statusCode, 201);
    const l = await api(server, 'POST', '/auth/login', null, { user: 'uma', password: 'uma-password-1' });
    uma = l.json<{ token: string }>().token;
    proxy = await startFaultProxy(server.url);
  });

  after(async () => {
    await proxy.close();
    await server.close();
    await tmp.remove();
  });

  it('downloads an image: identical, same id, nothing left in incoming/', async () => {
    const s = await store('a');
    const r = await downloadObjects({ store: s, remote: remote(), objects: [image] });
    assert.equal(r.bytesTransferred, image.size);
    assert.ok(identical(file('base.qcow2'), s.objectPath(image.id)));
    const v = await s.verify();
    assert.equal(v.ok, true, JSON.stringify(v.problems));
    assert.deepEqual(await readdir(s.incomingDir), []);
    const again = await downloadObjects({ store: s, remote: remote(), objects: [image] });
    assert.equal(again.bytesOnWire, 0);
    assert.equal(again.objects[0]?.action, 'present');
  });

  it('piece streams that devices abandon mid-way give their sender slots back: the server keeps serving', async () => {
    const m = await api(server, 'GET', `/objects/${image.id}/manifest`, admin);
    assert.equal(m.statusCode, 200, m.body);
    const pieces = m.json<{ pieces: string[] }>().pieces.length;
    const url = new URL(server.url);
    // More abandoned streams than the server sends at once (8): each would have held its slot forever.
    for (let i = 0; i < 12; i++) {
      const socket = connect(Number(url.port), url.hostname);
      await once(socket, 'connect');
      socket.write(`GET /api/v1/objects/${image.id}/pieces?first=0&count=${pieces} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${admin}\r\n\r\n`);
      let got = 0;
      // Bounded: a server whose slots all leaked never sends, and the assertion below says so.
      socket.setTimeout(30_000, () => socket.destroy());
      await new Promise<void>((resolve) => {
        socket.on('data', (d: Buffer) => {
          got += d.length;
          if (got > 5 * MiB) socket.destroy();
        });
        socket.on('error', () => undefined);
        socket.once('close', () => resolve());
      });
      assert.ok(got > 5 * MiB, `abandoned stream ${i + 1} got ${got} bytes: the server no longer sends pieces`);
    }
    const s = await store('abandoned');
    const r = await downloadObjects({ store: s, remote: remote(), objects: [image], signal: AbortSignal.timeout(60_000) });
    assert.equal(r.objects[0]?.action, 'transferred', 'a download after them still gets every piece');
  });

  it('uploads a layer (the server re-hashes and checks it) and a second upload sends nothing', async () => {
    const s = await store('a');
    const overlay = await s.createOverlay(image.id);
    execFileSync('sh', ['-c', `head -c ${12 * MiB} /dev/urandom > ${file('rnd2')}`]);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${file('rnd2')} 100M 12M`, '-c', 'write -P 0x77 300M 4M', overlay.path]);
    layer = await s.seal(overlay);
    const r = await uploadObjects({ store: s, remote: remote(), objects: [image, layer] });
    assert.equal(r.objects[0]?.action, 'present', 'the server already holds the image');
    assert.equal(r.objects[1]?.action, 'transferred');
    assert.equal(r.upgraded, true, 'the pieces went over an upgraded connection');
    assert.ok(r.bytesOnWire >= layer.size && r.bytesOnWire < layer.size * 1.01, `wire ${r.bytesOnWire} for a ${layer.size}-byte layer`);
    const got = await api(server, 'GET', `/objects/${layer.id}`, admin);
    assert.equal(got.statusCode, 200, got.body);
    assert.ok(identical(s.objectPath(layer.id), serverObject(layer.id)));
    const again = await uploadObjects({ store: s, remote: remote(), objects: [layer] });
    assert.equal(again.bytesOnWire, 0);
  });

  it('downloads a chain bottom first into a fresh store', async () => {
    const s = await store('b');
    const r = await downloadObjects({ store: s, remote: remote(), objects: [image, { ...layer }] });
    assert.equal(r.objects.length, 2);
    assert.ok(identical(serverObject(layer.id), s.objectPath(layer.id)));
    assert.deepEqual((await s.chain(layer.id)).map((o) => o.id), [image.id, layer.id]);
  });

  it('resumes after the receiver is killed mid-transfer without re-sending verified pieces', async () => {
    const root = file('killed');
    // Each piece request is held 100 ms on its way, so the transfer lasts long enough (progress is reported at most
    // every 200 ms) to be killed part-way on any machine: the whole image otherwise arrives within one report.
    proxy.setFaults([{ match: (p) => p.includes('/pieces'), times: 10_000, delayMs: 100 }]);
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'support', 'download-child.ts'), root, `${proxy.url}/api/v1`, admin, JSON.stringify([image])], { stdio: ['ignore', 'pipe', 'inherit'] });
    let last = 0;
    try {
      for await (const line of createInterface({ input: child.stdout })) {
        const p = JSON.parse(line) as { bytesDone?: number };
        last = p.bytesDone ?? last;
        if (last >= image.size * 0.4) break;
      }
      child.kill('SIGKILL');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
    }
    proxy.setFaults([]);
    assert.ok(last >= image.size * 0.4 && last < image.size, `killed at ${last} of ${image.size}`);
    const s = await store('killed');
    const r = await downloadObjects({ store: s, remote: remote(), objects: [image] });
    const o = r.objects[0]!;
    const resumed = r.bytesSaved;
    // The journal is written in the background: the last few pieces verified before the kill may be fetched again.
    assert.ok(resumed >= last - 4 * 4 * MiB, `resumed ${resumed} bytes, ${last} were verified before the kill`);
    assert.equal(r.bytesTransferred, image.size - resumed, 'no verified piece was sent again');
    assert.ok(o.piecesResumed > 0);
    assert.ok(identical(file('base.qcow2'), s.objectPath(image.id)));
  });

  it('refuses a corrupted piece and fetches it again', async () => {
    proxy.setFaults([{ match: (p) => p.includes('/pieces?'), flipByteAt: 20 + 4 * MiB + 20 + 12345 }]);
    const s = await store('corrupt');
    const r = await downloadObjects({ store: s, remote: remote(admin, proxy.url), objects: [image], compression: 'off' });
    assert.equal(proxy.fired, 1);
    assert.ok(r.piecesRetried >= 1);
    assert.ok(identical(file('base.qcow2'), s.objectPath(image.id)));
  });

  it('resumes a stream that was cut mid-piece', async () => {
    proxy.setFaults([{ match: (p) => p.includes('/pieces?'), cutAfter: 6 * MiB + 77, times: 2 }]);
    const before = proxy.fired;
    const s = await store('cut');
    const r = await downloadObjects({ store: s, remote: remote(admin, proxy.url), objects: [image], compression: 'off' });
    assert.equal(proxy.fired - before, 2);
    assert.ok(r.piecesRetried >= 1);
    assert.ok(identical(file('base.qcow2'), s.objectPath(image.id)));
  });

  it('survives 20 connection cuts at seeded random offsets: identical result, and each cut costs at most the piece it broke', async () => {
    // A fixed seed, so a failure replays the same cuts.
    const random = seededRandom(0x5eed1234);
    // Offsets into the whole stream of piece bytes the device receives: cuts land anywhere in a request.
    const cuts = Array.from({ length: 20 }, () => Math.floor(random() * image.size));
    proxy.setCuts((p) => p.includes('/pieces?'), cuts);
    const fired = proxy.fired;
    const bytes = proxy.bodyBytes;
    const s = await store('cuts');
    const r = await downloadObjects({ store: s, remote: remote(admin, proxy.url), objects: [image], compression: 'off', maxAttempts: 25 });
    const happened = proxy.fired - fired;
    proxy.setCuts(() => false, []);
    assert.equal(happened, cuts.length, 'every cut happened');
    assert.ok(identical(file('base.qcow2'), s.objectPath(image.id)));
    const o = r.objects[0]!;
    assert.equal(o.piecesSent, o.piecesTotal, 'each piece counted once');
    // Without resuming inside a request, every cut would cost the whole request again (up to 32 MiB).
    const pieceSize = Math.ceil(image.size / o.piecesTotal);
    const forwarded = proxy.bodyBytes - bytes;
    assert.ok(forwarded <= image.size + happened * pieceSize + MiB, `${forwarded} bytes forwarded for a ${image.size}-byte object and ${happened} cuts`);
  });

  it('survives 20 connection cuts at seeded random offsets of an upload (its upgraded connections reset mid-piece): the server stores it whole, and each cut costs about the piece it broke', async (t) => {
    const cutter = await startCutProxy(server.url);
    try {
      const { s, mine } = await layerOfUma('cut-up', 32);
      // A fixed seed, so a failure replays the same cuts; offsets into the bytes the device sends from now on.
      const random = seededRandom(0xc07c07);
      const up0 = cutter.up();
      cutter.setCuts(Array.from({ length: 20 }, () => up0 + Math.floor(random() * mine.size)));
      const r = await uploadObjects({ store: s, remote: remote(uma, cutter.url), objects: [mine], compression: 'off', maxAttempts: 25 });
      const sent = cutter.up() - up0;
      t.diagnostic(`${cutter.cuts()} cuts; ${sent} bytes sent for a ${mine.size}-byte layer; ${r.piecesRetried} pieces retried`);
      assert.equal(cutter.cuts(), 20, 'every cut happened');
      assert.equal(r.upgraded, true, 'on upgraded connections');
      assert.ok(identical(s.objectPath(mine.id), serverObject(mine.id)));
      assert.equal(execFileSync('sha256sum', [serverObject(mine.id)], { encoding: 'utf8' }).slice(0, 64), mine.id);
      const o = r.objects[0]!;
      assert.equal(o.action, 'transferred');
      // The server keeps every piece it verified before a cut (the device asks it what it holds, and sends the
      // rest): a cut costs the piece it broke, and what was on its way behind it in the socket buffers.
      const pieceSize = Math.ceil(mine.size / o.piecesTotal);
      assert.ok(sent <= mine.size + 20 * (pieceSize + 2 * MiB), `${sent} bytes sent for ${mine.size} and 20 cuts`);
    } finally {
      await cutter.close();
    }
  });

  it('20 devices download one object at once: every copy verifies, and afterwards no file or connection is left open', async () => {
    const openFds = async (): Promise<number> => (await readdir('/proc/self/fd')).length;
    const stores = await Promise.all(Array.from({ length: 20 }, (_, i) => store(`many-${i}`)));
    const before = await openFds();
    const reports = await Promise.all(stores.map((s) => downloadObjects({ store: s, remote: remote(uma), objects: [image], compression: 'off' })));
    for (const [i, r] of reports.entries()) {
      assert.equal(r.objects[0]?.action, 'transferred', `device ${i}`);
      assert.equal(await stores[i]!.has(image.id), true, `device ${i} published it (its SHA-256 matched)`);
    }
    assert.ok(identical(file('base.qcow2'), stores[13]!.objectPath(image.id)));
    // Both ends live in this process: the server's object files and sender slots, the devices' partial objects
    // and connections. Idle hashing workers may keep a few descriptors of their own (two at most are kept).
    let after = await openFds();
    for (let i = 0; i < 50 && after > before + 8; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await openFds();
    }
    assert.ok(after <= before + 8, `${after - before} more descriptors open than before the downloads`);
  });

  it('refuses a lying manifest, publishes nothing, and a retry succeeds', async () => {
    const s = await store('lies');
    proxy.setFaults([{ match: (p) => p.includes('/manifest'), rewriteJson: (m) => ({ ...(m as object), size: image.size + 1 }) }]);
    await assert.rejects(downloadObjects({ store: s, remote: remote(admin, proxy.url), objects: [image] }), isXfer('XFER_ERR_MANIFEST'));
    proxy.setFaults([{ match: (p) => p.includes('/manifest'), rewriteJson: (m) => ({ ...(m as object), pieces: (m as { pieces: string[] }).pieces.map((h, i) => (i === 3 ? 'f'.repeat(64) : h)) }) }]);
    await assert.rejects(downloadObjects({ store: s, remote: remote(admin, proxy.url), objects: [image], maxAttempts: 2 }), isXfer('XFER_ERR_PIECE_HASH'));
    assert.equal(await s.has(image.id), false);
    proxy.setFaults([]);
    await downloadObjects({ store: s, remote: remote(admin, proxy.url), objects: [image] });
    assert.ok(identical(file('base.qcow2'), s.objectPath(image.id)));
  });

  it('fills from a seed folder (an old copy under another name) and sends only the manifest', async () => {
    const seed = file('usb');
    await mkdir(seed);
    await copyFile(file('base.qcow2'), join(seed, 'old-checkout.qcow2'));
    const s = await store('seeded');
    const r = await downloadObjects({ store: s, remote: remote(), objects: [image], seeds: [seed] });
    assert.equal(r.bytesOnWire, 0);
    assert.equal(r.objects[0]?.piecesSeeded, r.objects[0]?.piecesTotal);
    assert.ok(identical(file('base.qcow2'), s.objectPath(image.id)));
  });

  it("fetches a new image version as the difference only, and the desktop's chain shows the new version", async () => {
    // v2: v1 with 6 MiB rewritten and 2 MiB written into a hole, flattened into a standalone qcow2 (its file
    // layout shifts; only the guest-level difference may travel).
    await copyFile(file('base.qcow2'), file('v2work.qcow2'));
    execFileSync('sh', ['-c', `head -c ${8 * MiB} /dev/urandom > ${file('rnd4')}`]);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${file('rnd4')} 50M 6M`, '-c', 'write -P 0x99 450M 2M', file('v2work.qcow2')]);
    sh('qemu-img', ['convert', '-O', 'qcow2', file('v2work.qcow2'), file('v2.qcow2')]);
    const pub = await api(server, 'POST', '/images/base/versions', admin, { path: file('v2.qcow2') });
    assert.equal(pub.statusCode, 201, pub.body);
    const d = await api(server, 'POST', '/desktops', admin, { name: 'dv', owner: 'uma', image: 'base' });
    assert.equal(d.statusCode, 201, d.body);
    const chain = await api(server, 'GET', '/desktops/dv/objects', uma);
    assert.equal(chain.statusCode, 200, chain.body);
    const objects = chain.json<{ objects: ObjectDescription[] }>().objects;
    assert.deepEqual(objects.map((o) => o.kind), ['image', 'layer']);
    const diff = objects[1]!;
    const s = await store('a'); // holds v1 from the first test
    const r = await downloadObjects({ store: s, remote: remote(uma), objects, compression: 'off' });
    assert.equal(r.bytesTransferred, diff.size, 'only the difference layer travels');
    assert.ok(r.bytesOnWire < diff.size * 1.01, `wire ${r.bytesOnWire} for a ${diff.size}-byte difference`);
    assert.ok(diff.size < 12 * MiB, `the difference layer is ${diff.size} bytes for 8 MiB changed`);
    assert.ok(identical(s.objectPath(diff.id), file('v2.qcow2')), 'the chain v1 + difference shows the guest v2');
  });

  it('derives a compacted layer from objects it holds instead of downloading it; a wrong recipe falls back to the download', async () => {
    // Store a: the image, `layer` (uploaded above) and two more layers; C squashes the three over the image.
    const a = await store('a');
    let top = layer.id;
    const chain: ObjectInfo[] = [];
    for (const p of [0x31, 0x32]) {
      const o = await a.createOverlay(top);
      sh('qemu-io', ['-f', 'qcow2', '-c', `write -P ${p} ${p}M 6M`, '-c', `write -P ${p} 100M 1M`, o.path]);
      const l = await a.seal(o);
      chain.push(l);
      top = l.id;
    }
    const c = await a.importDifference(image.id, top);
    assert.ok(c !== null);
    assert.equal(c.derivedFrom, top, 'the sidecar records what the layer was computed from');
    const up = await uploadObjects({ store: a, remote: remote(), objects: [...chain, c] });
    assert.deepEqual(up.objects.map((o) => o.action), ['transferred', 'transferred', 'transferred']);
    const served = await api(server, 'GET', `/objects/${c.id}`, admin);
    const cDesc: ObjectDescription = { ...served.json<{ object: ObjectDescription }>().object, derivedFrom: top };

    // Store d holds the old chain (as a device does after a check-in): C is computed here, nothing moves.
    const d = await store('derive');
    await downloadObjects({ store: d, remote: remote(), objects: [image, layer, ...chain] });
    const r = await downloadObjects({ store: d, remote: remote(), objects: [image, cDesc] });
    assert.deepEqual(r.objects.map((o) => o.action), ['present', 'derived']);
    assert.equal(r.bytesOnWire, 0);
    assert.equal(r.bytesSaved, image.size + c.size);
    assert.ok(identical(d.objectPath(c.id), d.objectPath(top)));
    assert.equal((await d.verify()).ok, true);

    // A recipe that does not give these bytes (computed from the wrong object): nothing derived is kept, C is downloaded.
    const e = await store('derive-wrong');
    await downloadObjects({ store: e, remote: remote(), objects: [image, layer, ...chain] });
    const before = (await e.list()).map((o) => o.id).sort();
    const w = await downloadObjects({ store: e, remote: remote(), objects: [image, { ...cDesc, derivedFrom: chain[0]!.id }] });
    assert.deepEqual(w.objects.map((o) => o.action), ['present', 'transferred']);
    assert.equal(w.bytesTransferred, c.size);
    assert.deepEqual((await e.list()).map((o) => o.id).sort(), [...before, c.id].sort(), 'only C was added');
    // Without the objects the recipe names, or with derivation off, the layer is downloaded.
    const f = await store('derive-off');
    await downloadObjects({ store: f, remote: remote(), objects: [image, layer, ...chain] });
    const off = await downloadObjects({ store: f, remote: remote(), objects: [image, cDesc], derive: false });
    assert.deepEqual(off.objects.map((o) => o.action), ['present', 'transferred']);
  });

  it('authorizes every object endpoint', async () => {
    // Uma may read the image (images are a shared catalog) but not a layer outside her chains.
    assert.equal((await api(server, 'GET', `/objects/${image.id}`, uma)).statusCode, 200);
    const missing = 'd'.repeat(64);
    for (const path of ['', '/manifest', '/pieces?first=0&count=1']) {
      const foreign = await api(server, 'GET', `/objects/${layer.id}${path}`, uma);
      const absent = await api(server, 'GET', `/objects/${missing}${path}`, uma);
      assert.equal(foreign.statusCode, 404, foreign.body);
      assert.equal(absent.statusCode, 404);
      assert.equal(foreign.json<{ error: { code: string } }>().error.code, absent.json<{ error: { code: string } }>().error.code);
      assert.equal((await api(server, 'GET', `/objects/${layer.id}${path}`, null)).statusCode, 401);
      assert.equal((await api(server, 'GET', `/objects/${layer.id}${path}`, admin)).statusCode, 200);
    }
    assert.equal((await api(server, 'GET', '/objects/..%2F..%2Fetc%2Fpasswd', admin)).statusCode, 400);
    assert.equal((await api(server, 'GET', `/objects/${image.id}/pieces?first=99999&count=1`, admin)).statusCode, 400);
    // Uma's client cannot download the foreign layer either.
    await assert.rejects(downloadObjects({ store: await store('uma'), remote: remote(uma), objects: [{ ...layer }] }), (e: unknown) => e instanceof TransferError && e.data['status'] === 404);
    // Only administrators upload images; uploads belong to their owner.
    const m = await api(server, 'GET', `/objects/${layer.id}/manifest`, admin);
    const asImage = { ...m.json<Record<string, unknown>>(), kind: 'image', parent: null };
    assert.equal((await api(server, 'POST', '/uploads', uma, { manifest: asImage })).statusCode, 403);
    // An upload must not tell Uma whether the server holds a layer she may not read: the answer for the
    // foreign layer is the one for an absent object (every piece missing), and only the whole object's bytes
    // complete it — which proves she holds it, so she may read it afterwards.
    const begin = await api(server, 'POST', '/uploads', uma, { manifest: m.json<Record<string, unknown>>() });
    assert.equal(begin.statusCode, 200, 'a layer over a readable parent may be uploaded');
    const state = begin.json<{ uploadId: string | null; complete: boolean; piecesVerified: number; missing: number[][] }>();
    assert.notEqual(state.uploadId, null, 'no "already held" shortcut for an object she may not read');
    assert.equal(state.complete, false);
    assert.equal(state.piecesVerified, 0);
    assert.deepEqual(state.missing, [[0, m.json<{ pieces: string[] }>().pieces.length - 1]]);
    const adminBegin = await api(server, 'POST', '/uploads', admin, { manifest: m.json<Record<string, unknown>>() });
    assert.equal(adminBegin.json<{ uploadId: string | null }>().uploadId, null, 'one who may read it is told there is nothing to send');
    // Claiming it with other bytes (a manifest that names the layer's id over pieces of another file) fails at
    // the end, and grants nothing.
    const liar = await store('uma-claims-the-layer');
    const forged = Buffer.from(await readFile(serverObject(layer.id)));
    forged[forged.length - 1] = forged[forged.length - 1]! ^ 0xff;
    await writeFile(liar.objectPath(layer.id), forged);
    await assert.rejects(uploadObjects({ store: liar, remote: remote(uma), objects: [{ ...layer }], compression: 'off' }),
      (e: unknown) => e instanceof TransferError && e.data['status'] === 422 && e.data['code'] === 'XFER_ERR_OBJECT_HASH');
    assert.equal((await api(server, 'GET', `/objects/${layer.id}`, uma)).statusCode, 404, 'a failed claim grants nothing');
    const holder = await store('uma-holds-the-layer');
    await copyFile(serverObject(layer.id), holder.objectPath(layer.id));
    const up = await uploadObjects({ store: holder, remote: remote(uma), objects: [{ ...layer }], compression: 'off' });
    assert.equal(up.objects[0]?.piecesSent, m.json<{ pieces: string[] }>().pieces.length, 'she had to send every piece');
    assert.equal((await api(server, 'GET', `/objects/${layer.id}`, uma)).statusCode, 200, 'having uploaded it, she may read it');
    assert.equal(spawnSync('cmp', ['-s', holder.objectPath(layer.id), serverObject(layer.id)]).status, 0, 'the held object is untouched');
  });

  it('an upload interrupted by the client resumes from what the server verified; a corrupted piece is refused', async () => {
    const { s, mine } = await layerOfUma('uploader', 40);
    // One hand-made PUT whose only piece is corrupted: refused with 422, nothing counted.
    const manifest = await computeManifest(s.objectPath(mine.id), mine);
    const begin = await api(server, 'POST', '/uploads', uma, { manifest });
    const { uploadId } = begin.json<{ uploadId: string }>();
    const piece = Buffer.alloc(manifest.pieceSize, 0x42);
    const frame = Buffer.concat([encodeFrameHeader({ index: 0, encoding: 0, payloadLength: piece.length, rawLength: piece.length }), piece]);
    const put = await server.app.inject({ method: 'PUT', url: `/api/v1/uploads/${uploadId}/pieces`, headers: { authorization: `Bearer ${uma}`, 'content-type': PIECES_CONTENT_TYPE }, payload: frame });
    assert.equal(put.statusCode, 422, put.body);
    assert.equal(put.json<{ error: { code: string } }>().error.code, 'XFER_ERR_PIECE_HASH');
    assert.equal((await api(server, 'GET', `/uploads/${uploadId}`, uma)).json<{ piecesVerified: number }>().piecesVerified, 0);
    // The client gives up after ~half the bytes went out (as if killed); the next run sends only the rest.
    const abort = new AbortController();
    await assert.rejects(uploadObjects({
      store: s, remote: remote(uma), objects: [mine], inFlight: 1, batchBytes: 4 * MiB, compression: 'off', signal: abort.signal,
      onProgress: (p) => { if (p.bytesDone >= mine.size / 2) abort.abort(); },
    }));
    const held = (await api(server, 'GET', `/uploads/${uploadId}`, uma)).json<{ piecesVerified: number }>().piecesVerified;
    assert.ok(held > 0, 'the server kept what it verified');
    const r = await uploadObjects({ store: s, remote: remote(uma), objects: [mine], compression: 'off' });
    assert.equal(r.objects[0]?.piecesResumed, held);
    assert.equal(r.objects[0]?.piecesSent, manifest.pieces.length - held);
    assert.ok(identical(s.objectPath(mine.id), serverObject(mine.id)));
    // A layer on top of her own upload (not yet part of any desktop) may follow: her uploads are hers to read.
    const over = await s.createOverlay(mine.id);
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x31 70M 1M', over.path]);
    const next = await s.seal(over);
    const r2 = await uploadObjects({ store: s, remote: remote(uma), objects: [mine, next] });
    assert.deepEqual(r2.objects.map((o) => o.action), ['present', 'transferred']);
    assert.equal((await api(server, 'GET', `/objects/${next.id}`, uma)).statusCode, 200);
  });

  it('streams upload pieces on an upgraded connection that refuses strays, bad pieces and other users; behind a proxy that drops Upgrade it sends plain PUTs', async () => {
    const s = await store('upgrade');
    await downloadObjects({ store: s, remote: remote(uma), objects: [image] });
    const overlay = await s.createOverlay(image.id);
    execFileSync('sh', ['-c', `head -c ${20 * MiB} /dev/urandom > ${file('rnd4')}`]);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${file('rnd4')} 30M 20M`, overlay.path]);
    const mine = await s.seal(overlay);
    const manifest = await computeManifest(s.objectPath(mine.id), mine);
    const { uploadId } = (await api(server, 'POST', '/uploads', uma, { manifest })).json<{ uploadId: string }>();
    const verified = async () => (await api(server, 'GET', `/uploads/${uploadId}`, uma)).json<{ piecesVerified: number }>().piecesVerified;
    const bytes = await readFile(s.objectPath(mine.id));
    const frame = (index: number, payload: Buffer) => Buffer.concat([encodeFrameHeader({ index, encoding: 0, payloadLength: payload.length, rawLength: payload.length }), payload]);
    const piece0 = bytes.subarray(0, manifest.pieceSize);

    // Refused before anything is switched: no credential, someone else's upload, an unknown protocol, bytes sent early.
    assert.deepEqual(statuses(await upgradedPut(server.url, upgradeHead(uploadId, null), END)), [401]);
    assert.deepEqual(statuses(await upgradedPut(server.url, upgradeHead(uploadId, admin), END)), [404]);
    assert.deepEqual(statuses(await upgradedPut(server.url, upgradeHead(uploadId, uma, 'h2c'), END)), [400]);
    assert.deepEqual(statuses(await upgradedPut(server.url, upgradeHead(uploadId, uma), END, frame(0, piece0))), [422]);
    // After the 101: a piece that is not what the manifest says, a garbled stream, bytes after the end.
    const bad = await upgradedPut(server.url, upgradeHead(uploadId, uma), Buffer.concat([frame(0, Buffer.alloc(piece0.length, 0x42)), END]));
    assert.deepEqual(statuses(bad), [101, 422]);
    assert.match(bad, /XFER_ERR_PIECE_HASH/);
    const garbled = await upgradedPut(server.url, upgradeHead(uploadId, uma), Buffer.from('GET / HTTP/1.1\r\n\r\n'.padEnd(40, 'x')));
    assert.deepEqual(statuses(garbled), [101, 422]);
    assert.match(garbled, /XFER_ERR_PROTOCOL/);
    const trailing = await upgradedPut(server.url, upgradeHead(uploadId, uma), Buffer.concat([END, Buffer.from('more')]));
    assert.deepEqual(statuses(trailing), [101, 422]);
    assert.equal(await verified(), 0, 'nothing counted');
    // A good piece, then the end: answered with the upload's state.
    const good = await upgradedPut(server.url, upgradeHead(uploadId, uma), Buffer.concat([frame(0, piece0), END]));
    assert.deepEqual(statuses(good), [101, 200]);
    assert.match(good, /"piecesVerified":1/);
    assert.equal(await verified(), 1);

    // The proxy forwards no hop-by-hop header (RFC 9110 §7.6.1): the client sees an unswitched answer and sends plain PUTs.
    const r = await uploadObjects({ store: s, remote: remote(uma, proxy.url), objects: [mine], compression: 'off' });
    assert.equal(r.upgraded, false);
    assert.equal(r.objects[0]?.piecesResumed, 1);
    assert.equal(r.objects[0]?.piecesSent, manifest.pieces.length - 1);
    assert.ok(identical(s.objectPath(mine.id), serverObject(mine.id)));
  });

  it('a server start removes uploads nobody added to for transfer.uploadTtlSeconds, and keeps the others', async () => {
    const data = file('server-ttl');
    let h = await boot(data);
    try {
      const token = await login(h);
      const start = async (tag: number) => {
        const bytes = Buffer.alloc(4 * MiB, tag);
        await writeFile(file(`ttl-${tag}`), bytes);
        const m = await computeManifest(file(`ttl-${tag}`), { id: String(tag).repeat(64), kind: 'image', parent: null, virtualSize: 4 * MiB });
        const { uploadId } = (await api(h, 'POST', '/uploads', token, { manifest: m })).json<{ uploadId: string }>();
        const frame = Buffer.concat([encodeFrameHeader({ index: 0, encoding: 0, payloadLength: bytes.length, rawLength: bytes.length }), bytes, END]);
        assert.deepEqual(statuses(await upgradedPut(h.url, upgradeHead(uploadId, token), frame)), [101, 200]);
        return uploadId;
      };
      const old = await start(1);
      const recent = await start(2);
      await h.close();
      // Eight days without a byte added (the default TTL is seven).
      const dir = join(data, 'store', 'incoming', `up-${old}`);
      const then = new Date(Date.now() - 8 * 24 * 3600 * 1000);
      for (const f of await readdir(dir)) await utimes(join(dir, f), then, then);
      h = await boot(data);
      const t2 = await login(h);
      assert.deepEqual((await readdir(join(data, 'store', 'incoming'))).sort(), [`up-${recent}`]);
      assert.equal((await api(h, 'GET', `/uploads/${old}`, t2)).statusCode, 404);
      assert.equal((await api(h, 'GET', `/uploads/${recent}`, t2)).json<{ piecesVerified: number }>().piecesVerified, 1);
    } finally {
      await h.close();
    }
  });

  it('refuses hostile uploads and leaves the server unchanged', async () => {
    const s = await store('hostile');
    await downloadObjects({ store: s, remote: remote(uma), objects: [image] });
    const before = (await readdir(join(tmp.dir, 'server', 'store', 'objects'))).sort();
    // A layer whose backing file is /etc/passwd, dropped into the client's store by hand.
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', '/etc/passwd', '-F', 'raw', file('evil.qcow2'), '512M']);
    const id = execFileSync('sha256sum', [file('evil.qcow2')], { encoding: 'utf8' }).slice(0, 64);
    await copyFile(file('evil.qcow2'), s.objectPath(id));
    const evil = { id, kind: 'layer' as const, parent: image.id, size: Number(execFileSync('stat', ['-c%s', file('evil.qcow2')], { encoding: 'utf8' })), virtualSize: image.virtualSize };
    await assert.rejects(uploadObjects({ store: s, remote: remote(uma), objects: [evil] }), (e: unknown) => e instanceof TransferError && /QCOW2_ERR/.test(String(e.data['code'])));
    // A manifest whose piece hashes describe other bytes: every piece is refused, nothing is written.
    const good = await api(server, 'GET', `/objects/${image.id}/manifest`, uma);
    const lie = { ...good.json<{ pieces: string[] }>(), id: 'e'.repeat(64), kind: 'layer', parent: image.id };
    const begin = await api(server, 'POST', '/uploads', uma, { manifest: lie });
    assert.equal(begin.statusCode, 200, begin.body);
    const { uploadId } = begin.json<{ uploadId: string }>();
    const complete = await api(server, 'POST', `/uploads/${uploadId}/complete`, uma);
    assert.equal(complete.statusCode, 422);
    assert.equal((await api(server, 'GET', `/uploads/${uploadId}`, admin)).statusCode, 404, "another user's upload is invisible");
    assert.equal((await api(server, 'DELETE', `/uploads/${uploadId}`, uma)).statusCode, 204);
    assert.deepEqual((await readdir(join(tmp.dir, 'server', 'store', 'objects'))).sort(), before);
    await writeFile(file('done'), '');
  });

  it('a full disk, on the device or on the server, is refused before a byte moves and never retried; a re-run after space was freed completes', async () => {
    const s = await store('full');
    const serverIncoming = join(tmp.dir, 'server', 'store', 'incoming');
    // statfs says "1 MiB free" for the directory named by `full` (the device's or the server's incoming/).
    let full = s.incomingDir;
    const asked: string[] = [];
    const realStatfs = fsp.statfs.bind(fsp);
    mock.method(fsp, 'statfs', async (path: string) => {
      asked.push(path);
      return path === full ? { bavail: 256, bsize: 4096 } : realStatfs(path);
    });
    syncBuiltinESMExports();
    try {
      await assert.rejects(downloadObjects({ store: s, remote: remote(uma), objects: [image] }), (e: unknown) => isXfer('XFER_ERR_NO_SPACE')(e)
        && e instanceof TransferError && e.data['needed'] === image.size && /free at least/.test(String(e.data['hint'])));
      assert.deepEqual(await readdir(s.incomingDir), [], 'nothing created on the device');
      assert.equal(await s.has(image.id), false);
      full = '';
      await downloadObjects({ store: s, remote: remote(uma), objects: [image] });

      const overlay = await s.createOverlay(image.id);
      sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x44 20M 6M', overlay.path]);
      const mine = await s.seal(overlay);
      const before = (await readdir(serverIncoming)).sort();
      full = serverIncoming;
      asked.length = 0;
      await assert.rejects(uploadObjects({ store: s, remote: remote(uma), objects: [mine] }), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_REMOTE'
        && e.data['status'] === 507 && e.data['code'] === 'XFER_ERR_NO_SPACE' && /ask its administrator/.test(String(e.data['hint'])));
      assert.equal(asked.filter((p) => p === serverIncoming).length, 1, '507 is not retried');
      assert.deepEqual((await readdir(serverIncoming)).sort(), before, 'nothing created on the server');
      assert.equal((await api(server, 'GET', `/objects/${mine.id}`, uma)).statusCode, 404);
      full = '';
      const r = await uploadObjects({ store: s, remote: remote(uma), objects: [mine] });
      assert.equal(r.objects[0]?.action, 'transferred');
      assert.ok(identical(s.objectPath(mine.id), serverObject(mine.id)));
    } finally {
      mock.restoreAll();
      syncBuiltinESMExports();
    }
  });

  it('ENOSPC in the middle of a download keeps the verified pieces: the re-run fetches only the rest', async () => {
    const s = await store('enospc');
    let written = 0;
    const realWriteSync = fs.writeSync.bind(fs) as (...a: unknown[]) => number;
    // The disk "fills up" after 24 MiB of this store's incoming object (other writes, e.g. logs, go through).
    mock.method(fs, 'writeSync', (...args: unknown[]) => {
      const fd = args[0];
      if (typeof fd === 'number' && fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(s.incomingDir)) {
        if (written >= 24 * MiB) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        const n = realWriteSync(...args);
        written += n;
        return n;
      }
      return realWriteSync(...args);
    });
    syncBuiltinESMExports();
    try {
      await assert.rejects(downloadObjects({ store: s, remote: remote(uma), objects: [image], compression: 'off' }), isXfer('XFER_ERR_NO_SPACE'));
    } finally {
      mock.restoreAll();
      syncBuiltinESMExports();
    }
    assert.equal(await s.has(image.id), false);
    const r = await downloadObjects({ store: s, remote: remote(uma), objects: [image], compression: 'off' });
    const o = r.objects[0];
    assert.ok(o !== undefined && o.piecesResumed > 0 && o.piecesSent + o.piecesResumed === o.piecesTotal, JSON.stringify(o));
    assert.ok(identical(file('base.qcow2'), s.objectPath(image.id)));
  });
});
