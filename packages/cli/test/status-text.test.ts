import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { Desktop } from '@roamdesk/api';
import type { CheckoutStatus } from '@roamdesk/client';

import { checkoutText } from '../src/commands/device/status.ts';
import { desktopStateText, desktopTable } from '../src/commands/remote/desktops.ts';

const desktop = (paused?: Desktop['paused']): Desktop => ({
  id: '6f1c2f7e-3a55-4c1e-9d57-0d2f4b8a9e10', name: 'work', owner: 'ann', image: 'base', memoryMiB: 1024, cpus: 1,
  kernel: null, initrd: null, append: null, state: 'running', location: 'server', leaseGeneration: 1,
  lease: { generation: 1, deviceId: null, deviceName: null, since: '2026-12-02T10:00:00.000Z', state: 'server', replicatedTopObjectId: 'a'.repeat(64), replicatedAt: null },
  createdAt: '2026-12-02T10:00:00.000Z', updatedAt: '2026-12-02T10:00:00.000Z',
  ...(paused !== undefined ? { paused } : {}),
});

describe('how status shows a paused VM and scheduled replication', () => {
  it('a server desktop: the table and the start/stop answer say why and what happens next', () => {
    assert.equal(desktopStateText(desktop()), 'Desktop work is running.');
    const full = desktop({ reason: 'no-space', since: '2026-12-02T11:00:00.000Z' });
    assert.match(desktopStateText(full), /running but PAUSED since 2026-12-02T11:00:00\.000Z: the server's disk is full; it resumes by itself/);
    assert.match(desktopTable([full]), /paused \(no-space\)/);
    assert.match(desktopStateText(desktop({ reason: 'paused', since: '2026-12-02T11:00:00.000Z' })), /roamdesk start work resumes it/);
  });

  it('a desktop checked out here: status names the reason and gives the hint', () => {
    const s = {
      desktop: 'work', desktopId: '6f1c2f7e-3a55-4c1e-9d57-0d2f4b8a9e10', location: 'this-device', device: { id: 'd', name: 'laptop' },
      state: 'checked-out', generation: 2, lostReason: null, checkedOutAt: '2026-12-02T10:00:00.000Z',
      image: '/h/store/objects/a.qcow2', layers: [], overlay: '/h/store/objects/overlay-local-1.qcow2',
      vm: { running: true, pid: 42, vncSocket: '/h/vms/x/vnc.sock', serialLog: '/h/vms/x/serial.log', paused: { reason: 'no-space', dir: '/h/store/objects', freeBytes: 0, hint: 'free at least 16.8 MB there, then run roamdesk start work' } },
      layerCounts: { local: 1, onServer: 1, pending: 0 }, bytesPendingUpload: 0, replicatedTop: 'a'.repeat(64), replicatedAt: null,
      lastReplication: null, lastContact: null, offlineLease: null, scheduledReplication: null,
    } satisfies CheckoutStatus;
    assert.match(checkoutText(s, { reachable: null }), /Local VM: PAUSED \(pid 42\): no space left on its disk; free at least 16\.8 MB there, then run roamdesk start work\./);
    assert.match(checkoutText({ ...s, vm: { ...s.vm, paused: null } }, { reachable: null }), /Local VM: running \(pid 42\)\./);
  });

  it('scheduled replication: how often, when due, and whether a keeper does it', () => {
    const s = {
      desktop: 'work', desktopId: '6f1c2f7e-3a55-4c1e-9d57-0d2f4b8a9e10', location: 'this-device', device: null,
      state: 'checked-out', generation: 2, lostReason: null, checkedOutAt: '2026-12-02T10:00:00.000Z',
      image: '/h/store/objects/a.qcow2', layers: [], overlay: null,
      vm: { running: true, pid: 42, vncSocket: '/h/vms/x/vnc.sock', serialLog: '/h/vms/x/serial.log', paused: null },
      layerCounts: { local: 1, onServer: 1, pending: 0 }, bytesPendingUpload: 0, replicatedTop: 'a'.repeat(64), replicatedAt: null,
      lastReplication: null, lastContact: null, offlineLease: null,
      scheduledReplication: { everySeconds: 4 * 3600, dueAt: '2026-12-02T14:00:00.000Z', keeperPid: 77 },
    } satisfies CheckoutStatus;
    assert.match(checkoutText(s, { reachable: null }), /Scheduled replication: every 4 h, next due .*; done by the keeper \(pid 77\)\./);
    const none = { ...s, scheduledReplication: { ...s.scheduledReplication, keeperPid: null } };
    assert.match(checkoutText(none, { reachable: null }), /no keeper runs: roamdesk start starts one/);
    assert.match(checkoutText({ ...none, vm: { ...s.vm, running: false, pid: null } }, { reachable: null }), /done while the local VM runs/);
    assert.doesNotMatch(checkoutText({ ...s, scheduledReplication: null }, { reachable: null }), /Scheduled replication/);
  });
});
