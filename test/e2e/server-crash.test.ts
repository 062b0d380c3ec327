/**
 * The server process killed (SIGKILL) in the middle of a check-out, of a check-in's upload and at its commit, then
 * started again on the same data directory (reliability.md T2, T4, T11): the desktop is in the old state or the
 * new one, never a mix; the device's re-run completes, the lease moved exactly once, both sides hold the same
 * chain, and what was verified before the crash is not sent again.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import type { Lease } from '@roamdesk/api';
import { DeviceAgent, type AgentProgress } from '@roamdesk/client';

import { tempDir } from '../support/guest-vm.ts';
import { spawnServer } from '../support/server.ts';
import { throttle } from '../support/throttle.ts';

const MiB = 1024 * 1024;
const ADMIN = 'admin-password-crash';

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

function identical(a: string, b: string): boolean {
  return spawnSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', a, b]).status === 0;
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** `roamdesk server` as its own process (so it can really be killed), listening on `port`. */
async function startServer(dataDir: string, port: number): Promise<ChildProcess> {
  return (await spawnServer(['--data', dataDir, '--listen', `127.0.0.1:${port}`, '--log-level', 'warn'], { ROAMDESK_ADMIN_PASSWORD: ADMIN })).child;
}

async function crash(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }
}

describe('the server killed mid check-out and mid check-in, then restarted on the same data directory', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let port = 0;
  let server: ChildProcess;
  let token = '';
  /** The device's way to the server, slow enough to act in the middle of a transfer; it outlives server restarts. */
  let link: Awaited<ReturnType<typeof throttle>>;
  const data = (): string => join(tmp.dir, 'server');
  const serverObject = (id: string): string => join(data(), 'store', 'objects', `${id}.qcow2`);
  const base = (): string => `http://127.0.0.1:${port}/api/v1`;

  async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await fetch(`${base()}${path}`, {
      method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await r.text();
    assert.ok(r.ok, `${method} ${path}: ${r.status} ${text}`);
    return JSON.parse(text) as T;
  }
  const lease = async (): Promise<Lease> => (await call<{ lease: Lease }>('GET', '/desktops/crash/lease')).lease;
  const serverTop = async (): Promise<string> => (await call<{ objects: Array<{ id: string }> }>('GET', '/desktops/crash/objects')).objects.at(-1)!.id;

  before(async () => {
    tmp = await tempDir('roamdesk-e2e-crash-');
    port = await freePort();
    server = await startServer(data(), port);
    const r = await fetch(`${base()}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'admin', password: ADMIN }) });
    token = ((await r.json()) as { token: string }).token;
    // 64 MiB of random guest data: enough to be in the middle of it when the server dies.
    const img = join(tmp.dir, 'img.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', img, '256M']);
    execFileSync('sh', ['-c', `head -c ${64 * MiB} /dev/urandom > ${join(tmp.dir, 'rnd')}`]);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${join(tmp.dir, 'rnd')} 0 64M`, img]);
    await call('POST', '/images', { name: 'img', path: img, format: 'qcow2' });
    await call('POST', '/desktops', { name: 'crash', image: 'img', owner: 'admin', memoryMiB: 256, cpus: 1 });
    link = await throttle(`http://127.0.0.1:${port}`, 16 * MiB);
  });

  after(async () => {
    await link.close();
    await crash(server);
    await tmp.remove();
  });

  it('check-out: the download dies with the server; after the restart the same check-out resumes, the lease moved once', async () => {
    const agent = new DeviceAgent({ home: join(tmp.dir, 'device'), session: { server: link.url, token }, callTimeoutMs: 60_000 });
    await agent.register({ name: 'laptop' });
    const before = await lease();
    const killed: Array<Promise<void>> = [];
    const onProgress = (p: AgentProgress): void => {
      if (killed.length === 0 && p.step === 'download' && (p.transfer?.bytesDone ?? 0) >= 16 * MiB) killed.push(crash(server));
    };
    // With the server gone, the transfer's retries run out and the check-out fails: the device keeps its record.
    await assert.rejects(agent.checkout('crash', { onProgress }));
    assert.equal(killed.length, 1, 'the server was killed during the download');
    await Promise.all(killed);
    assert.equal((await agent.records.require('crash')).state, 'checking-out');

    server = await startServer(data(), port);
    const mid = await lease();
    assert.deepEqual([mid.state, mid.generation], ['checking-out', before.generation + 1], 'the claim survived the crash');
    const r = await agent.checkout('crash');
    assert.equal(r.already, false);
    const image = r.download?.objects.find((o) => o.kind === 'image');
    assert.ok(image !== undefined && image.piecesResumed > 0, `verified pieces are kept: ${JSON.stringify(image)}`);
    assert.equal(image.piecesResumed + image.piecesSent, image.piecesTotal);
    const after = await lease();
    assert.deepEqual([after.state, after.generation], ['checked-out', before.generation + 1], 'one lease move, not two');
    const top = await serverTop();
    assert.ok(identical(serverObject(top), (await agent.store()).objectPath(top)));
  });

  it('check-in: the upload dies with the server; after the restart the re-run sends only what the server had not verified, and commits once', async () => {
    const agent = new DeviceAgent({ home: join(tmp.dir, 'device'), session: { server: link.url, token }, callTimeoutMs: 60_000 });
    const rec = await agent.records.require('crash');
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${join(tmp.dir, 'rnd')} 100M 48M`, rec.overlay!.path]);
    // What the guest sees on the device now: the server must end up showing exactly this.
    const expected = join(tmp.dir, 'expected.qcow2');
    sh('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', rec.overlay!.path, expected]);
    const before = await lease();
    const topBefore = await serverTop();
    const killed: Array<Promise<void>> = [];
    const onProgress = (p: AgentProgress): void => {
      if (killed.length === 0 && p.step === 'upload' && (p.transfer?.bytesDone ?? 0) >= 16 * MiB) killed.push(crash(server));
    };
    const failed = await agent.checkin('crash', { onProgress }).then(() => null, (e: unknown) => e);
    assert.ok(failed instanceof Error, 'the check-in failed with its server');
    assert.equal(killed.length, 1, `the server was killed during the upload (${String(failed)})`);
    await Promise.all(killed);

    server = await startServer(data(), port);
    const mid = await lease();
    assert.deepEqual([mid.state, mid.generation], ['checked-out', before.generation], 'nothing was committed');
    assert.equal(await serverTop(), topBefore);
    const r = await agent.checkin('crash');
    const layer = r.upload?.objects.find((o) => o.kind === 'layer' && o.action === 'transferred');
    assert.ok(layer !== undefined && layer.piecesResumed > 0, `the server kept what it verified before it died: ${JSON.stringify(r.upload?.objects)}`);
    assert.equal(layer.piecesResumed + layer.piecesSent, layer.piecesTotal);
    const after = await lease();
    assert.deepEqual([after.state, after.generation], ['server', before.generation + 1], 'one lease move, not two');
    assert.equal(await serverTop(), r.top);
    assert.ok(identical(serverObject(r.top), expected), 'the server shows the guest what the device showed it');
  });

  it('check-in: the server killed just as the commit goes out; after the restart the desktop is in the old state or the new one, never a mix, and the re-run ends in the new one, the lease moved once', async (t) => {
    const agent = new DeviceAgent({ home: join(tmp.dir, 'device'), session: { server: link.url, token }, callTimeoutMs: 60_000 });
    await agent.checkout('crash');
    const rec = await agent.records.require('crash');
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x4c 200M 8M', rec.overlay!.path]);
    const expected = join(tmp.dir, 'expected-commit.qcow2');
    sh('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', rec.overlay!.path, expected]);
    const before = await lease();
    const topBefore = await serverTop();
    const killed: Array<Promise<void>> = [];
    // A few milliseconds after the device sends its commit: the kill lands before, inside or after the server's
    // checks and transaction, depending on the machine; each outcome must be a whole state.
    const onProgress = (p: AgentProgress): void => {
      if (killed.length === 0 && p.step === 'commit') killed.push(new Promise((r) => setTimeout(r, 15)).then(() => crash(server)));
    };
    const first = await agent.checkin('crash', { onProgress }).then((r) => r, () => null);
    assert.equal(killed.length, 1, 'the server was killed at the commit');
    await Promise.all(killed);

    server = await startServer(data(), port);
    const mid = await lease();
    const midTop = await serverTop();
    t.diagnostic(`after the restart: ${mid.state === 'server' ? `committed before the kill, ${first !== null ? 'answered' : 'the answer lost'}` : 'not committed'}`);
    if (mid.state === 'server') {
      assert.equal(mid.generation, before.generation + 1, 'committed: the lease moved once');
      assert.ok(identical(serverObject(midTop), expected), 'committed: the whole new state');
    } else {
      assert.deepEqual([mid.state, mid.generation, midTop], ['checked-out', before.generation, topBefore], 'not committed: the whole old state');
    }
    // (d) whatever the crash left under a final name is a whole object: its SHA-256 is its id.
    const objects = spawnSync('sh', ['-c', `cd ${join(data(), 'store', 'objects')} && sha256sum [0-9a-f]*.qcow2`], { encoding: 'utf8' }).stdout.trim().split('\n');
    for (const line of objects) {
      const [hash, file] = line.split(/\s+/);
      assert.equal(`${hash ?? ''}.qcow2`, file, `a stored object whose bytes are not its id: ${line}`);
    }
    // The device runs it again unless it got the answer (a commit whose answer was lost is answered again as the
    // first time): either way the new state, and the lease moved once.
    const r = first ?? (await agent.checkin('crash'));
    assert.equal(await agent.local('crash'), null);
    const after = await lease();
    assert.deepEqual([after.state, after.generation], ['server', before.generation + 1], 'one lease move, not two');
    assert.equal(await serverTop(), r.top);
    assert.ok(identical(serverObject(r.top), expected));
  });
});
