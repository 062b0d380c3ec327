// `roamdesk prefetch` and `roamdesk status` end to end: a real server (real store, in this process) holding a
// real qcow2 image and a layer (a published second version), and the CLI run as a child process exactly as a
// user runs it, with its own ROAMDESK_HOME and local store. A throttling TCP proxy slows one home's link so a
// prefetch can be interrupted (SIGINT, as Ctrl-C) part-way through.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import type { ServerHandle } from '@roamdesk/server';

import { ADMIN, api, boot, login } from '../../../test/support/server.ts';

const BIN = fileURLToPath(new URL('../bin/roamdesk.js', import.meta.url));
const MiB = 1024 * 1024;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface ChainObject { id: string; kind: 'image' | 'layer'; parent: string | null; size: number; virtualSize: number }
interface StatusJson {
  desktop: string;
  location: string;
  source: 'server' | 'last-known';
  asOf: string;
  objects: Array<{ id: string; kind: string; size: number; local: 'complete' | 'partial' | 'missing'; localBytes: number; path?: string }>;
  bytesTotal: number;
  bytesLocal: number;
  unreachable?: { server: string; message: string };
}
interface PrefetchJson {
  desktop: string;
  store: string;
  chain: { objects: ChainObject[]; bytes: number };
  report: {
    direction: string; bytesTotal: number; bytesTransferred: number; bytesOnWire: number; bytesSaved: number; seconds: number;
    compression: boolean; compressionReason: string; piecesRetried: number;
    objects: Array<{ id: string; kind: string; size: number; action: 'present' | 'transferred'; piecesTotal: number; piecesSent: number; piecesResumed: number; piecesSeeded: number }>;
  };
}

function start(home: string, args: readonly string[], input = ''): { child: ReturnType<typeof spawn>; done: Promise<Run> } {
  // Async spawn: the server answers from this same process, so the test must not block its event loop.
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ROAMDESK_HOME: home, NO_COLOR: '1' }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const done = new Promise<Run>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  child.stdin.end(input);
  return { child, done };
}

const roamdesk = (home: string, args: readonly string[], input?: string): Promise<Run> => start(home, args, input).done;

function json<T>(r: Run): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

function ok(r: Run): Run {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

/**
 * A TCP proxy to `port` that, while `bytesPerSec` is set, delivers the server's answers to each connection at
 * that rate (requests pass untouched): a slow link without touching the server or the client.
 */
async function throttlingProxy(port: number): Promise<{ url: string; bytesPerSec: number | null; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const state = { bytesPerSec: null as number | null };
  const server: Server = createServer((down) => {
    const up = connect(port, '127.0.0.1');
    sockets.add(down).add(up);
    down.pipe(up);
    up.on('data', (chunk: Buffer) => {
      down.write(chunk);
      if (state.bytesPerSec === null) return;
      up.pause();
      setTimeout(() => up.resume(), (chunk.length * 1000) / state.bytesPerSec);
    });
    up.on('end', () => down.end());
    const close = (): void => {
      up.destroy();
      down.destroy();
      sockets.delete(up);
      sockets.delete(down);
    };
    up.on('error', close).on('close', close);
    down.on('error', close).on('close', close);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    get bytesPerSec() { return state.bytesPerSec; },
    set bytesPerSec(v: number | null) { state.bytesPerSec = v; },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

async function journalEntries(home: string, id: string): Promise<number> {
  return stat(join(home, 'store', 'incoming', `dl-${id}`, 'journal')).then((s) => Math.floor(s.size / 4), () => 0);
}

describe('roamdesk prefetch and status', () => {
  let tmp = '';
  let server: ServerHandle;
  let proxy: Awaited<ReturnType<typeof throttlingProxy>>;
  let home = '';
  let slowHome = '';
  let umaHome = '';
  let chain: ChainObject[] = [];
  const file = (name: string) => join(tmp, name);
  const serverObject = (id: string) => join(tmp, 'server', 'store', 'objects', `${id}.qcow2`);

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'roamdesk-prefetch-'));
    // A 256 MiB disk with 24 MiB of random (incompressible) guest data: 7 pieces of 4 MiB; version 2 adds a layer.
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', file('base.qcow2'), '256M']);
    await writeFile(file('rnd'), randomBytes(24 * MiB));
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${file('rnd')} 0 24M`, '-c', 'write -P 0x5a 100M 4M', file('base.qcow2')]);
    await copyFile(file('base.qcow2'), file('v2.qcow2'));
    await writeFile(file('rnd2'), randomBytes(3 * MiB));
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${file('rnd2')} 40M 3M`, file('v2.qcow2')]);

    server = await boot(file('server'));
    const admin = await login(server);
    const img = await api(server, 'POST', '/images', admin, { name: 'base', path: file('base.qcow2'), format: 'qcow2' });
    assert.equal(img.statusCode, 201, img.body);
    const v2 = await api(server, 'POST', '/images/base/versions', admin, { path: file('v2.qcow2'), format: 'qcow2' });
    assert.ok(v2.statusCode === 200 || v2.statusCode === 201, v2.body);
    const user = await api(server, 'POST', '/users', admin, { name: 'uma', password: 'uma-password-1', role: 'user' });
    assert.equal(user.statusCode, 201, user.body);
    const d = await api(server, 'POST', '/desktops', admin, { name: 'work', image: 'base', owner: 'admin', memoryMiB: 256 });
    assert.equal(d.statusCode, 201, d.body);
    const c = await api(server, 'GET', '/desktops/work/objects', admin);
    assert.equal(c.statusCode, 200, c.body);
    chain = c.json<{ objects: ChainObject[] }>().objects;
    assert.deepEqual(chain.map((o) => o.kind), ['image', 'layer']);

    proxy = await throttlingProxy(Number(new URL(server.url).port));
    home = await mkdtemp(join(tmpdir(), 'roamdesk-prefetch-home-'));
    slowHome = await mkdtemp(join(tmpdir(), 'roamdesk-prefetch-slow-'));
    umaHome = await mkdtemp(join(tmpdir(), 'roamdesk-prefetch-uma-'));
    await Promise.all([
      roamdesk(home, ['login', server.url, '--user', 'admin', '--password-stdin'], `${ADMIN}\n`).then(ok),
      roamdesk(slowHome, ['login', proxy.url, '--user', 'admin', '--password-stdin'], `${ADMIN}\n`).then(ok),
      roamdesk(umaHome, ['login', server.url, '--user', 'uma', '--password-stdin'], 'uma-password-1\n').then(ok),
    ]);
  });

  after(async () => {
    await proxy.close();
    await server.close();
    for (const d of [tmp, home, slowHome, umaHome]) if (d !== '') await rm(d, { recursive: true, force: true });
  });

  it('status before any prefetch: every object missing, in the documented JSON shape', async () => {
    const s = json<StatusJson>(ok(await roamdesk(home, ['status', 'work', '--json'])));
    assert.deepEqual(Object.keys(s).sort(), ['asOf', 'bytesLocal', 'bytesTotal', 'desktop', 'location', 'objects', 'source']);
    assert.equal(s.desktop, 'work');
    assert.equal(s.location, 'server');
    assert.equal(s.source, 'server');
    assert.deepEqual(s.objects.map((o) => [o.id, o.kind, o.size, o.local, o.localBytes, o.path]), chain.map((o) => [o.id, o.kind, o.size, 'missing', 0, undefined]));
    assert.equal(s.bytesTotal, chain[0]!.size + chain[1]!.size);
    assert.equal(s.bytesLocal, 0);
    const text = ok(await roamdesk(home, ['status', 'work']));
    assert.match(text.stdout, /^Desktop work \(lease: server\): 0 B of [\d.]+ MiB local \(0%\)\.$/m);
    assert.match(text.stdout, /^OBJECT\s+KIND\s+SIZE\s+LOCAL$/m);
    assert.match(text.stdout, new RegExp(`^${chain[0]!.id.slice(0, 12)}\\s+image\\s+\\S+ MiB\\s+missing$`, 'm'));
    assert.match(text.stdout, /Run `roamdesk prefetch work` to download the rest\./);
  });

  it('prefetch downloads the chain; status then says complete with equal sizes; the files equal the server\'s', async () => {
    const r = ok(await roamdesk(home, ['prefetch', 'work', '--json']));
    const p = json<PrefetchJson>(r);
    assert.equal(p.desktop, 'work');
    assert.equal(p.store, join(home, 'store'));
    assert.deepEqual(p.chain.objects, chain);
    assert.equal(p.chain.bytes, chain[0]!.size + chain[1]!.size);
    for (const k of ['direction', 'objects', 'bytesTotal', 'bytesTransferred', 'bytesOnWire', 'bytesSaved', 'piecesRetried', 'seconds', 'compression', 'compressionReason'] as const) {
      assert.ok(k in p.report, `report.${k}`);
    }
    assert.equal(p.report.direction, 'download');
    assert.equal(p.report.bytesTotal, p.chain.bytes);
    assert.equal(p.report.bytesTransferred, p.chain.bytes);
    assert.equal(p.report.bytesSaved, 0);
    assert.ok(p.report.bytesOnWire >= p.chain.bytes);
    assert.deepEqual(p.report.objects.map((o) => o.action), ['transferred', 'transferred']);
    assert.match(r.stderr, /Prefetching work: 2 objects, [\d.]+ MiB/);

    const s = json<StatusJson>(ok(await roamdesk(home, ['status', 'work', '--json'])));
    assert.deepEqual(s.objects.map((o) => o.local), ['complete', 'complete']);
    for (const [i, o] of s.objects.entries()) {
      assert.equal(o.localBytes, o.size);
      assert.equal(o.size, chain[i]!.size);
      assert.equal(o.path, join(home, 'store', 'objects', `${o.id}.qcow2`));
      assert.equal((await stat(o.path)).size, o.size);
    }
    assert.equal(s.bytesLocal, s.bytesTotal);
    // The local top layer (over the local image) shows the guest exactly what the server's chain shows.
    sh('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', s.objects[1]!.path!, serverObject(chain[1]!.id)]);
    assert.deepEqual(await readdir(join(home, 'store', 'incoming')), [], 'nothing left in incoming/');
    assert.match(ok(await roamdesk(home, ['status', 'work'])).stdout, /^Desktop work \(lease: server\): ([\d.]+ MiB) of \1 local \(100%\)\.$/m);
  });

  it('a second prefetch transfers nothing', async () => {
    const p = json<PrefetchJson>(ok(await roamdesk(home, ['prefetch', 'work', '--json'])));
    assert.equal(p.report.bytesTransferred, 0);
    assert.equal(p.report.bytesOnWire, 0);
    assert.equal(p.report.bytesSaved, p.chain.bytes);
    assert.deepEqual(p.report.objects.map((o) => o.action), ['present', 'present']);
    const text = ok(await roamdesk(home, ['prefetch', 'work']));
    assert.match(text.stdout, /^Prefetched work: 2 objects, [\d.]+ MiB, all local in /m);
    assert.match(text.stdout, /^ {2}transferred {2}0 B /m);
    assert.match(text.stdout, /^ {2}saved {8}([\d.]+ MiB) \(already local \1, resumed or seeded 0 B\)$/m);
    assert.match(text.stdout, /^ {2}compression {2}off: /m);
    assert.match(text.stdout, new RegExp(`^${chain[1]!.id.slice(0, 12)}\\s+layer\\s+\\S+ MiB\\s+already local$`, 'm'));
  });

  it('Ctrl-C part-way: exit 1 saying it resumes; status shows partial; the next prefetch resumes (bytes saved > 0)', async () => {
    const image = chain[0]!;
    const pieces = Math.ceil(image.size / (4 * MiB));
    proxy.bytesPerSec = 4 * MiB;
    const run = start(slowHome, ['prefetch', 'work']);
    try {
      const deadline = Date.now() + 60_000;
      while ((await journalEntries(slowHome, image.id)) < Math.ceil(pieces * 0.3)) {
        assert.ok(Date.now() < deadline, 'no progress within 60 s');
        assert.equal(run.child.exitCode, null, 'the prefetch ended before it could be interrupted');
        await new Promise((r) => setTimeout(r, 20));
      }
      run.child.kill('SIGINT');
    } finally {
      proxy.bytesPerSec = null;
    }
    const r = await run.done;
    assert.equal(r.code, 1, `exit ${r.code} ${r.signal}\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /prefetch of work interrupted: [\d.]+ MiB of [\d.]+ MiB local \[CLIENT_ERR_INTERRUPTED\]/);
    assert.match(r.stderr, /hint: run `roamdesk prefetch work` again to resume: verified pieces are kept/);
    assert.match(r.stderr, /^Prefetching work: 2 objects/m);

    const s = json<StatusJson>(ok(await roamdesk(slowHome, ['status', 'work', '--json'])));
    const [img, layer] = s.objects;
    assert.equal(img?.local, 'partial');
    assert.ok(img.localBytes >= image.size * 0.25 && img.localBytes < image.size, `partial ${img.localBytes} of ${image.size}`);
    assert.equal(img.path, undefined);
    assert.equal(layer?.local, 'missing');
    assert.equal(s.bytesLocal, img.localBytes);
    assert.match(ok(await roamdesk(slowHome, ['status', 'work'])).stdout, /partial: [\d.]+ MiB verified \(\d+%\)/);

    const p = json<PrefetchJson>(ok(await roamdesk(slowHome, ['prefetch', 'work', '--json'])));
    assert.ok(p.report.bytesSaved > 0);
    assert.ok(p.report.bytesSaved >= img.localBytes, `saved ${p.report.bytesSaved}, ${img.localBytes} were verified`);
    assert.equal(p.report.bytesTransferred, p.chain.bytes - p.report.bytesSaved, 'no verified piece was fetched again');
    assert.ok(p.report.objects[0]!.piecesResumed > 0);
    const after = json<StatusJson>(ok(await roamdesk(slowHome, ['status', 'work', '--json'])));
    assert.deepEqual(after.objects.map((o) => o.local), ['complete', 'complete']);
    sh('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', after.objects[1]!.path!, serverObject(chain[1]!.id)]);
  });

  it('a desktop the user may not see fails exactly like one that does not exist', async () => {
    for (const cmd of ['prefetch', 'status']) {
      const hidden = await roamdesk(umaHome, [cmd, 'work', '--json']);
      const missing = await roamdesk(umaHome, [cmd, 'nosuch', '--json']);
      assert.equal(hidden.code, 1);
      assert.equal(missing.code, 1);
      const h = json<{ error: { code: string; message: string; data: Record<string, unknown> } }>(hidden).error;
      const m = json<{ error: { code: string; message: string; data: Record<string, unknown> } }>(missing).error;
      assert.equal(h.code, 'NOT_FOUND');
      assert.deepEqual({ ...h, message: h.message.replace('"work"', '"X"'), data: { ...h.data, name: 'X' } }, { ...m, message: m.message.replace('"nosuch"', '"X"'), data: { ...m.data, name: 'X' } });
      const text = await roamdesk(umaHome, [cmd, 'work']);
      assert.match(text.stderr, /desktop "work" not found \[NOT_FOUND\]/);
      assert.match(text.stderr, /hint: run `roamdesk desktops` to list the desktops you can use/);
    }
    assert.deepEqual(await readdir(join(umaHome, 'store', 'objects')).catch(() => []), [], 'nothing was downloaded');
  });

  it('usage errors exit 2', async () => {
    const seed = await roamdesk(home, ['prefetch', 'work', '--seed', file('no-such-dir')]);
    assert.equal(seed.code, 2);
    assert.match(seed.stderr, /--seed .*no-such-dir: not a directory/);
    assert.equal((await roamdesk(home, ['prefetch', 'work', '--compression', 'max'])).code, 2);
  });

  it('a seed folder fills what it holds: nothing of it crosses the network', async () => {
    const seeded = await mkdtemp(join(tmpdir(), 'roamdesk-prefetch-seeded-'));
    try {
      ok(await roamdesk(seeded, ['login', server.url, '--user', 'admin', '--password-stdin'], `${ADMIN}\n`));
      const p = json<PrefetchJson>(ok(await roamdesk(seeded, ['prefetch', 'work', '--seed', join(home, 'store'), '--compression', 'off', '--json'])));
      assert.equal(p.report.bytesTransferred, 0);
      assert.equal(p.report.bytesSaved, p.chain.bytes);
      assert.deepEqual(p.report.objects.map((o) => o.piecesSeeded === o.piecesTotal), [true, true]);
      assert.equal(p.report.compressionReason, 'compression off by request');
    } finally {
      await rm(seeded, { recursive: true, force: true });
    }
  });

  it('server unreachable: status shows the last-known chain with a note; an unknown desktop fails with a hint', async () => {
    await proxy.close();
    const s = json<StatusJson>(ok(await roamdesk(slowHome, ['status', 'work', '--json'])));
    assert.equal(s.source, 'last-known');
    assert.equal(s.unreachable?.server, proxy.url);
    assert.deepEqual(s.objects.map((o) => [o.id, o.local]), chain.map((o) => [o.id, 'complete']));
    assert.equal(s.bytesLocal, s.bytesTotal);
    const text = ok(await roamdesk(slowHome, ['status', 'work']));
    assert.match(text.stdout, /^The server http:\/\/127\.0\.0\.1:\d+ cannot be reached: showing the chain recorded at \S+ \S+ UTC \(last prefetch or status\)\.$/m);
    const unknown = await roamdesk(slowHome, ['status', 'other']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /cannot reach the Roamdesk server .*; no earlier prefetch or status of other is recorded on this machine \[CLIENT_ERR_UNREACHABLE\]/);
    assert.match(unknown.stderr, /hint: check that the server is running/);
    const pf = await roamdesk(slowHome, ['prefetch', 'work']);
    assert.equal(pf.code, 1);
    assert.match(pf.stderr, /\[CLIENT_ERR_UNREACHABLE\]/);
  });
});
