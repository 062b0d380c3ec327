// sealLive against a real (guestless, paused) QEMU: guest writes via HMP qemu-io, two live seals, then the
// oracle checks from notes/reliability.md §3: qemu-io read -P, qemu-img compare/check, id = sha256, relocation.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { QmpClient } from '@roamdesk/qmp';

import { OverlayInUseError, Store, type ObjectInfo, type Overlay } from '../src/index.ts';
import { haveQemu, haveQemuImg, haveQemuIo, mustSh, sh, sha256File, tempDir } from './helpers.ts';

const QDEV = '/machine/peripheral/disk0/virtio-backend';

async function connect(sock: string): Promise<QmpClient> {
  for (let i = 0; ; i++) {
    try {
      return await QmpClient.connect(sock, { timeoutMs: 5000 });
    } catch (e) {
      if (i > 100) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

function readsPattern(file: string, pattern: string, offset: string, len: string): boolean {
  const r = sh('qemu-io', ['-f', 'qcow2', '-r', '-c', `read -P ${pattern} ${offset} ${len}`, file]);
  return r.status === 0 && !r.stdout.includes('Pattern verification failed') && !r.stderr.includes('Pattern verification failed');
}

describe('Store.sealLive with a running QEMU', { skip: haveQemu && haveQemuImg && haveQemuIo ? false : 'QEMU not installed' }, () => {
  let dir = '';
  let vm: ChildProcess | null = null;
  let qmp: QmpClient | null = null;
  before(async () => { dir = await tempDir('store-live-'); });
  /** A paused, guestless VM whose disk0 is `overlay` over `image` (node names img, ov0); its QMP client. */
  async function startVm(image: string, overlay: string, sock: string): Promise<QmpClient> {
    vm = spawn('qemu-system-x86_64', ['-machine', 'q35', '-nodefaults', '-display', 'none', '-S',
      '-qmp', `unix:${sock},server=on,wait=off`,
      '-blockdev', JSON.stringify({ driver: 'qcow2', 'node-name': 'img', 'read-only': true, file: { driver: 'file', filename: image, 'read-only': true }, backing: null }),
      '-blockdev', JSON.stringify({ driver: 'qcow2', 'node-name': 'ov0', file: { driver: 'file', filename: overlay }, backing: 'img' }),
      '-device', 'virtio-blk-pci,drive=ov0,id=disk0'], { stdio: 'ignore' });
    return connect(sock);
  }
  after(async () => {
    await qmp?.close().catch(() => undefined);
    if (vm?.pid !== undefined && vm.exitCode === null && vm.signalCode === null) process.kill(vm.pid, 'SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('write A, seal, write B, seal: layers hold A and B-over-A, ids are hashes, chain relocates', async () => {
    const store = await Store.open(join(dir, 'store'));
    mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '32M']);
    mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 4M', join(dir, 'base.qcow2')]);
    const image = await store.importImage(join(dir, 'base.qcow2'));
    const imageHash = await sha256File(store.objectPath(image.id));
    const ov0 = await store.createOverlay(image.id, { label: 'live' });

    const sock = join(dir, 'qmp.sock');
    qmp = await startVm(store.objectPath(image.id), ov0.path, sock);
    const hmp = (cmd: string): Promise<string> => qmp!.execute('human-monitor-command', { 'command-line': cmd });
    // qemu-io -d takes the device's qdev path: the write goes through the guest's own BlockBackend.
    assert.equal(await hmp(`qemu-io -d ${QDEV} "write -P 0xaa 0 64k"`), '');
    assert.equal(await hmp(`qemu-io -d ${QDEV} "write -P 0xaa 8M 1M"`), '');

    // Offline sealing of an overlay a VM holds is refused with a clear error; nothing changes.
    const before = await sha256File(ov0.path);
    await assert.rejects(store.seal(ov0), (e: unknown) => e instanceof OverlayInUseError);
    assert.ok((await stat(ov0.path)).isFile());
    // A second writer — another qemu-io, or a second QEMU on the same chain — is refused by QEMU's image locks
    // (reliability.md T21), and the overlay and the image are unchanged by the attempts.
    const io = sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x66 0 64k', ov0.path]);
    assert.notEqual(io.status, 0);
    assert.match(io.stderr + io.stdout, /Failed to get "write" lock/);
    const vm2 = sh('qemu-system-x86_64', ['-machine', 'q35', '-nodefaults', '-display', 'none', '-S', '-no-shutdown',
      '-blockdev', JSON.stringify({ driver: 'qcow2', 'node-name': 'ov0', file: { driver: 'file', filename: ov0.path } }),
      '-device', 'virtio-blk-pci,drive=ov0,id=disk0', '-monitor', 'none', '-serial', 'none', '-daemonize', '-pidfile', join(dir, 'vm2.pid')]);
    // Had it started, it runs in the background: ours to stop (by its pid file) before anything is asserted.
    if (vm2.status === 0) process.kill(Number((await readFile(join(dir, 'vm2.pid'), 'utf8')).trim()), 'SIGKILL');
    assert.notEqual(vm2.status, 0, 'a second QEMU writing the overlay does not start');
    assert.match(vm2.stderr, /Failed to get "write" lock/);
    assert.equal(await sha256File(ov0.path), before);
    assert.equal(await sha256File(store.objectPath(image.id)), imageHash);

    const first = await store.sealLive(ov0, { qmp, device: 'disk0', activeNode: 'ov0' });
    const layer1: ObjectInfo = first.layer;
    assert.equal(layer1.parent, image.id);
    // The old name stays while the VM runs (QEMU may reopen it by name): a second link to the layer.
    assert.equal((await stat(ov0.path)).ino, (await stat(store.objectPath(layer1.id))).ino);
    assert.equal(first.overlay.parent, layer1.id);
    const info = JSON.parse(mustSh('qemu-img', ['info', '-U', '-f', 'qcow2', '--output=json', first.overlay.path])) as Record<string, unknown>;
    assert.equal(info['backing-filename'], `${layer1.id}.qcow2`, 'the new overlay names the layer by id, relatively');

    assert.equal(await hmp(`qemu-io -d ${QDEV} "write -P 0xbb 64k 64k"`), '');
    assert.equal(await hmp(`qemu-io -d ${QDEV} "write -P 0xbb 8M 64k"`), '');
    const second = await store.sealLive(first.overlay, { qmp, device: 'disk0', activeNode: first.activeNode });
    const layer2 = second.layer;
    assert.equal(layer2.parent, layer1.id);
    // The overlay a live seal attaches is a writable top node like any: an all-zero write becomes a zero cluster.
    assert.equal(await hmp(`qemu-io -d ${QDEV} "write -P 0 16M 1M"`), '');

    // Live export of the running chain (-U), compared with the live chain.
    const exported = join(dir, 'exported.qcow2');
    await store.exportChain(second.overlay, exported);
    assert.equal(sh('qemu-img', ['compare', '-U', '-f', 'qcow2', '-F', 'qcow2', second.overlay.path, exported]).status, 0);

    await qmp.execute('quit').catch(() => undefined);
    await qmp.close().catch(() => undefined);
    qmp = null;
    await new Promise<void>((r) => { if (vm!.exitCode !== null || vm!.signalCode !== null) r(); else vm!.once('exit', () => r()); });

    // The VM is gone: the retired names go; a writable overlay's only name, or a path elsewhere, is refused.
    assert.equal(await store.removeRetired(first.retired), true);
    assert.equal(await store.removeRetired(second.retired), true);
    assert.equal(await store.removeRetired(second.retired), false, 'already gone');
    await assert.rejects(store.removeRetired(second.overlay.path), { code: 'STORE_ERR_SEAL_FAILED', message: /only name/ });
    await assert.rejects(store.removeRetired(join(dir, 'base.qcow2')), { code: 'STORE_ERR_SEAL_FAILED' });
    await assert.rejects(stat(ov0.path));

    const map = JSON.parse(mustSh('qemu-img', ['map', '--output=json', '-f', 'qcow2', second.overlay.path])) as Array<{ start: number; length: number; depth: number; zero: boolean; data: boolean }>;
    const zeroed = map.find((e) => e.start <= 16 * 1024 * 1024 && 16 * 1024 * 1024 < e.start + e.length);
    assert.deepEqual(zeroed && [zeroed.depth, zeroed.zero, zeroed.data], [0, true, false], 'zeros written after a live seal take no data');

    const l1 = store.objectPath(layer1.id);
    const l2 = store.objectPath(layer2.id);
    assert.ok(readsPattern(l1, '0xaa', '0', '64k') && readsPattern(l1, '0xaa', '8M', '1M'), 'layer 1 has A');
    assert.ok(readsPattern(l1, '0x11', '64k', '64k'), 'layer 1 shows the image under A');
    assert.ok(readsPattern(l2, '0xbb', '64k', '64k') && readsPattern(l2, '0xbb', '8M', '64k'), 'layer 2 has B');
    assert.ok(readsPattern(l2, '0xaa', '0', '64k') && readsPattern(l2, '0xaa', '8256k', '64k'), 'layer 2 has A below B');
    assert.equal(await sha256File(store.objectPath(image.id)), imageHash, 'the image is byte-identical');
    for (const o of [image, layer1, layer2]) {
      assert.equal(await sha256File(store.objectPath(o.id)), o.id, `id of ${o.kind} = sha256`);
      assert.equal(sh('qemu-img', ['check', '-f', 'qcow2', store.objectPath(o.id)]).status, 0);
    }
    assert.equal(sh('qemu-img', ['check', '-f', 'qcow2', second.overlay.path]).status, 0);
    assert.deepEqual((await store.chain(layer2.id)).map((o) => o.id), [image.id, layer1.id, layer2.id]);
    const report = await store.verify();
    assert.equal(report.ok, true, JSON.stringify(report.problems));
    assert.equal(report.overlays, 1);

    // The chain opens from a copy of objects/ elsewhere: every backing name is relative.
    const elsewhere = join(dir, 'elsewhere');
    await cp(store.objectsDir, elsewhere, { recursive: true });
    const movedTop = join(elsewhere, (await readdir(elsewhere)).find((n) => n.startsWith('overlay-'))!);
    assert.equal(sh('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', second.overlay.path, movedTop]).status, 0);
    assert.equal(sh('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', exported, join(elsewhere, `${layer2.id}.qcow2`)]).status, 0);
    const chainInfo = JSON.parse(mustSh('qemu-img', ['info', '-f', 'qcow2', '--backing-chain', '--output=json', movedTop])) as Array<{ filename: string }>;
    assert.ok(chainInfo.every((c) => c.filename.startsWith(elsewhere)), 'nothing resolves into the original store');
    const overlayLeft: Overlay = second.overlay;
    assert.ok((await stat(overlayLeft.path)).isFile());
  });

  it('a seal interrupted after blockdev-snapshot (its answer lost, or a later step failed) keeps the new overlay, and resumeLiveSeal finishes it while the VM runs', async () => {
    const store = await Store.open(join(dir, 'resume'));
    mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base2.qcow2'), '32M']);
    const image = await store.importImage(join(dir, 'base2.qcow2'));
    const ov0 = await store.createOverlay(image.id, { label: 'live' });
    const sock = join(dir, 'qmp2.sock');
    qmp = await startVm(store.objectPath(image.id), ov0.path, sock);
    const real = qmp;
    const hmp = (cmd: string): Promise<string> => real.execute('human-monitor-command', { 'command-line': cmd });
    const topNode = async (): Promise<string> => (await real.execute('query-block')).find((b) => b.qdev?.includes('/disk0/') === true)!.inserted!['node-name']!;
    /** The monitor as a seal sees it, failing right after `command` took effect (as when the connection breaks then). */
    const failingAfter = (command: string): Pick<QmpClient, 'execute'> => ({
      execute: (async (name: string, args?: unknown) => {
        const r = await (real.execute as (n: string, a?: unknown) => Promise<unknown>)(name, args);
        if (name === command) throw new Error(`the monitor went away after ${command}`);
        return r;
      }) as QmpClient['execute'],
    });
    const overlaysNow = async (): Promise<string[]> => (await readdir(store.objectsDir)).filter((n) => n.startsWith('overlay-')).sort();

    assert.equal(await hmp(`qemu-io -d ${QDEV} "write -P 0xa1 0 64k"`), '');
    await assert.rejects(store.sealLive(ov0, { qmp: failingAfter('blockdev-snapshot'), device: 'disk0', activeNode: 'ov0' }), { code: 'STORE_ERR_SEAL_FAILED' });
    const node1 = await topNode();
    assert.notEqual(node1, 'ov0', 'the snapshot took effect');
    const child1 = (await overlaysNow()).map((n) => join(store.objectsDir, n)).find((p) => p !== ov0.path);
    assert.ok(child1 !== undefined && (await stat(child1)).isFile(), 'the overlay the guest writes into now was kept');
    assert.equal(await hmp(`qemu-io -d ${QDEV} "write -P 0xb2 64k 64k"`), '');

    // A record naming another overlay, or a node that is not the top one, is refused; nothing changes.
    const stranger = await store.createOverlay(image.id, { label: 'other' });
    await assert.rejects(store.resumeLiveSeal(stranger, { qmp: real, device: 'disk0', activeNode: node1 }), { code: 'STORE_ERR_SEAL_FAILED', message: /does not rest on/ });
    await assert.rejects(store.resumeLiveSeal(ov0, { qmp: real, device: 'disk0', activeNode: 'ov0' }), { code: 'STORE_ERR_SEAL_FAILED', message: /top node/ });
    await store.discardOverlay(stranger);

    const r1 = await store.resumeLiveSeal(ov0, { qmp: real, device: 'disk0', activeNode: node1 });
    assert.ok(r1 !== null);
    assert.deepEqual([r1.overlay.path, r1.activeNode, r1.retired, r1.layer.parent], [child1, node1, ov0.path, image.id]);
    assert.ok(readsPattern(store.objectPath(r1.layer.id), '0xa1', '0', '64k'), 'the layer holds the writes before the snapshot');
    assert.ok(readsPattern(store.objectPath(r1.layer.id), '0', '64k', '64k'), '…and not those after it');
    const header = JSON.parse(mustSh('qemu-img', ['info', '-U', '-f', 'qcow2', '--output=json', child1])) as Record<string, unknown>;
    assert.equal(header['backing-filename'], `${r1.layer.id}.qcow2`);
    assert.equal(await store.resumeLiveSeal(r1.overlay, { qmp: real, device: 'disk0', activeNode: node1 }), null, 'nothing left to finish');

    // Interrupted one step later: published, but the new overlay's header not yet changed. Finishing publishes nothing twice.
    await assert.rejects(store.sealLive(r1.overlay, { qmp: failingAfter('blockdev-snapshot'), device: 'disk0', activeNode: node1 }));
    const node2 = await topNode();
    const r2 = await store.resumeLiveSeal(r1.overlay, { qmp: failingAfter('never'), device: 'disk0', activeNode: node2 });
    assert.ok(r2 !== null && r2.layer.parent === r1.layer.id);
    assert.ok(readsPattern(store.objectPath(r2.layer.id), '0xb2', '64k', '64k'), 'the second layer holds the write made after the first interruption');
    assert.equal(await hmp(`qemu-io -d ${QDEV} "write -P 0xc3 128k 64k"`), '');
    await assert.rejects(store.sealLive(r2.overlay, { qmp: failingAfter('change-backing-file'), device: 'disk0', activeNode: node2 }), { code: 'STORE_ERR_SEAL_FAILED', message: /change-backing-file/ });
    const node3 = await topNode();
    const r3 = await store.resumeLiveSeal(r2.overlay, { qmp: real, device: 'disk0', activeNode: node3 });
    assert.ok(r3 !== null && r3.layer.parent === r2.layer.id);
    assert.ok(readsPattern(store.objectPath(r3.layer.id), '0xc3', '128k', '64k'));
    // And a plain live seal goes on from there.
    assert.equal(await hmp(`qemu-io -d ${QDEV} "write -P 0xd4 192k 64k"`), '');
    const r4 = await store.sealLive(r3.overlay, { qmp: real, device: 'disk0', activeNode: node3 });
    assert.deepEqual((await store.chain(r4.layer.id)).map((o) => o.id), [image.id, r1.layer.id, r2.layer.id, r3.layer.id, r4.layer.id]);
    for (const [pattern, at] of [['0xa1', '0'], ['0xb2', '64k'], ['0xc3', '128k'], ['0xd4', '192k']] as const) {
      assert.ok(readsPattern(store.objectPath(r4.layer.id), pattern, at, '64k'), `${pattern} at ${at} in the chain`);
    }
    for (const o of [r1.layer, r2.layer, r3.layer, r4.layer]) assert.equal(await sha256File(store.objectPath(o.id)), o.id);

    await real.execute('quit').catch(() => undefined);
    await real.close().catch(() => undefined);
    qmp = null;
    await new Promise<void>((r) => { if (vm!.exitCode !== null || vm!.signalCode !== null) r(); else vm!.once('exit', () => r()); });
    for (const r of [r1, r2, r3, r4]) assert.equal(await store.removeRetired(r.retired), true);
    const report = await store.verify();
    assert.equal(report.ok, true, JSON.stringify(report.problems));
    assert.equal(report.overlays, 1);
  });
});
