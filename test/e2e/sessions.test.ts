/**
 * Many desktops at once (reliability.md T36): sixteen real VMs on one server for two users, a console session (RFB
 * through the server's WebSocket proxy) open to each. Someone kills one QEMU: its session ends and its desktop says
 * it crashed; the other VMs, their sessions and the API go on as if nothing happened. And with them all running, no
 * VM is reachable from the network (T32).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { findGuest } from '@roamdesk/cli';
import type { ServerHandle } from '@roamdesk/server';
import WebSocket from 'ws';

import { tempDir } from '../support/guest-vm.ts';
import { api, boot, killOurs, login, ourQemus, pidOf, state, until } from '../support/server.ts';
import { socketsOf } from '../support/sockets.ts';

/** Two users with eight desktops each (the console limit is eight sessions per user): one session to each. */
const USERS = ['admin', 'bea'] as const;
const PER_USER = 8;
const DESKTOPS = USERS.length * PER_USER;
const BEA_PASSWORD = 'bea-password-sessions';

interface Session {
  ws: WebSocket;
  closed: Promise<number>;
  /** The next binary message. */
  next(): Promise<Buffer>;
}

async function openConsole(h: ServerHandle, token: string, name: string): Promise<Session> {
  const issued = await api(h, 'POST', `/desktops/${name}/console`, token);
  assert.equal(issued.statusCode, 200, issued.body);
  const origin = new URL(h.url).origin;
  const ws = new WebSocket(`${origin.replace(/^http/, 'ws')}/api/v1/console/ws?token=${issued.json<{ token: string }>().token}`, ['binary'], { origin });
  const queue: Buffer[] = [];
  const waiting: Array<(b: Buffer) => void> = [];
  ws.on('message', (m: Buffer) => {
    const w = waiting.shift();
    if (w !== undefined) w(m);
    else queue.push(m);
  });
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return { ws, closed, next: () => new Promise<Buffer>((resolve) => (queue.length > 0 ? resolve(queue.shift()!) : waiting.push(resolve))) };
}

describe(`many desktops at once: ${DESKTOPS} VMs, ${DESKTOPS} console sessions, one QEMU killed`, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let h: ServerHandle;
  let token = '';
  const tokens = new Map<string, string>();
  const data = (): string => join(tmp.dir, 'server');
  const names = Array.from({ length: DESKTOPS }, (_, i) => `vm-${i}`);
  const ownerOf = (i: number): string => USERS[Math.floor(i / PER_USER)]!;

  before(async () => {
    tmp = await tempDir('roamdesk-e2e-sessions-');
    h = await boot(data());
    token = await login(h);
    const guest = await findGuest();
    assert.equal((await api(h, 'POST', '/images', token, { name: 'guest', path: guest.disk, format: 'qcow2' })).statusCode, 201);
    assert.equal((await api(h, 'POST', '/users', token, { name: 'bea', password: BEA_PASSWORD })).statusCode, 201);
    const bea = await api(h, 'POST', '/auth/login', null, { user: 'bea', password: BEA_PASSWORD });
    tokens.set('admin', token).set('bea', bea.json<{ token: string }>().token);
    // No kernel: the firmware finds nothing to boot and waits, so many VMs cost little CPU under TCG.
    for (const [i, name] of names.entries()) {
      assert.equal((await api(h, 'POST', '/desktops', token, { name, image: 'guest', owner: ownerOf(i), memoryMiB: 128, cpus: 1 })).statusCode, 201);
    }
  });

  after(async () => {
    await h.close();
    await killOurs(data());
    await tmp.remove();
  });

  it('killing one QEMU ends its session and marks its desktop; the other VMs, sessions and the API go on', async () => {
    for (const name of names) assert.equal((await api(h, 'POST', `/desktops/${name}/start`, token)).statusCode, 200, name);
    assert.equal((await ourQemus(data())).length, DESKTOPS);
    const sessions: Session[] = [];
    try {
      for (const [i, name] of names.entries()) {
        const s = await openConsole(h, tokens.get(ownerOf(i))!, name);
        sessions.push(s);
        assert.equal((await s.next()).toString(), 'RFB 003.008\n', `${name}: QEMU's VNC greets through the proxy`);
      }
      // Nothing of any VM is reachable from the network (reliability.md T32): no QEMU holds an inet socket at all, and
      // each listens only on UNIX sockets in its own private run directory (0700) that only their owner may write.
      // The scan sees inet sockets where there are some: this process's server listens on one.
      assert.ok((await socketsOf(process.pid)).inet.some((x) => x.state === '0A'), 'the scan finds a listening inet socket');
      const qemus = await ourQemus(data());
      assert.equal(qemus.length, DESKTOPS);
      for (const pid of qemus) {
        const { inet, unix } = await socketsOf(pid);
        assert.deepEqual(inet, [], `QEMU ${pid} holds inet sockets`);
        const listening = unix.filter((u) => u.listening);
        assert.ok(listening.length >= 2, `QEMU ${pid} listens on its QMP and VNC sockets: ${JSON.stringify(unix)}`);
        for (const u of listening) {
          assert.ok(u.path.startsWith(join(data(), 'vms') + '/'), `QEMU ${pid} listens on ${u.path}`);
          // Connecting to a UNIX socket takes write permission on it: nobody but its owner has that.
          assert.equal((await stat(u.path)).mode & 0o022, 0, u.path);
          assert.equal((await stat(dirname(u.path))).mode & 0o777, 0o700, dirname(u.path));
        }
      }
      // Someone else kills one VM's QEMU (not a stop through the API).
      const victim = names[3]!;
      const victimId = (await api(h, 'GET', `/desktops/${victim}`, token)).json<{ desktop: { id: string } }>().desktop.id;
      process.kill(await pidOf(data(), victimId), 'SIGKILL');
      assert.equal(typeof (await sessions[3]!.closed), 'number', 'its console session ends');
      const after = await until(`${victim} to leave running`, async () => {
        const s = await state(h, token, victim);
        return s === 'running' ? undefined : s;
      }, 30_000);
      assert.equal(after, 'error', 'a QEMU that died without a stop request is a crash');
      // The other sessions carry on with the RFB handshake (RFC 6143 §7.1.2: the client's version, then the
      // server's security types), and their desktops still run.
      for (const [i, s] of sessions.entries()) {
        if (i === 3) continue;
        s.ws.send(Buffer.from('RFB 003.008\n'));
        const types = await s.next();
        assert.ok(types.length >= 2 && types[0]! >= 1, `${names[i]}: security types ${types.toString('hex')}`);
        assert.equal(await state(h, token, names[i]!), 'running', names[i]);
      }
      assert.equal((await ourQemus(data())).length, DESKTOPS - 1);
      const listed = (await api(h, 'GET', '/desktops', token)).json<{ desktops: Array<{ name: string; state: string }> }>().desktops;
      assert.deepEqual(listed.filter((d) => d.state === 'running').map((d) => d.name).sort(), names.filter((n) => n !== victim).sort());
      // The crashed desktop starts again.
      assert.equal((await api(h, 'POST', `/desktops/${victim}/start`, token)).statusCode, 200);
      assert.equal(await state(h, token, victim), 'running');
    } finally {
      for (const s of sessions) s.ws.terminate();
      for (const name of names) await api(h, 'POST', `/desktops/${name}/stop?force=true`, token);
    }
    assert.deepEqual(await ourQemus(data()), []);
  });
});
