// importDifference against the real qemu-img: a new version of an image as one layer over the previous top.
import assert from 'node:assert/strict';
import { chmod, copyFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { QemuImg } from '@roamdesk/qemu';

import { Store, type ObjectInfo } from '../src/index.ts';
import { haveQemuImg, haveQemuIo, mustSh, sh, snapshotDir, tempDir } from './helpers.ts';

function codeOf(e: unknown): string {
  return String((e as { code?: unknown }).code);
}

describe('Store.importDifference', { skip: haveQemuImg && haveQemuIo ? false : 'qemu-img / qemu-io not installed' }, () => {
  let dir = '';
  let store: Store;
  let v1: ObjectInfo;
  let v2: ObjectInfo;
  let v3: ObjectInfo;
  const file = (name: string) => join(dir, name);
  const sameGuestView = (a: string, b: string) => sh('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', a, b]).status === 0;

  before(async () => {
    dir = await tempDir('store-diff-');
    store = await Store.open(join(dir, 'store'));
    mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', file('v1.qcow2'), '64M']);
    mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 4M', '-c', 'write -P 0x22 16M 1M', file('v1.qcow2')]);
    await copyFile(file('v1.qcow2'), file('work.qcow2'));
    // Rewrites, a write into a hole, and zeroes over data: the flattened file's layout shifts.
    mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 1M 128k', '-c', 'write -P 0x44 40M 512k', '-c', 'write -z 16M 64k', file('work.qcow2')]);
    mustSh('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', file('work.qcow2'), file('v2.qcow2')]);
    mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x55 50M 64k', file('work.qcow2')]);
    mustSh('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', file('work.qcow2'), file('v3.qcow2')]);
    v1 = await store.importImage(file('v1.qcow2'));
    v2 = await store.importImage(file('v2.qcow2'));
    v3 = await store.importImage(file('v3.qcow2'));
  });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  let layer2: ObjectInfo;
  it('publishes one layer over the parent whose chain shows the target; only the difference is stored', async () => {
    const layer = await store.importDifference(v1.id, v2.id);
    assert.ok(layer !== null);
    layer2 = layer;
    assert.equal(layer.kind, 'layer');
    assert.equal(layer.parent, v1.id);
    assert.equal(layer.virtualSize, v1.virtualSize);
    assert.deepEqual((await store.chain(layer.id)).map((o) => o.id), [v1.id, layer.id]);
    assert.ok(sameGuestView(store.objectPath(layer.id), file('v2.qcow2')));
    assert.ok(layer.size * 3 < v2.size, `layer ${layer.size} bytes, v2 ${v2.size} bytes`);
    // The target stays (the caller decides), and it is nobody's parent: removable.
    await store.remove(v2.id);
    assert.deepEqual((await store.list()).map((o) => o.id).sort(), [v1.id, v3.id, layer.id].sort());
  });

  it('chains a third version on the second layer', async () => {
    const layer = await store.importDifference(layer2.id, v3.id);
    assert.ok(layer !== null);
    assert.equal(layer.parent, layer2.id);
    assert.deepEqual((await store.chain(layer.id)).map((o) => o.id), [v1.id, layer2.id, layer.id]);
    assert.ok(sameGuestView(store.objectPath(layer.id), file('v3.qcow2')));
  });

  it('records what a layer was derived from; another store holding the same objects derives the same bytes', async () => {
    const layer = await store.importDifference(v1.id, v3.id);
    assert.ok(layer !== null);
    assert.equal(layer.derivedFrom, v3.id);
    assert.equal((await store.get(layer.id))?.derivedFrom, v3.id, 'kept in the sidecar');
    const other = await Store.open(join(dir, 'other'));
    await other.importImage(file('v1.qcow2'));
    await other.importImage(file('v3.qcow2'));
    const again = await other.importDifference(v1.id, v3.id, { expectedId: layer.id });
    assert.equal(again?.id, layer.id);
    // A wrong expectation (another QEMU's layout, a lying server): refused, nothing published.
    const before = await snapshotDir(other.root);
    await assert.rejects(other.importDifference(v1.id, v3.id, { expectedId: 'f'.repeat(64) }), (e: unknown) => (e as { code?: string }).code === 'STORE_ERR_HASH_MISMATCH');
    assert.deepEqual(await snapshotDir(other.root), before);
    await store.remove(layer.id);
  });

  it('returns null and publishes nothing when the guest sees no difference', async () => {
    const before = await snapshotDir(store.root);
    assert.equal(await store.importDifference(v3.id, v3.id), null);
    assert.deepEqual(await snapshotDir(store.root), before);
  });

  it('refuses another virtual size, missing objects and a failing qemu-img, leaving the store as it was', async () => {
    mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', file('big.qcow2'), '128M']);
    const big = await store.importImage(file('big.qcow2'));
    const before = await snapshotDir(store.root);
    await assert.rejects(store.importDifference(v1.id, big.id), (e) => codeOf(e) === 'STORE_ERR_UNSUPPORTED_SOURCE');
    await assert.rejects(store.importDifference('0'.repeat(64), v3.id), (e) => codeOf(e) === 'STORE_ERR_PARENT_MISSING');
    await assert.rejects(store.importDifference(v1.id, '0'.repeat(64)), (e) => codeOf(e) === 'STORE_ERR_OBJECT_NOT_FOUND');
    await assert.rejects(store.importDifference(v1.id, '../etc'), (e) => codeOf(e) === 'STORE_ERR_INVALID_OBJECT_ID');
    // qemu-img fails half-way (after create): the temp overlay goes too.
    const failing = file('qemu-img-failing');
    await writeFile(failing, '#!/bin/sh\nif [ "$1" = rebase ]; then echo "rebase: boom" >&2; exit 1; fi\nexec qemu-img "$@"\n');
    await chmod(failing, 0o755);
    const broken = await Store.open(store.root, { qemuImg: new QemuImg({ binary: failing }) });
    await assert.rejects(broken.importDifference(v1.id, v3.id), (e) => codeOf(e) === 'STORE_ERR_IMPORT_FAILED');
    assert.deepEqual(await snapshotDir(store.root), before);
  });
});
