/**
 * Scheduled replication (issue 5: "automatic replication every N minutes while online (policy)"), as a user meets
 * it: `roamdesk server --config` sets the policy, `roamdesk start` on the device launches the keeper beside the
 * local VM (the tiny real guest, streaming writes), the keeper replicates on schedule, keeps trying while the server
 * is down and replicates again once it is back, `status` names it, and it ends by itself when the VM stops.
 * Every process this test starts (server, QEMU, keeper) is stopped by pid in `after`.
 */
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import type { Lease } from '@roamdesk/api';
import { findGuest, guestAppend, type GuestBuild } from '@roamdesk/cli';
import { StateStore } from '@roamdesk/client';

import { cli, runCli } from '../support/cli.ts';
import { tempDir } from '../support/guest-vm.ts';
import { ADMIN, killOurs, spawnServer, until } from '../support/server.ts';

const EVERY_SECONDS = 4;

/** A process that has not exited (a zombie nobody reaped yet counts as exited). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

describe('scheduled replication: the keeper beside a running local VM', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let guest: GuestBuild;
  let server: Awaited<ReturnType<typeof spawnServer>> | undefined;
  let token = '';
  let keeper: number | undefined;
  const dataDir = (): string => join(tmp.dir, 'server');
  const home = (): string => join(tmp.dir, 'laptop');
  const env = { ROAMDESK_DISPLAY: 'none' };

  async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await fetch(`${server!.url}/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await r.text();
    assert.ok(r.ok, `${method} ${path}: ${String(r.status)} ${text}`);
    return JSON.parse(text) as T;
  }
  const lease = async (): Promise<Lease> => (await call<{ lease: Lease }>('GET', '/desktops/kept/lease')).lease;
  const keeperLog = async (runDir: string): Promise<string> => readFile(join(runDir, 'keeper.log'), 'utf8').catch(() => '');

  async function startServer(listen: string): Promise<void> {
    server = await spawnServer(['--config', join(tmp.dir, 'server.json'), '--data', dataDir(), '--listen', listen], { ROAMDESK_ADMIN_PASSWORD: ADMIN });
  }

  before(async () => {
    tmp = await tempDir('roamdesk-e2e-keeper-');
    guest = await findGuest();
    // The policy comes from the settings file, as an operator would set it.
    await writeFile(join(tmp.dir, 'server.json'), JSON.stringify({
      lease: { replicateEverySeconds: EVERY_SECONDS }, stopTimeoutMs: 30_000, passwordHash: { memoryKiB: 256, iterations: 1 }, logLevel: 'warn',
    }));
    await startServer('127.0.0.1:0');
    const login = await fetch(`${server!.url}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'admin', password: ADMIN }) });
    token = ((await login.json()) as { token: string }).token;
    await call('POST', '/images', { name: 'guest', path: guest.disk, format: 'qcow2' });
    await call('POST', '/desktops', {
      name: 'kept', image: 'guest', owner: 'admin', memoryMiB: 256, cpus: 1, kernel: guest.vmlinuz, initrd: guest.initrd,
      append: guestAppend(guest, 'stream', { genKib: 256, intervalMs: 300 }),
    });
    await new StateStore(home()).save({ version: 1, server: server!.url, session: { user: 'admin', role: 'admin', token, expiresAt: new Date(Date.now() + 3_600_000).toISOString() } });
  });

  after(async () => {
    if (keeper !== undefined && alive(keeper)) process.kill(keeper, 'SIGKILL');
    if (server !== undefined) await stopServer(server.child);
    await killOurs(home()).catch(() => undefined);
    await killOurs(dataDir()).catch(() => undefined);
    await tmp.remove();
  });

  it('replicates on schedule while online, retries while the server is down, shows in status, and ends with the VM', async () => {
    await cli(home(), ['device', 'register', '--name', 'laptop'], env);
    await cli(home(), ['checkout', 'kept'], env);
    const checkedOut = await lease();
    const started = await cli(home(), ['start', 'kept'], env);
    const k = started['keeper'] as { pid: number; log: string; replicateEverySeconds: number } | null;
    assert.ok(k !== null, `start launched a keeper: ${JSON.stringify(started)}`);
    keeper = k.pid;
    assert.equal(k.replicateEverySeconds, EVERY_SECONDS);
    const runDir = String(started['runDir']);
    // A wait that fails shows what the keeper said.
    const waitFor = async (what: string, fn: () => Promise<true | undefined>, ms: number): Promise<void> => {
      await until(what, fn, ms).catch(async (err: Error) => {
        throw new Error(`${err.message}; keeper log:\n${await keeperLog(runDir)}`);
      });
    };

    // Two scheduled replications of the running VM, without any command from the user.
    const tops = new Set<string>();
    await waitFor('two scheduled replications', async () => {
      const l = await lease();
      if (l.replicatedTopObjectId !== checkedOut.replicatedTopObjectId) tops.add(l.replicatedTopObjectId);
      return tops.size >= 2 ? true : undefined;
    }, 180_000);
    const l = await lease();
    assert.equal(l.generation, checkedOut.generation, 'replication leaves the lease where it is');
    assert.equal(l.state, 'checked-out');
    const top = join(dataDir(), 'store', 'objects', `${l.replicatedTopObjectId}.qcow2`);
    assert.equal(execFileSync('sha256sum', [top], { encoding: 'utf8' }).slice(0, 64), l.replicatedTopObjectId, 'the server holds exactly the sealed bytes');
    // The user's own replication goes through beside the keeper (it waits for a round in progress).
    const mine = await cli(home(), ['replicate', 'kept'], env);
    assert.equal((mine['layersSent'] as string[]).length >= 1, true);
    const st = await cli(home(), ['status', 'kept'], env);
    assert.deepEqual({ ...(st['scheduledReplication'] as Record<string, unknown>), dueAt: null }, { everySeconds: EVERY_SECONDS, dueAt: null, keeperPid: keeper });

    // The server goes away: the keeper keeps trying (and says why), the VM keeps running.
    const listen = new URL(server!.url).host;
    await stopServer(server!.child);
    await waitFor('a replication that could not be done', async () => (/replication not done now: .*CLIENT_ERR_UNREACHABLE/.test(await keeperLog(runDir)) ? true : undefined), 60_000);
    assert.ok(alive(keeper), 'the keeper goes on while the server is down');
    // Back on the same address: the next try replicates.
    await startServer(listen);
    const before = (await lease()).replicatedTopObjectId;
    await waitFor('a replication after the server came back', async () => ((await lease()).replicatedTopObjectId !== before ? true : undefined), 120_000);

    // The user stops the VM: the keeper ends by itself, and says why.
    const stopped = await cli(home(), ['stop', 'kept'], env);
    assert.equal(stopped['wasRunning'], true);
    await waitFor('the keeper to end', () => Promise.resolve(alive(keeper!) ? undefined : true), 30_000);
    const log = await keeperLog(runDir);
    assert.match(log, /keeping kept: replication every 4 s/);
    assert.match(log, /replicated kept \(generation \d+\): 1 layer\(s\)/);
    assert.match(log, /keeper stopped: vm-stopped/);
    const after = await cli(home(), ['status', 'kept'], env);
    assert.equal((after['scheduledReplication'] as { keeperPid: unknown }).keeperPid, null);

    // Nothing is left holding the desktop: check-in goes through and the lease comes home.
    const ci = await runCli(home(), ['checkin', 'kept'], { env });
    assert.equal(ci.code, 0, ci.stdout + ci.stderr);
    assert.equal((await lease()).state, 'server');
  });
});
