/** QmpClient.connect over a real UNIX socket served by the fake server. */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { QmpClient, QmpConnectError } from '../src/index.ts';
import { FakeQmpServer } from './fake-qmp-server.ts';

function serve(path: string): Promise<Server> {
  const server = createServer((socket) => {
    void new FakeQmpServer(socket).replay([
      { dir: 's', msg: { QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: 'fake' }, capabilities: [] } } },
      { dir: 'c', msg: { execute: 'qmp_capabilities', id: 1 } },
      { dir: 's', msg: { return: {}, id: 1 } },
    ]);
  });
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

describe('QmpClient.connect', () => {
  it('retries until the socket appears (QEMU creates it after spawn)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'qmp-connect-'));
    let server: Server | undefined;
    try {
      const path = join(dir, 'qmp.sock');
      const connecting = QmpClient.connect(path, { timeoutMs: 3000, retryIntervalMs: 20 });
      await sleep(250);
      server = await serve(path);
      const client = await connecting;
      assert.equal(client.greeting.version.package, 'fake');
      await client.close();
    } finally {
      server?.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('gives up with QmpConnectError after the timeout', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'qmp-connect-'));
    try {
      const t0 = Date.now();
      await assert.rejects(QmpClient.connect(join(dir, 'missing.sock'), { timeoutMs: 200 }), (err: unknown) => {
        assert.ok(err instanceof QmpConnectError);
        assert.equal(err.code, 'QMP_ERR_CONNECT');
        assert.equal(err.data['errno'], 'ENOENT');
        assert.match(err.message, /within 200 ms/);
        return true;
      });
      const took = Date.now() - t0;
      assert.ok(took >= 180 && took < 2000, `took ${took} ms`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('fails at once on an error that retrying cannot fix', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'qmp-connect-'));
    try {
      const file = join(dir, 'not-a-dir');
      await writeFile(file, '');
      await assert.rejects(QmpClient.connect(join(file, 'qmp.sock'), { timeoutMs: 5000 }), {
        code: 'QMP_ERR_CONNECT',
        data: { path: join(file, 'qmp.sock'), errno: 'ENOTDIR' },
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('can be aborted while retrying', async () => {
    const ac = new AbortController();
    const p = QmpClient.connect('/nonexistent/roamdesk/qmp.sock', { timeoutMs: 5000, signal: ac.signal });
    setTimeout(() => ac.abort(new Error('cancelled by test')), 50);
    await assert.rejects(p, /cancelled by test/);
  });
});
