/**
 * The server's disk fills up under a running desktop (a real tmpfs as its data directory, in a mount namespace of
 * the server's own: `unshare -rm`). The desktop's VM pauses instead of failing the guest's writes; the API shows
 * why; a graceful stop and a resume without room are refused; once there is room again the server resumes the VM
 * by itself, and the next boot verifies every generation the guest wrote. (The device side is in checkout.test.ts.)
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import type { Desktop, Event, Lease } from '@roamdesk/api';
import { findGuest, guestAppend, parseGuestSerial } from '@roamdesk/cli';
import { type AgentProgress, DeviceAgent } from '@roamdesk/client';

import { inNamespaceOf } from '../support/cli.ts';
import { tempDir } from '../support/guest-vm.ts';
import { killOurs, spawnServer, until } from '../support/server.ts';
import { throttle } from '../support/throttle.ts';

const MiB = 1024 * 1024;
const ADMIN = 'admin-password-disk-full';

describe("the server's disk fills up (a real tmpfs)", () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let server: { child: ChildProcess; url: string; log: () => string } | undefined;
  let token = '';
  const data = (): string => join(tmp.dir, 'server');

  async function call(method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
    const r = await fetch(`${server!.url}/api/v1${path}`, {
      method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: r.status, json: (await r.json()) as Record<string, unknown> };
  }
  const ok = async (method: string, path: string, body?: unknown): Promise<Record<string, unknown>> => {
    const r = await call(method, path, body);
    assert.ok(r.status < 300, `${method} ${path}: ${r.status} ${JSON.stringify(r.json)}`);
    return r.json;
  };
  const desktop = async (): Promise<Desktop> => (await ok('GET', '/desktops/full')).desktop as Desktop;
  /** A command inside the server's mount namespace (where the tmpfs is). */
  const inNs = (args: string[]): string => {
    const [cmd, ...prefix] = inNamespaceOf(server!.child.pid);
    const r = spawnSync(cmd!, [...prefix, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const serial = async (): Promise<string> => {
    const r = await fetch(`${server!.url}/api/v1/desktops/full/log?tail=1000000`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(r.status, 200);
    return r.text();
  };
  const writes = async (): Promise<number> => parseGuestSerial(await serial()).filter((e) => e.step === 'write').length;

  before(async () => {
    tmp = await tempDir('roamdesk-e2e-disk-full-');
    await mkdir(data(), { recursive: true });
    server = await spawnServer(['--data', data(), '--listen', '127.0.0.1:0', '--log-level', 'info'], { ROAMDESK_ADMIN_PASSWORD: ADMIN }, {
      via: ['unshare', '-rm', 'sh', '-c', 'mount -t tmpfs -o size=512m tmpfs "$1" && shift && exec "$@"', 'sh', data()],
    });
    const r = await fetch(`${server.url}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'admin', password: ADMIN }) });
    token = ((await r.json()) as { token: string }).token;
    const guest = await findGuest();
    await ok('POST', '/images', { name: 'guest', path: guest.disk, format: 'qcow2' });
    await ok('POST', '/desktops', {
      name: 'full', image: 'guest', owner: 'admin', memoryMiB: 256, cpus: 1, kernel: guest.vmlinuz, initrd: guest.initrd,
      append: guestAppend(guest, 'stream', { genKib: 1024, intervalMs: 100 }),
    });
  });

  after(async () => {
    if (server !== undefined && server.child.exitCode === null && server.child.signalCode === null) {
      const exited = once(server.child, 'exit');
      server.child.kill('SIGTERM');
      await exited;
    }
    // The server leaves VMs running by design: ours are killed by pid.
    await killOurs(data());
    await tmp.remove();
  });

  it('the VM pauses, the API says why, stop and a resume without room are refused, room resumes it by itself, and no write is lost', async () => {
    await ok('POST', '/desktops/full/start');
    await until('the first generation', async () => ((await writes()) >= 1 ? true : undefined), 120_000);
    // Leave 3 MiB on the server's disk: the guest's 1 MiB generations fill it within a few writes.
    const used = Number(inNs(['df', '-B1', '--output=used', data()]).split('\n')[1]);
    inNs(['mount', '-o', `remount,size=${used + 3 * MiB}`, data()]);
    const paused = await until('the VM to pause on the full disk', async () => {
      const d = await desktop();
      return d.paused !== undefined ? d : undefined;
    }, 120_000);
    assert.equal(paused.state, 'running');
    assert.equal(paused.paused?.reason, 'no-space');
    const before = await writes();
    // A graceful stop cannot reach the paused guest and would lose its pending writes: refused, nothing changes.
    const stop = await call('POST', '/desktops/full/stop');
    assert.equal(stop.status, 409);
    const stopErr = stop.json['error'] as { code: string; data: { hint: string } };
    assert.equal(stopErr.code, 'DESKTOP_PAUSED');
    assert.match(stopErr.data.hint, /free space on the server: the desktop resumes by itself/);
    // Resuming while the disk is still full is refused too, and the VM stays paused.
    const start = await call('POST', '/desktops/full/start');
    assert.equal(start.status, 507, JSON.stringify(start.json));
    assert.equal((start.json['error'] as { code: string }).code, 'NO_SPACE');
    assert.equal((await desktop()).paused?.reason, 'no-space');
    assert.equal(await writes(), before);
    // Room again: the server resumes the VM by itself, and the guest writes on.
    inNs(['mount', '-o', 'remount,size=512m', data()]);
    await until('the server to resume the VM', async () => ((await desktop()).paused === undefined ? true : undefined), 60_000);
    await until('two more generations after the resume', async () => ((await writes()) >= before + 2 ? true : undefined), 120_000);
    // The operator's log says both. The event log's database is on the same disk: the events it could not write
    // while the disk was full were kept, and written once there was room, in order.
    assert.match(server!.log(), /desktop VM paused: the server's disk is full/);
    assert.match(server!.log(), /could not write event; kept to be written with the next one/);
    assert.match(server!.log(), /desktop VM resumed by the server/);
    const events = ((await ok('GET', '/events?desktop=full'))['events'] as Event[]).reverse();
    const actions = events.map((e) => `${e.action}:${e.result}`);
    const at = (a: string): number => actions.indexOf(a);
    assert.ok(at('desktop.pause:ok') >= 0 && at('desktop.pause:ok') < at('desktop.stop:error') && at('desktop.stop:error') < at('desktop.start:error')
      && at('desktop.start:error') < at('desktop.resume:ok'), actions.join(' '));
    assert.equal(events.find((e) => e.action === 'desktop.pause')?.detail['reason'], 'no-space');
    assert.equal(events.find((e) => e.action === 'desktop.resume')?.detail['auto'], true);
    // A graceful stop now works; the next boot verifies every generation written across the pause.
    assert.equal(((await ok('POST', '/desktops/full/stop'))['desktop'] as Desktop).state, 'stopped');
    const written = await writes();
    await ok('POST', '/desktops/full/start');
    const verified = await until('the next boot to verify', async () => {
      const v = parseGuestSerial(await serial()).find((e) => e.step === 'verified');
      return v?.step === 'verified' ? v : undefined;
    }, 120_000);
    assert.deepEqual([verified.count, verified.ok], [written, true]);
    await ok('POST', '/desktops/full/stop?force=true');
  });

  /**
   * A desktop checked out to a device of its own (its calls through a 4 MB/s link, so a test can act in the middle of
   * its upload), with `mib` MiB of local work that does not compress.
   */
  async function awayWithWork(name: string, mib: number) {
    await ok('POST', '/desktops', { name, image: 'guest', owner: 'admin', memoryMiB: 256, cpus: 1 });
    const link = await throttle(server!.url, 4 * MiB);
    const agent = new DeviceAgent({ home: join(tmp.dir, `device-${name}`), session: { server: link.url, token }, callTimeoutMs: 120_000 });
    await agent.register({ name: `${name}-laptop` });
    await agent.checkout(name);
    const rec = await agent.records.require(name);
    const random = join(tmp.dir, `random-${name}`);
    await writeFile(random, randomBytes(mib * MiB));
    const io = spawnSync('qemu-io', ['-f', 'qcow2', '-c', `write -s ${random} 1M ${mib}M`, rec.overlay!.path], { encoding: 'utf8' });
    assert.equal(io.status, 0, io.stderr);
    const lease = async (): Promise<Lease> => (await ok('GET', `/desktops/${name}/lease`)).lease as Lease;
    const objects = async (): Promise<string[]> => ((await ok('GET', `/desktops/${name}/objects`)).objects as Array<{ id: string }>).map((o) => o.id);
    return { agent, link, lease, objects };
  }

  /** Leaves about `free` bytes free on the server's tmpfs (it may be written meanwhile: measured again until a remount fits). */
  function shrink(free: number): void {
    for (let i = 0; ; i++) {
      const used = Number(inNs(['df', '-B1', '--output=used', data()]).split('\n')[1]);
      const [cmd, ...prefix] = inNamespaceOf(server!.child.pid);
      if (spawnSync(cmd!, [...prefix, 'mount', '-o', `remount,size=${used + free}`, data()]).status === 0) return;
      assert.ok(i < 20, 'the tmpfs could be shrunk');
    }
  }
  const roomAgain = (): void => void inNs(['mount', '-o', 'remount,size=512m', data()]);

  it("a check-in whose upload fills the server's disk fails with what to do, and changes nothing: lease, desktop, store; with room the re-run completes without sending the kept pieces again", async (t) => {
    const { agent, link, lease, objects } = await awayWithWork('away', 24);
    try {
      const before = { lease: await lease(), objects: await objects() };
      assert.equal(before.lease.state, 'checked-out');

      const checkin = agent.checkin('away');
      const up0 = link.bytes().up;
      await until('8 MiB of the upload on the server', () => Promise.resolve(link.bytes().up - up0 > 8 * MiB ? true : undefined), 60_000);
      shrink(MiB);
      const err = await checkin.then(() => null, (e: unknown) => e as { code?: string; message?: string; data?: Record<string, string | undefined> });
      roomAgain();
      assert.ok(err !== null, 'the check-in failed');
      assert.equal(err.data?.['code'] ?? err.code, 'XFER_ERR_NO_SPACE', `${err.code}: ${err.message} ${JSON.stringify(err.data)}`);
      assert.match(String(err.data?.['hint'] ?? ''), /administrator/, JSON.stringify(err.data));
      // Nothing changed where it counts: the lease is the device's at the same generation, the desktop's chain is
      // the same, no layer of the device's was published, and the device still holds its work.
      const after1 = { lease: await lease(), objects: await objects() };
      assert.deepEqual([after1.lease.state, after1.lease.deviceName, after1.lease.generation], ['checked-out', 'away-laptop', before.lease.generation]);
      assert.deepEqual(after1.objects, before.objects);
      const local = await agent.records.require('away');
      const sealed = local.chain.at(-1)!;
      assert.ok(!before.objects.includes(sealed.id), 'the device sealed its work into a layer');
      assert.equal((await call('GET', `/objects/${sealed.id}`)).status, 404, 'the layer is not on the server');
      // The device keeps the desktop with its work sealed, the check-in to finish (a `start` meanwhile goes on
      // working on a fresh overlay over it).
      assert.equal(local.state, 'checking-in');

      // Room again: the same command completes; what the server verified before the disk filled is not sent again.
      const up1 = link.bytes().up;
      const done = await agent.checkin('away');
      const resent = link.bytes().up - up1;
      t.diagnostic(`layer ${sealed.size} bytes; ${up1 - up0} bytes up before the disk filled; the re-run sent ${resent}`);
      assert.equal(done.top, sealed.id);
      assert.ok(resent < sealed.size - 4 * MiB, `the re-run sent ${resent} bytes for a ${sealed.size}-byte layer`);
      const l = await lease();
      assert.deepEqual([l.state, l.generation], ['server', before.lease.generation + 1]);
      assert.deepEqual(await objects(), [...before.objects, sealed.id]);
      assert.equal(inNs(['sha256sum', join(data(), 'store', 'objects', `${sealed.id}.qcow2`)]).slice(0, 64), sealed.id, 'the server holds exactly the sealed bytes');
    } finally {
      await link.close();
    }
  });

  it("the server's disk full as a check-in's layer is published, then as the check-in commits: each refused with what to do and nothing half done; with room it completes", async () => {
    const { agent, link, lease, objects } = await awayWithWork('later', 8);
    type Failure = { code?: string; status?: number; message?: string; data?: Record<string, string | number | undefined> };
    try {
      const before = { lease: await lease(), objects: await objects() };
      /** A check-in during which the server's disk is filled (no byte left) the first time `when` holds. */
      const attempt = async (when: (p: AgentProgress) => boolean): Promise<Failure | null> => {
        let filled = false;
        const onProgress = (p: AgentProgress): void => {
          if (filled || !when(p)) return;
          filled = true;
          shrink(0);
        };
        const r = await agent.checkin('later', { onProgress }).then(() => null, (e: unknown) => e as Failure);
        roomAgain();
        assert.ok(filled, 'the disk was filled at that point');
        return r;
      };
      const unchanged = async (what: string): Promise<void> => {
        const l = await lease();
        assert.deepEqual([l.state, l.deviceName, l.generation], ['checked-out', 'later-laptop', before.lease.generation], `${what}: the lease`);
        assert.deepEqual(await objects(), before.objects, `${what}: the desktop's chain`);
      };

      // 1. Every piece arrived; the server re-hashes the layer, checks it and writes its record into the store.
      const e1 = await attempt((p) => p.step === 'upload' && p.transfer?.phase === 'verifying');
      assert.ok(e1 !== null, 'the check-in failed at the publish');
      // Not "internal error": the server's disk is full, and what to do.
      assert.deepEqual([e1.code, e1.data?.['status'], e1.data?.['code']], ['XFER_ERR_REMOTE', 507, 'NO_SPACE'], JSON.stringify(e1));
      assert.match(String(e1.data?.['hint']), /ask its administrator/);
      await unchanged('after a full disk at the publish');
      const sealed = (await agent.records.require('later')).chain.at(-1)!;
      assert.equal((await call('GET', `/objects/${sealed.id}`)).status, 404, 'the layer was not published');

      // 2. The layer is on the server; the check-in's transaction (the database, on the same disk) finds no room.
      const e2 = await attempt((p) => p.step === 'commit');
      assert.ok(e2 !== null, 'the check-in failed at the commit');
      assert.deepEqual([e2.code, e2.status], ['NO_SPACE', 507], JSON.stringify(e2));
      assert.match(String(e2.data?.['hint']), /administrator to free space/);
      await unchanged('after a full disk at the commit');

      // 3. Room again: it completes, once.
      const done = await agent.checkin('later');
      assert.equal(done.top, sealed.id);
      const l = await lease();
      assert.deepEqual([l.state, l.generation], ['server', before.lease.generation + 1]);
      assert.deepEqual(await objects(), [...before.objects, sealed.id]);
      assert.equal(inNs(['sha256sum', join(data(), 'store', 'objects', `${sealed.id}.qcow2`)]).slice(0, 64), sealed.id);
    } finally {
      await link.close();
    }
  });
});
