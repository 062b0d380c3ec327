/**
 * QmpClient against a real QEMU (`-machine none -S` starts in about 100 ms and needs no guest).
 * Skipped, with a message, only when qemu-system-x86_64 is not installed.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { QmpClient, QmpExecuteError, type QmpEvent } from '../src/index.ts';

const QEMU = 'qemu-system-x86_64';
const haveQemu = spawnSync(QEMU, ['--version'], { stdio: 'ignore' }).status === 0;
const skip = haveQemu ? false : `${QEMU} not found: install the Debian package qemu-system-x86 to run these tests`;

async function withQemu(fn: (client: QmpClient, qemu: ChildProcess) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'qmp-real-'));
  const sock = join(dir, 'qmp.sock');
  const qemu = spawn(QEMU, ['-machine', 'none', '-nodefaults', '-display', 'none', '-S', '-qmp', `unix:${sock},server=on,wait=off`], {
    stdio: 'ignore',
  });
  const exited = new Promise<void>((resolve) => qemu.once('exit', () => resolve()));
  try {
    const client = await QmpClient.connect(sock, { timeoutMs: 10_000 });
    try {
      await fn(client, qemu);
    } finally {
      await client.close();
    }
  } finally {
    if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
    await exited;
    await rm(dir, { recursive: true, force: true });
  }
}

describe('QmpClient with real QEMU', { skip }, () => {
  it('negotiates and answers query-status / query-version', async () => {
    await withQemu(async (client) => {
      assert.equal(client.greeting.version.qemu.major >= 7, true);
      assert.deepEqual(await client.execute('query-status'), { status: 'prelaunch', running: false, singlestep: false });
      const version = await client.execute('query-version');
      assert.deepEqual(version.qemu, client.greeting.version.qemu);
    });
  });

  it('reports cont/stop as RESUME/STOP events and keeps id order under pipelining', async () => {
    await withQemu(async (client) => {
      const events: QmpEvent[] = [];
      const iterator = client.events();
      const resumed = client.waitForEvent('RESUME', { timeoutMs: 5000 });
      await client.execute('cont');
      await resumed;
      const stopped = client.waitForEvent('STOP', { timeoutMs: 5000 });
      const [, status] = await Promise.all([client.execute('stop'), client.execute('query-status')]);
      assert.equal(status.status, 'paused');
      await stopped;
      for await (const e of iterator) {
        events.push(e);
        if (events.length === 2) break;
      }
      assert.deepEqual(
        events.map((e) => e.event),
        ['RESUME', 'STOP'],
      );
      await assert.rejects(client.executeUntyped('no-such-command'), (err: unknown) => err instanceof QmpExecuteError && err.errorClass === 'CommandNotFound');
      assert.match(await client.execute('human-monitor-command', { 'command-line': 'info status' }), /VM status: paused/);
    });
  });

  it('quit → SHUTDOWN, then closed resolves and QEMU exits', async () => {
    await withQemu(async (client, qemu) => {
      const exit = new Promise<number | null>((resolve) => qemu.once('exit', (code) => resolve(code)));
      const shutdown = client.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
      await client.execute('quit');
      assert.equal((await shutdown).data.reason, 'host-qmp-quit');
      await client.closed;
      assert.ok(client.isClosed);
      assert.equal(await exit, 0);
      await assert.rejects(client.execute('query-status'), { code: 'QMP_ERR_DISCONNECTED' });
    });
  });
});
