import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { classifyExit } from './exit.ts';

const tail = 'qemu-system-x86_64: something broke\n';

describe('classifyExit', () => {
  it('guest power-off and host quit come from the SHUTDOWN event', () => {
    assert.equal(classifyExit({ code: 0, signal: null, shutdown: { guest: true, reason: 'guest-shutdown' }, stderrTail: '' }).reason, 'guest-shutdown');
    assert.equal(classifyExit({ code: 0, signal: null, shutdown: { guest: false, reason: 'host-qmp-quit' }, stderrTail: '' }).reason, 'host-quit');
    assert.equal(classifyExit({ code: 0, signal: null, stderrTail: '' }).reason, 'host-quit');
  });

  it("our own SIGKILL is 'killed', anyone else's is 'crashed'", () => {
    assert.equal(classifyExit({ code: null, signal: 'SIGKILL', sentSignal: 'SIGKILL', stderrTail: '' }).reason, 'killed');
    const crash = classifyExit({ code: null, signal: 'SIGKILL', stderrTail: tail });
    assert.equal(crash.reason, 'crashed');
    assert.match(crash.detail, /something broke/);
  });

  it('no SHUTDOWN and a nonzero code or foreign signal is a crash', () => {
    assert.equal(classifyExit({ code: 1, signal: null, stderrTail: tail }).reason, 'crashed');
    assert.equal(classifyExit({ code: null, signal: 'SIGSEGV', stderrTail: '' }).reason, 'crashed');
    assert.equal(classifyExit({ code: 0, signal: null, shutdown: { guest: false, reason: 'host-error' }, stderrTail: '' }).reason, 'crashed');
    assert.equal(classifyExit({ code: 1, signal: null, shutdown: { guest: true, reason: 'guest-shutdown' }, stderrTail: '' }).reason, 'crashed');
  });

  it('an adopted process has no exit status: SHUTDOWN or our kill decide, else crashed', () => {
    assert.equal(classifyExit({ code: null, signal: null, statusUnknown: true, shutdown: { guest: true, reason: 'guest-shutdown' }, stderrTail: '' }).reason, 'guest-shutdown');
    assert.equal(classifyExit({ code: null, signal: null, statusUnknown: true, sentSignal: 'SIGKILL', stderrTail: '' }).reason, 'killed');
    assert.equal(classifyExit({ code: null, signal: null, statusUnknown: true, stderrTail: '' }).reason, 'crashed');
  });
});
