/**
 * Load (reliability.md T35): ten devices (ROAMDESK_LOAD_DEVICES) check out ten desktops at once, each writes to its
 * local disk, all check in at once; then ten other devices check the same desktops out at once. Every operation
 * completes, each lease moved exactly as often as asked, both sides hold the same disk, the guest data is what
 * each device wrote, and afterwards no descriptor is left open and memory did not grow with the bytes moved
 * (transfers stream).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import type { Lease } from '@roamdesk/api';
import { DeviceAgent } from '@roamdesk/client';
import type { ServerHandle } from '@roamdesk/server';

import { tempDir } from '../support/guest-vm.ts';
import { api, boot, login } from '../support/server.ts';

const MiB = 1024 * 1024;
/** ROAMDESK_LOAD_DEVICES runs it at another scale (reliability.md T35 asks for 10, 50 and 100). */
const DESKTOPS = Number(process.env['ROAMDESK_LOAD_DEVICES'] ?? 10);
/** Random guest data in the image: the ten first check-outs move ten copies of it. */
const IMAGE_DATA_MIB = 48;

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

describe(`load: ${DESKTOPS} devices check out, check in and check out again at once`, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let h: ServerHandle;
  let token = '';
  const data = (): string => join(tmp.dir, 'server');
  const names = Array.from({ length: DESKTOPS }, (_, i) => `desk-${i}`);
  const agent = (home: string): DeviceAgent => new DeviceAgent({ home: join(tmp.dir, home), session: { server: h.url, token }, callTimeoutMs: 120_000 });
  const lease = async (name: string): Promise<Lease> => (await api(h, 'GET', `/desktops/${name}/lease`, token)).json<{ lease: Lease }>().lease;

  before(async () => {
    tmp = await tempDir('roamdesk-e2e-load-');
    h = await boot(data());
    token = await login(h);
    const img = join(tmp.dir, 'img.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', img, '256M']);
    execFileSync('sh', ['-c', `head -c ${IMAGE_DATA_MIB * MiB} /dev/urandom > ${join(tmp.dir, 'rnd')}`]);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${join(tmp.dir, 'rnd')} 0 ${IMAGE_DATA_MIB}M`, img]);
    assert.equal((await api(h, 'POST', '/images', token, { name: 'img', path: img, format: 'qcow2' })).statusCode, 201);
    for (const name of names) {
      const r = await api(h, 'POST', '/desktops', token, { name, image: 'img', owner: 'admin', memoryMiB: 256, cpus: 1 });
      assert.equal(r.statusCode, 201, r.body);
    }
  });

  after(async () => {
    await h.close();
    await tmp.remove();
  });

  it('all complete, every lease moves once per operation, both sides hold the same disks, nothing is left open', async (t) => {
    const first = names.map((_, i) => agent(`laptop-${i}`));
    const second = names.map((_, i) => agent(`tablet-${i}`));
    for (const [i, a] of [...first, ...second].entries()) await a.register({ name: `device-${i}` });
    const generations = await Promise.all(names.map(async (n) => (await lease(n)).generation));
    const fdsBefore = await Promise.all((await readdir('/proc/self/fd')).map((f) => readlink(`/proc/self/fd/${f}`).catch(() => 'gone')));
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 50);
    try {
      // 1. Ten check-outs at once: each device downloads the image (48 MiB of data) and gets the lease.
      const out = await Promise.all(names.map((n, i) => first[i]!.checkout(n)));
      for (const [i, r] of out.entries()) assert.equal(r.generation, generations[i]! + 1, names[i]);
      // 2. Each device writes its own pattern into its local disk (the local VM would; qemu-io does it here).
      for (const [i, a] of first.entries()) {
        const rec = await a.records.require(names[i]!);
        sh('qemu-io', ['-f', 'qcow2', '-c', `write -P ${0x10 + i} ${((i % 50) + 1) * 4}M 4M`, rec.overlay!.path]);
      }
      // 3. Ten check-ins at once: each layer goes up, is checked and committed; the leases come back.
      const back = await Promise.all(names.map((n, i) => first[i]!.checkin(n)));
      for (const [i, r] of back.entries()) assert.equal(r.generation, generations[i]! + 2, names[i]);
      // 4. Ten other devices check them out at once: they fetch the image and the new layer.
      const again = await Promise.all(names.map((n, i) => second[i]!.checkout(n)));
      for (const [i, r] of again.entries()) {
        const n = names[i]!;
        assert.equal(r.generation, generations[i]! + 3, n);
        const l = await lease(n);
        assert.deepEqual([l.state, l.deviceName, l.generation], ['checked-out', `device-${DESKTOPS + i}`, generations[i]! + 3]);
        // The disk the second device got is the one the first wrote, and the server's copy is the same.
        const rec = await second[i]!.records.require(n);
        const top = (await second[i]!.store()).objectPath(rec.chain.at(-1)!.id);
        sh('qemu-io', ['-f', 'qcow2', '-r', '-c', `read -P ${0x10 + i} ${((i % 50) + 1) * 4}M 4M`, top]);
        const serverTop = join(data(), 'store', 'objects', `${rec.chain.at(-1)!.id}.qcow2`);
        assert.equal(spawnSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', top, serverTop]).status, 0, `${n}: device and server disks differ`);
      }
    } finally {
      clearInterval(sampler);
    }
    // Server and devices run in this process: the files they opened (objects, partial objects, journals) and their
    // pipes must be closed again. Idle hashing workers may keep a few descriptors (two are kept).
    const descriptors = async (): Promise<string[]> =>
      Promise.all((await readdir('/proc/self/fd')).map((f) => readlink(`/proc/self/fd/${f}`).catch(() => 'gone')));
    const notSockets = (l: string[]): number => l.filter((d) => !d.startsWith('socket:')).length;
    let now = await descriptors();
    for (let i = 0; i < 50 && notSockets(now) > notSockets(fdsBefore) + 8; i++) {
      await new Promise((r) => setTimeout(r, 100));
      now = await descriptors();
    }
    assert.ok(notSockets(now) <= notSockets(fdsBefore) + 8, `${notSockets(now) - notSockets(fdsBefore)} more files and pipes open than before:\n${now.join('\n')}`);
    // Sockets: what stays open are the devices' idle keep-alive connections to this server (the server keeps an idle
    // connection 72 s), both ends in this process, one pool per device. Anything else (a connection the peer closed
    // that we never did: CLOSE-WAIT) is a leak.
    const port = new URL(h.url).port;
    const ours = execFileSync('ss', ['-tnpa'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(`pid=${process.pid},`));
    const stray = ours.filter((l) => !(/^LISTEN\s/.test(l) || (/^ESTAB\s/.test(l) && l.includes(`127.0.0.1:${port} `))));
    assert.deepEqual(stray, [], 'every socket is the listener or an idle connection between a device and this server');
    const established = ours.filter((l) => /^ESTAB\s/.test(l)).length;
    assert.ok(established <= 2 * 2 * DESKTOPS, `${established} connection ends open`);
    // Every download of the 48 MiB image went through this process; buffering objects would need GiBs. What does
    // grow: the server's pool of 4 MiB piece buffers (at most 32 kept) and the buffers of the transfers in flight.
    const growth = (rssPeak - rssBefore) / MiB;
    t.diagnostic(`resident memory: ${(rssBefore / MiB).toFixed(0)} MiB before, peak ${(rssPeak / MiB).toFixed(0)} MiB; ${established} idle connection ends`);
    // It grows with the transfers in flight (each device's buffers), never with the bytes: measured +260 MiB at 10
    // devices, +438 at 50, +756 at 100 (server and devices in this one process), while 0.96, 4.8 and 9.6 GB moved.
    const bound = 256 + 8 * DESKTOPS;
    assert.ok(growth < bound, `resident memory grew by ${growth.toFixed(0)} MiB (bound ${bound}) while ${2 * DESKTOPS} devices moved ${2 * DESKTOPS * IMAGE_DATA_MIB} MiB`);
  });
});
