// The ObjectStore adapter over the real store: a seal leaves the new layer's piece manifest in the manifest
// cache the transfer endpoints serve from, equal to the one they would compute.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { Store } from '@roamdesk/store';
import { computeManifest, ManifestCache } from '@roamdesk/transfer';

import { storeAdapter } from '../src/runtime/store-adapter.ts';

describe('storeAdapter', () => {
  it('seal leaves the layer manifest in the cache (served without reading the layer again)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'roamdesk-store-adapter-'));
    try {
      const store = await Store.open(join(dir, 'store'));
      const base = join(dir, 'base.qcow2');
      assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']).status, 0);
      const image = await store.importImage(base);
      const cache = new ManifestCache(join(dir, 'manifests'));
      const adapter = storeAdapter(store, cache);
      const overlay = await adapter.createOverlay(image.id, { label: 'test' });
      assert.equal(spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x61 1M 9M', overlay.path]).status, 0);
      const layer = await adapter.seal({ path: overlay.path, parent: image.id });
      const meta = { id: layer.id, kind: 'layer' as const, parent: image.id, size: layer.size, virtualSize: layer.virtualSize };
      const expected = await computeManifest(store.objectPath(layer.id), meta);
      assert.deepEqual(await cache.get(join(dir, 'no-such-file'), meta), expected, 'a hit, never reading the path');
      // And a fresh cache over the same directory finds it on disk.
      assert.deepEqual(await new ManifestCache(join(dir, 'manifests')).get(join(dir, 'no-such-file'), meta), expected);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
