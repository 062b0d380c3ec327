// The local store's lock (one writer; a dead holder's lock is taken over) and the last-known chains that let
// `status` answer offline.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { ClientError, existingLocalStore, type KnownChain, loadKnownChain, localObjectStatus, localStore, lockLocalStore, saveKnownChain } from '../src/index.ts';

const SERVER = 'http://127.0.0.1:8760';

describe('local store', () => {
  let dir = '';
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'roamdesk-local-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  it('one holder at a time; a lock whose process is gone is taken over', async () => {
    const home = join(dir, 'lock');
    const lock = await lockLocalStore(home, 'prefetch a');
    await assert.rejects(lockLocalStore(home, 'prefetch b'), (e: unknown) =>
      e instanceof ClientError && e.code === 'CLIENT_ERR_BUSY' && e.data['pid'] === process.pid && /prefetch a \(pid \d+/.test(e.message));
    await lock.release();
    // A pid that has exited: the lock left by a killed prefetch.
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    await writeFile(lock.file, JSON.stringify({ pid: Number(dead), purpose: 'prefetch old', since: '2020-01-01T00:00:00.000Z' }));
    const again = await lockLocalStore(home, 'prefetch c');
    assert.match(await readFile(again.file, 'utf8'), new RegExp(`"pid":${process.pid}`));
    await again.release();
    // Unreadable content: being written right now (young) → busy; left by a crash (old) → taken over.
    await writeFile(lock.file, '');
    await assert.rejects(lockLocalStore(home, 'x'), (e: unknown) => e instanceof ClientError && e.code === 'CLIENT_ERR_BUSY');
    await utimes(lock.file, new Date(0), new Date(0));
    await (await lockLocalStore(home, 'x')).release();
    await assert.rejects(stat(lock.file), { code: 'ENOENT' });
  });

  it('records the last chain per desktop and server; other servers, bad names and bad files give null', async () => {
    const home = join(dir, 'known');
    const chain: KnownChain = {
      version: 1, server: SERVER, desktop: 'work', location: 'server', bytes: 30,
      objects: [
        { id: 'a'.repeat(64), kind: 'image', parent: null, size: 10, virtualSize: 100 },
        { id: 'b'.repeat(64), kind: 'layer', parent: 'a'.repeat(64), size: 20, virtualSize: 100 },
      ],
      asOf: '2025-01-01T00:00:00.000Z',
    };
    await saveKnownChain(home, chain);
    assert.equal((await stat(join(home, 'desktops', 'work.json'))).mode & 0o777, 0o600);
    assert.deepEqual(await loadKnownChain(home, 'work', SERVER), chain);
    assert.equal(await loadKnownChain(home, 'work', 'http://elsewhere:1'), null);
    assert.equal(await loadKnownChain(home, 'other', SERVER), null);
    await saveKnownChain(home, { ...chain, desktop: '../evil' });
    assert.equal(await loadKnownChain(home, '../evil', SERVER), null);
    await writeFile(join(home, 'desktops', 'work.json'), JSON.stringify({ ...chain, objects: [{ id: '../x', kind: 'image', parent: null, size: 1, virtualSize: 1 }] }));
    assert.equal(await loadKnownChain(home, 'work', SERVER), null);
  });

  it('status of objects: no store means missing; nothing is created', async () => {
    const home = join(dir, 'fresh');
    await mkdir(home);
    assert.equal(await existingLocalStore(home), null);
    const objects = [{ id: 'c'.repeat(64), kind: 'image' as const, parent: null, size: 5, virtualSize: 5 }];
    assert.deepEqual(await localObjectStatus(null, objects), [{ id: 'c'.repeat(64), kind: 'image', size: 5, local: 'missing', localBytes: 0 }]);
    await assert.rejects(stat(join(home, 'store')), { code: 'ENOENT' });
    const store = await localStore(home);
    assert.equal(store.root, join(home, 'store'));
    assert.notEqual(await existingLocalStore(home), null);
    assert.deepEqual((await localObjectStatus(store, objects)).map((o) => o.local), ['missing']);
  });
});
