/**
 * The VM runner against real QEMU, without a guest: a blank qcow2 chain, SeaBIOS finding nothing
 * to boot. Every test kills what it started in `finally`.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { appendFile, mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { describe, it } from 'node:test';

import {
  attachVm,
  detectAccel,
  hmpQemuIo,
  QemuRunDirError,
  QemuSerialTimeoutError,
  QemuSpawnFailedError,
  QemuVmExitedError,
  QemuVmRunningError,
  startVm,
  type Vm,
} from '../src/index.ts';
import { alive, makeTestDir, skipReason, waitGone, type TestDir } from './helpers/vm-fixtures.ts';

async function withVm(fn: (vm: Vm, t: TestDir) => Promise<void>, opts: { paused?: boolean } = {}): Promise<void> {
  const t = await makeTestDir('runner', opts.paused ? { startPaused: true } : {});
  let vm: Vm | undefined;
  try {
    vm = await startVm(t.config, { runDir: t.runDir, timeoutMs: 20_000 });
    await fn(vm, t);
  } finally {
    if (vm && !vm.exit) await vm.kill();
    await t.remove();
  }
}

describe('detectAccel', () => {
  it('is kvm only with a hardware KVM module loaded and /dev/kvm openable read-write', async (t) => {
    const dir = await makeTestDir();
    t.after(() => dir.remove());
    const modules = `${dir.dir}/modules`;
    await mkdir(`${modules}/kvm_pvm`, { recursive: true });
    const device = `${dir.dir}/base.qcow2`;
    const env = {};
    assert.equal(await detectAccel({ devicePath: device, sysModuleDir: modules, env }), 'tcg', 'kvm_pvm alone runs only PVM guests');
    await mkdir(`${modules}/kvm_amd`);
    assert.equal(await detectAccel({ devicePath: device, sysModuleDir: modules, env }), 'kvm');
    assert.equal(await detectAccel({ devicePath: '/nonexistent/kvm', sysModuleDir: modules, env }), 'tcg');
    assert.equal(await detectAccel({ devicePath: device, sysModuleDir: modules, env: { ROAMDESK_ACCEL: 'tcg' } }), 'tcg');
    assert.equal(await detectAccel({ devicePath: '/nonexistent/kvm', sysModuleDir: modules, env: { ROAMDESK_ACCEL: 'kvm' } }), 'kvm');
  });
});

describe('startVm / Vm with real QEMU', { skip: skipReason }, () => {
  it('starts, answers QMP, keeps its files private, writes via qemu-io, powers down with quit fallback', async () => {
    await withVm(async (vm, t) => {
      assert.equal(vm.state, 'running');
      assert.equal(vm.activeNode, 'overlay');
      assert.equal((await vm.qmp.execute('query-status')).status, 'running');
      assert.equal((await stat(t.runDir)).mode & 0o777, 0o700);
      assert.equal((await stat(vm.paths.vnc)).mode & 0o777, 0o600);
      assert.equal(Number((await readFile(vm.paths.pid, 'utf8')).trim()), vm.pid);

      const [block] = await vm.qmp.execute('query-block');
      assert.equal(block?.qdev, '/machine/peripheral/disk0/virtio-backend');
      assert.equal(block?.inserted?.['node-name'], 'overlay');
      assert.equal(block?.inserted?.image['backing-image']?.format, 'qcow2');
      // Guest-less write I/O: qemu-io on the device's backend; its report lands in the stderr log.
      const out = await vm.qmp.execute('human-monitor-command', { 'command-line': hmpQemuIo('disk0', 'write -P 0xab 0 64k') });
      assert.equal(out, '');
      assert.match(await readFile(vm.paths.stderr, 'utf8'), /wrote 65536\/65536 bytes at offset 0/);

      // No guest handles ACPI: system_powerdown is ignored, so powerDown falls back to quit.
      const t0 = Date.now();
      const exit = await vm.powerDown({ timeoutMs: 300 });
      assert.equal(exit.reason, 'host-quit');
      assert.equal(exit.shutdownReason, 'host-qmp-quit');
      assert.equal(exit.code, 0);
      assert.ok(Date.now() - t0 < 5000);
      assert.equal(vm.state, 'stopped');
      assert.ok(!alive(vm.pid));
      assert.ok(vm.qmp.isClosed);

      await vm.cleanup();
      assert.deepEqual((await readdir(t.runDir)).sort(), ['qemu.stderr.log', 'serial.log']);
      await vm.cleanup({ logs: true });
      assert.deepEqual(await readdir(t.runDir), []);
    });
  });

  it('the writable node turns all-zero writes and discards into zero clusters: no data in the overlay', async () => {
    await withVm(async (vm, t) => {
      const io = (cmd: string) => vm.qmp.execute('human-monitor-command', { 'command-line': hmpQemuIo('disk0', cmd) });
      await io('write -P 0xab 0 1M');
      await io('write -P 0 4M 2M');
      await io('discard 0 64k');
      await vm.powerDown({ timeoutMs: 300 });
      const overlay = `${t.dir}/overlay.qcow2`;
      const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-f', 'qcow2', overlay], { encoding: 'utf8' })) as Array<{ start: number; length: number; depth: number; zero: boolean; data: boolean }>;
      const at = (offset: number) => map.find((e) => e.start <= offset && offset < e.start + e.length);
      assert.deepEqual(at(64 * 1024), { ...at(64 * 1024)!, depth: 0, data: true }, 'the 0xab write is data in the overlay');
      for (const offset of [0, 4 * 1024 * 1024, 6 * 1024 * 1024 - 1]) {
        assert.deepEqual(at(offset), { ...at(offset)!, depth: 0, zero: true, data: false }, `offset ${offset}: a zero cluster of the overlay, no data`);
      }
    });
  });

  it('tracks paused/running from -S, cont and stop', async () => {
    await withVm(
      async (vm) => {
        assert.equal(vm.state, 'paused');
        const resumed = vm.qmp.waitForEvent('RESUME', { timeoutMs: 5000 });
        await vm.qmp.execute('cont');
        await resumed;
        assert.equal(vm.state, 'running');
        const stopped = vm.qmp.waitForEvent('STOP', { timeoutMs: 5000 });
        await vm.qmp.execute('stop');
        await stopped;
        assert.equal(vm.state, 'paused');
        await assert.rejects(vm.cleanup(), QemuVmRunningError);
      },
      { paused: true },
    );
  });

  it("kill() is 'killed'; a signal we did not send is 'crashed', with stderr tail", async () => {
    await withVm(async (vm) => {
      const exit = await vm.kill();
      assert.equal(exit.reason, 'killed');
      assert.equal(exit.signal, 'SIGKILL');
      assert.equal(vm.state, 'stopped');
    });
    await withVm(async (vm) => {
      process.kill(vm.pid, 'SIGKILL'); // someone else (OOM killer, admin) killed it
      const exit = await vm.exited;
      assert.equal(exit.reason, 'crashed');
      assert.equal(vm.state, 'crashed');
    });
    await withVm(async (vm) => {
      process.kill(vm.pid, 'SIGABRT');
      const exit = await vm.exited;
      assert.equal(exit.reason, 'crashed');
      assert.equal(exit.signal, 'SIGABRT');
      assert.match(exit.detail, /unexpectedly \(signal SIGABRT\)/);
    });
  });

  it("SIGTERM from outside is a clean 'host-quit' (QEMU sends SHUTDOWN host-signal)", async () => {
    await withVm(async (vm) => {
      process.kill(vm.pid, 'SIGTERM');
      const exit = await vm.exited;
      assert.equal(exit.reason, 'host-quit');
      assert.equal(exit.shutdownReason, 'host-signal');
    });
  });

  it('waitForSerial matches, times out, and fails fast when QEMU exits', async () => {
    await withVm(async (vm) => {
      await appendFile(vm.paths.serial, 'Linux version 6.1\nFEAS: done uptime=1.23\n');
      const m = await vm.waitForSerial(/uptime=([0-9.]+)/g, { timeoutMs: 2000 });
      assert.equal(m[1], '1.23');
      assert.match(await vm.readSerial(), /FEAS: done/);
      await assert.rejects(vm.waitForSerial(/never/, { timeoutMs: 150 }), QemuSerialTimeoutError);

      const waiting = vm.waitForSerial(/never/, { timeoutMs: 30_000 });
      const t0 = Date.now();
      setTimeout(() => process.kill(vm.pid, 'SIGKILL'), 100);
      await assert.rejects(waiting, (err: unknown) => err instanceof QemuVmExitedError && err.data['reason'] === 'crashed');
      assert.ok(Date.now() - t0 < 3000, 'fails fast, not at the timeout');
    });
  });

  it('reports a start failure with the tail of stderr', async () => {
    const t = await makeTestDir();
    try {
      const config = { ...t.config, disk: { nodes: [{ nodeName: 'gone', path: `${t.dir}/missing.qcow2` }] } };
      await assert.rejects(startVm(config, { runDir: t.runDir }), (err: unknown) => {
        assert.ok(err instanceof QemuVmExitedError);
        assert.equal(err.code, 'QEMU_ERR_VM_EXITED');
        assert.match(String(err.data['stderrTail']), /missing\.qcow2/);
        return true;
      });
      await assert.rejects(startVm(t.config, { runDir: t.runDir, qemuBinary: 'qemu-system-nonexistent' }), (err: unknown) => {
        assert.ok(err instanceof QemuSpawnFailedError);
        assert.match(err.message, /apt-get install .*qemu-system-x86/);
        return true;
      });
    } finally {
      await t.remove();
    }
  });

  it('refuses a run dir that a live VM uses', async () => {
    await withVm(async (vm, t) => {
      await assert.rejects(startVm(t.config, { runDir: t.runDir }), (err: unknown) => err instanceof QemuRunDirError && err.data['pid'] === vm.pid);
    });
  });
});

/** Runs helpers/start-vm-child.ts and resolves with the QEMU pid it printed. */
function startInChild(lifetime: 'owner' | 'detached', t: TestDir): Promise<{ childPid: number; qemuPid: number; kill: () => void }> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', new URL('./helpers/start-vm-child.ts', import.meta.url).pathname, lifetime, JSON.stringify(t.config), t.runDir],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) {
        resolve({ childPid: child.pid!, qemuPid: (JSON.parse(line) as { pid: number }).pid, kill: () => child.kill('SIGKILL') });
      }
    });
    child.once('exit', (code) => reject(new Error(`child exited (${String(code)}) before starting the VM`)));
  });
}

describe('VM lifetime', { skip: skipReason }, () => {
  it("'owner': QEMU dies when its owner is SIGKILLed", async () => {
    const t = await makeTestDir('owned');
    let qemuPid: number | undefined;
    try {
      const started = await startInChild('owner', t);
      qemuPid = started.qemuPid;
      assert.ok(alive(qemuPid));
      started.kill();
      assert.ok(await waitGone(qemuPid, 5000), 'QEMU outlived its owner');
    } finally {
      // Only if the test failed: kill that exact pid, after checking it is our QEMU.
      if (qemuPid !== undefined && alive(qemuPid)) {
        const cmd = await readFile(`/proc/${qemuPid}/cmdline`, 'utf8').catch(() => '');
        if (cmd.includes(t.runDir)) process.kill(qemuPid, 'SIGKILL');
      }
      await t.remove();
    }
  });

  it("'detached': QEMU survives its owner; attachVm re-adopts it, and returns null once it is gone", async () => {
    const t = await makeTestDir('detached');
    let qemuPid: number | undefined;
    try {
      const started = await startInChild('detached', t);
      qemuPid = started.qemuPid;
      started.kill();
      await new Promise((r) => setTimeout(r, 500));
      assert.ok(alive(qemuPid), 'a detached QEMU survives its owner');

      const vm = await attachVm(t.runDir);
      assert.ok(vm);
      assert.equal(vm.pid, qemuPid);
      assert.equal(vm.activeNode, 'overlay');
      assert.equal(vm.name, 'detached');
      assert.equal(vm.state, 'running');
      assert.equal((await vm.qmp.execute('query-status')).status, 'running');
      const exit = await vm.kill();
      assert.equal(exit.reason, 'killed');
      assert.ok(await waitGone(qemuPid, 5000));

      assert.equal(await attachVm(t.runDir), null);
      assert.deepEqual((await readdir(t.runDir)).sort(), ['qemu.stderr.log', 'serial.log'], 'stale sockets and pidfile removed');
    } finally {
      if (qemuPid !== undefined && alive(qemuPid)) {
        const cmd = await readFile(`/proc/${qemuPid}/cmdline`, 'utf8').catch(() => '');
        if (cmd.includes(t.runDir)) process.kill(qemuPid, 'SIGKILL');
      }
      await t.remove();
    }
  });
});
