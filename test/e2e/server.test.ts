/**
 * The server with its REAL engines (@roamdesk/store + the QEMU runtime) and the tiny real guest, driven
 * through the HTTP API: a desktop boots, the guest powers itself off and the desktop shows stopped; the next
 * boot verifies what the first wrote; a server restart re-adopts a running VM and notices one that was
 * killed meanwhile. Every QEMU is killed in `finally` (only pids from this test's own data dir).
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { findGuest, guestAppend, parseGuestSerial } from '@roamdesk/cli';
import { isRunning } from '@roamdesk/qemu';
import type { ServerHandle } from '@roamdesk/server';

import { tempDir } from '../support/guest-vm.ts';
import { api, boot, createDesktop, exists, killOurs, login, ourQemus, pidOf, serial, state, until, type DesktopBody } from '../support/server.ts';

describe('server with the real store and QEMU runtime', () => {
  it('cycle: boots, the guest powers off and the desktop shows stopped; the next boot verifies; export; delete cleans up', async () => {
    const t = await tempDir('roamdesk-e2e-server-');
    let h: ServerHandle | undefined;
    try {
      const guest = await findGuest();
      h = await boot(t.dir);
      const token = await login(h);
      const img = await api(h, 'POST', '/images', token, { name: 'guest', path: guest.disk, format: 'qcow2' });
      assert.equal(img.statusCode, 201, img.body);
      const id = await createDesktop(h, token, guest, 'cyc', guestAppend(guest, 'cycle', { genKib: 256 }));

      for (const bootNo of [1, 2]) {
        const start = await api(h, 'POST', '/desktops/cyc/start', token);
        assert.equal(start.statusCode, 200, start.body);
        assert.equal(start.json<DesktopBody>().desktop.state, 'running');
        const srv = h;
        await until(`boot ${bootNo} to power off and show stopped`, async () => ((await state(srv, token, 'cyc')) === 'stopped' ? true : undefined));
        const events = parseGuestSerial(await serial(h, token, 'cyc'));
        const verified = events.flatMap((e) => (e.step === 'verify' && e.ok ? [e.gen] : []));
        const written = events.flatMap((e) => (e.step === 'write' ? [e.gen] : []));
        assert.deepEqual(verified, bootNo === 1 ? [] : [0], `boot ${bootNo} verified`);
        assert.deepEqual(written, [bootNo - 1], `boot ${bootNo} wrote`);
        assert.deepEqual(await ourQemus(t.dir), [], 'QEMU is gone after the guest powered off');
      }

      // The overlay is a store overlay, recorded relative to the data dir.
      const row = await readdir(join(t.dir, 'store', 'objects'));
      const overlays = row.filter((n) => n.startsWith('overlay-'));
      assert.equal(overlays.length, 1, row.join(', '));

      const exp = await api(h, 'GET', '/desktops/cyc/export', token);
      assert.equal(exp.statusCode, 200);
      assert.equal(exp.rawPayload.subarray(0, 4).toString('latin1'), 'QFI\xfb', 'a qcow2 file');
      assert.deepEqual(await readdir(join(t.dir, 'uploads')), [], 'the export leaves no temp file');

      const del = await api(h, 'DELETE', '/desktops/cyc', token);
      assert.equal(del.statusCode, 204, del.body);
      assert.ok(!(await exists(join(t.dir, 'vms', id))), 'run dir removed');
      assert.deepEqual((await readdir(join(t.dir, 'store', 'objects'))).filter((n) => n.startsWith('overlay-')), [], 'overlay removed');
    } finally {
      await h?.close();
      await killOurs(t.dir);
      await t.remove();
    }
  });

  it('restart: a running VM is re-adopted (and stops), a VM killed while the server was down shows stopped', async () => {
    const t = await tempDir('roamdesk-e2e-restart-');
    let h: ServerHandle | undefined;
    try {
      const guest = await findGuest();
      h = await boot(t.dir);
      let token = await login(h);
      assert.equal((await api(h, 'POST', '/images', token, { name: 'guest', path: guest.disk, format: 'qcow2' })).statusCode, 201);
      const keepId = await createDesktop(h, token, guest, 'keep', guestAppend(guest, 'idle'));
      const goneId = await createDesktop(h, token, guest, 'gone', guestAppend(guest, 'idle'));
      for (const name of ['keep', 'gone']) {
        const r = await api(h, 'POST', `/desktops/${name}/start`, token);
        assert.equal(r.statusCode, 200, r.body);
      }
      const first = h;
      for (const name of ['keep', 'gone']) {
        await until(`${name} idle`, async () => ((await serial(first, token, name)).includes('ROAMDESK idle') ? true : undefined));
      }
      const keepPid = await pidOf(t.dir, keepId);
      const gonePid = await pidOf(t.dir, goneId);

      await h.close(); // VMs are detached: they keep running
      h = undefined;
      assert.ok(await isRunning(keepPid), 'the VM survived the server');
      process.kill(gonePid, 'SIGKILL'); // a QEMU this test's server started
      await until('the killed VM to be gone', async () => (!(await isRunning(gonePid)) ? true : undefined), 10_000);

      h = await boot(t.dir);
      token = await login(h);
      assert.equal(await state(h, token, 'keep'), 'running');
      assert.equal(await state(h, token, 'gone'), 'stopped');
      assert.deepEqual(h.reconciled, [{ desktop: 'gone', from: 'running', to: 'stopped' }]);
      assert.ok((await serial(h, token, 'keep')).includes('ROAMDESK idle'));
      assert.deepEqual(await ourQemus(t.dir), [keepPid], 'only the re-adopted VM runs');

      const stop = await api(h, 'POST', '/desktops/keep/stop', token);
      assert.equal(stop.statusCode, 200, stop.body);
      assert.equal(stop.json<DesktopBody>().desktop.state, 'stopped');
      assert.ok(!(await isRunning(keepPid)), 'stop after restart ended the adopted QEMU');
      assert.match(await serial(h, token, 'keep'), /ROAMDESK powerdown/, 'a graceful power-down');
      assert.deepEqual(await ourQemus(t.dir), []);
    } finally {
      await h?.close();
      await killOurs(t.dir);
      await t.remove();
    }
  });
});
