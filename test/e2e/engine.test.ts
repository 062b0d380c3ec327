/**
 * The engine end to end with the real guest under QEMU: chains of image + layers + overlay, offline and
 * live sealing, export, and a QEMU killed mid-write. Each boot's guest verifies every generation that
 * earlier boots wrote (guest/README.md), so "nothing lost" is checked by the guest itself.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { parseGuestSerial } from '@roamdesk/cli';
import { QemuImg } from '@roamdesk/qemu';

import { bootGuest, cycleBoot, range, stopVm, storeWithGuestImage, tempDir } from '../support/guest-vm.ts';

const img = new QemuImg();

async function sha256File(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

/** Generations the guest reported as written (data and manifest fsync'd) so far. */
function writtenGens(serial: string): number[] {
  return parseGuestSerial(serial).flatMap((e) => (e.step === 'write' ? [e.gen] : []));
}

describe('engine with the real guest', () => {
  it('three cycle boots across two seals each verify every earlier generation; the image stays byte-identical', async () => {
    const t = await tempDir('roamdesk-e2e-cycle-');
    try {
      const { store, image } = await storeWithGuestImage(t.dir);
      assert.equal(await sha256File(store.objectPath(image.id)), image.id, 'image id = SHA-256 of its bytes');

      let overlay = await store.createOverlay(image.id);
      const layers: string[] = [];
      for (let boot = 1; boot <= 3; boot += 1) {
        const r = await cycleBoot(store, overlay, join(t.dir, 'vm'));
        assert.deepEqual(r.errors, []);
        assert.ok(r.allOk, `boot ${boot} verified everything ok`);
        assert.deepEqual(r.verified, range(0, boot - 2), `boot ${boot} verifies the generations of earlier boots`);
        assert.deepEqual(r.written, [boot - 1]);
        if (boot < 3) {
          const layer = await store.seal(overlay);
          assert.equal(layer.parent, overlay.parent);
          layers.push(layer.id);
          overlay = await store.createOverlay(layer.id);
        }
      }
      assert.deepEqual((await store.chain(overlay.parent)).map((o) => o.id), [image.id, ...layers]);
      assert.equal(await sha256File(store.objectPath(image.id)), image.id, 'no boot wrote to the image');
      const report = await store.verify();
      assert.ok(report.ok, JSON.stringify(report.problems));
      for (const id of [image.id, ...layers]) assert.equal((await img.check(store.objectPath(id))).status, 'ok');
    } finally {
      await t.remove();
    }
  });

  it('a live seal during `stream` loses no logged generation, and the exported chain equals the live one', async () => {
    const t = await tempDir('roamdesk-e2e-live-');
    try {
      const { store, image } = await storeWithGuestImage(t.dir);
      const overlay = await store.createOverlay(image.id);
      const vm = await bootGuest(store, overlay, join(t.dir, 'vm'), { workload: 'stream', genKib: 256, intervalMs: 300 });
      let first;
      let sealed;
      let loggedBeforeSeal: number[];
      let loggedAll: number[];
      try {
        await vm.waitForSerial(/ROAMDESK write gen=2 /, { timeoutMs: 90_000 });
        loggedBeforeSeal = writtenGens(await vm.readSerial());
        // Twice while it runs (as scheduled replication does): the second seal makes QEMU reopen the whole chain.
        first = await store.sealLive(overlay, { qmp: vm.qmp, device: 'disk0', activeNode: vm.activeNode });
        vm.activeNode = first.activeNode;
        await vm.waitForSerial(new RegExp(`ROAMDESK write gen=${Math.max(...writtenGens(await vm.readSerial())) + 1} `), { timeoutMs: 60_000 });
        loggedBeforeSeal = writtenGens(await vm.readSerial());
        sealed = await store.sealLive(first.overlay, { qmp: vm.qmp, device: 'disk0', activeNode: vm.activeNode });
        vm.activeNode = sealed.activeNode;
        const last = Math.max(...(writtenGens(await vm.readSerial())));
        await vm.waitForSerial(new RegExp(`ROAMDESK write gen=${last + 2} `), { timeoutMs: 60_000 });

        // Paused, the live chain is stable: its export must read exactly the same.
        await vm.qmp.execute('stop');
        const exported = join(t.dir, 'export.qcow2');
        await store.exportChain(sealed.overlay, exported);
        assert.ok(await img.compare(exported, sealed.overlay.path, { forceShare: true }), 'export = live chain');
        await vm.qmp.execute('cont');

        const exit = await vm.powerDown({ timeoutMs: 60_000 });
        assert.equal(exit.reason, 'guest-shutdown');
        loggedAll = writtenGens(await vm.readSerial());
      } finally {
        await stopVm(vm);
      }
      // The old overlay names stayed while the VM ran (QEMU reopened them); now they go.
      assert.equal(await store.removeRetired(first.retired), true);
      assert.equal(await store.removeRetired(sealed.retired), true);
      assert.equal((await store.verify()).ok, true);
      assert.ok(loggedBeforeSeal.length >= 3);
      assert.ok(loggedAll.length > loggedBeforeSeal.length);

      // The live-sealed layer alone holds everything logged before the seal.
      const atSeal = await cycleBoot(store, await store.createOverlay(sealed.layer.id), join(t.dir, 'vm'));
      assert.ok(atSeal.allOk, atSeal.serial.slice(-1500));
      for (const g of loggedBeforeSeal) assert.ok(atSeal.verified.includes(g), `generation ${g} logged before the seal is in the layer`);

      // And the whole chain holds everything logged until power-down.
      const final = await store.seal(sealed.overlay);
      const after = await cycleBoot(store, await store.createOverlay(final.id), join(t.dir, 'vm'));
      assert.ok(after.allOk, after.serial.slice(-1500));
      for (const g of loggedAll) assert.ok(after.verified.includes(g), `generation ${g} survived`);
      assert.equal(await sha256File(store.objectPath(image.id)), image.id);
    } finally {
      await t.remove();
    }
  });

  it('SIGKILL of QEMU mid-write leaves a chain that qemu-img check accepts and that boots with every logged generation', async () => {
    const t = await tempDir('roamdesk-e2e-kill-');
    try {
      const { store, image } = await storeWithGuestImage(t.dir);
      const overlay = await store.createOverlay(image.id);
      const vm = await bootGuest(store, overlay, join(t.dir, 'vm'), { workload: 'stream', genKib: 2048, intervalMs: 0 });
      let logged: number[];
      try {
        await vm.waitForSerial(/ROAMDESK write gen=1 /, { timeoutMs: 90_000 });
        const exit = await vm.kill(); // back-to-back 2 MiB writes: the kill lands mid-write
        assert.equal(exit.reason, 'killed');
        logged = writtenGens(await vm.readSerial());
      } finally {
        await stopVm(vm);
      }
      const check = await img.check(overlay.path);
      assert.ok(check.status === 'ok' || check.status === 'leaks', `qemu-img check: ${check.status}`);

      const layer = await store.seal(overlay);
      // Leaked clusters (exit 3) are repaired by the seal, before the bytes are frozen: the layer checks clean.
      assert.equal((await img.check(store.objectPath(layer.id))).status, 'ok', 'the sealed layer has no leaks left');
      const r = await cycleBoot(store, await store.createOverlay(layer.id), join(t.dir, 'vm'));
      assert.ok(r.allOk, r.serial.slice(-1500));
      for (const g of logged) assert.ok(r.verified.includes(g), `generation ${g} logged before the kill survived`);
    } finally {
      await t.remove();
    }
  });
});
