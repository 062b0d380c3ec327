import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { classifyPause } from './disk-pause.ts';

const disk = (io: 'ok' | 'failed' | 'nospace') => ({ device: '', qdev: '/machine/peripheral/disk0/virtio-backend', 'io-status': io });

describe('classifyPause', () => {
  it('a running VM is not paused', () => {
    assert.equal(classifyPause({ running: true, status: 'running' }, [disk('nospace')]), null);
  });

  it('an io-error stop names the reason and the disk: ENOSPC is no-space, anything else disk-error', () => {
    assert.deepEqual(classifyPause({ running: false, status: 'io-error' }, [disk('nospace')]), { reason: 'no-space', device: 'disk0' });
    assert.deepEqual(classifyPause({ running: false, status: 'io-error' }, [disk('failed')]), { reason: 'disk-error', device: 'disk0' });
    // A second disk that is fine does not hide the one that failed.
    assert.deepEqual(classifyPause({ running: false, status: 'io-error' }, [{ device: 'cd', 'io-status': 'ok' }, { device: 'data', 'io-status': 'failed' }]), { reason: 'disk-error', device: 'data' });
    // QEMU said io-error but no device reports it (it was reset meanwhile): still a disk error, no device.
    assert.deepEqual(classifyPause({ running: false, status: 'io-error' }, []), { reason: 'disk-error' });
  });

  it('a pause on request is `paused`; other stopped states (shutdown, prelaunch, …) are not pauses a resume ends', () => {
    assert.deepEqual(classifyPause({ running: false, status: 'paused' }, []), { reason: 'paused' });
    assert.equal(classifyPause({ running: false, status: 'shutdown' }, []), null);
    assert.equal(classifyPause({ running: false, status: 'prelaunch' }, []), null);
  });
});
