/**
 * Check-out of a desktop whose VM is running: what the end-to-end scenarios of roamdesk-lease.ts leave out (their
 * desktop never ran). Issue 5 wants every non-transfer phase under a second "plus the guest's own shutdown", so
 * this group measures both sides of that sentence with the tiny guest under TCG (`idle` workload, booted untimed):
 * - the guest's own shutdown: `POST /desktops/bench/stop` (ACPI power button, the guest powers off, QEMU exits);
 * - the check-out of the same running desktop, per DeviceAgent step: the server's claim, stop and seal is the
 *   `checkout` step, so `checkout` minus the stop above is what Roamdesk adds.
 * Each run gets a fresh server (a `roamdesk server` process) and device; every QEMU under the run's data dir is
 * killed in teardown, whatever happened.
 */
import { join } from 'node:path';

import { findGuest, guestAppend, type GuestBuild } from '@roamdesk/cli';
import { DeviceAgent } from '@roamdesk/client';
import { findQemuProcesses } from '@roamdesk/server';

import { startMeter } from './cpu.ts';
import type { ManagedProcess } from './exec.ts';
import { startServer } from './roamdesk.ts';
import { api, phases, stepTimer } from './roamdesk-lease.ts';
import type { RunContext, RunResult, Scenario } from './scenario.ts';

interface Running {
  readonly server: ManagedProcess;
  readonly url: string;
  readonly token: string;
  /** Where the server runs its VMs (under the path it was given: QEMU's argv names it). */
  readonly vmsDir: string;
  readonly agent: DeviceAgent;
}

const BOOT_TIMEOUT_MS = 120_000;

/** A fresh server whose desktop "bench" (the tiny guest, idle) runs and has finished booting; a registered device. */
async function runningDesktop(ctx: RunContext, guest: GuestBuild): Promise<Running> {
  const dataDir = join(ctx.runDir, 'server');
  const s = await startServer(dataDir);
  const url = s.remote.apiBase.replace(/\/api\/v1$/, '');
  const call = (method: string, path: string, body?: unknown) => api(url, s.remote.token, method, path, body);
  await call('POST', '/images', { name: 'guest', path: guest.disk, format: 'qcow2' });
  await call('POST', '/desktops', {
    name: 'bench', owner: 'admin', image: 'guest', memoryMiB: 256, cpus: 1, kernel: guest.vmlinuz, initrd: guest.initrd, append: guestAppend(guest, 'idle'),
  });
  await call('POST', '/desktops/bench/start');
  // Until the guest says it idles: its ACPI handler is up, so a power-button press is answered (not ignored mid-boot).
  const deadline = Date.now() + BOOT_TIMEOUT_MS;
  for (;;) {
    const r = await fetch(`${url}/api/v1/desktops/bench/log?tail=65536`, { headers: { authorization: `Bearer ${s.remote.token}` } });
    if (r.ok && /ROAMDESK idle/.test(await r.text())) break;
    if (Date.now() > deadline) throw new Error(`the guest did not reach idle within ${BOOT_TIMEOUT_MS / 1000} s`);
    await new Promise((res) => setTimeout(res, 200));
  }
  const agent = new DeviceAgent({ home: join(ctx.runDir, 'device'), session: { server: url, token: s.remote.token } });
  await agent.register({ name: 'bench' });
  return { server: s.proc, url, token: s.remote.token, vmsDir: join(s.servedDataDir, 'vms'), agent };
}

function runningScenario(kind: 'stop' | 'checkout'): Scenario {
  let guest: GuestBuild | undefined;
  let running: Running | undefined;
  return {
    name: kind === 'stop' ? 'stop of the running desktop (the guest\'s own shutdown)' : 'roamdesk check-out of the running desktop',
    group: 'checkout-running',
    description: kind === 'stop'
      ? 'POST /desktops/bench/stop: ACPI power button, the idle tiny guest powers off, QEMU exits (what any stop costs)'
      : 'DeviceAgent.checkout of the same running desktop: the server stops the VM, seals its overlay and moves the lease; the device fetches the chain, verifies, makes its overlay, confirms',
    cache: 'warm',
    async prepare() {
      guest = await findGuest();
    },
    async setup(ctx) {
      if (guest === undefined) throw new Error('not prepared');
      running = await runningDesktop(ctx, guest);
    },
    async run(): Promise<RunResult> {
      if (running === undefined) throw new Error('not set up');
      const meter = startMeter({ pids: [running.server.pid] });
      if (kind === 'stop') {
        await api(running.url, running.token, 'POST', '/desktops/bench/stop');
        const m = await meter.stop();
        return { ...m, changedBytes: 0, bytesWritten: 0, bytesRead: 0, bytesOnWire: 0 };
      }
      const timer = stepTimer();
      const out = await running.agent.checkout('bench', { onProgress: timer.onProgress });
      const steps = timer.finish();
      const m = await meter.stop();
      const moved = out.download?.bytesTransferred ?? 0;
      return { ...m, changedBytes: 0, bytesWritten: moved, bytesRead: moved, bytesOnWire: out.download?.bytesOnWire ?? 0, phases: phases(m.seconds, out.download?.seconds, steps) };
    },
    async verify() {
      if (running === undefined) return;
      const d = (await api(running.url, running.token, 'GET', '/desktops/bench')) as { desktop: { state: string } };
      if (d.desktop.state !== 'stopped') throw new Error(`the server's VM is ${d.desktop.state} after the run, not stopped`);
      const l = (await api(running.url, running.token, 'GET', '/desktops/bench/lease')) as { lease: { state: string } };
      const want = kind === 'stop' ? 'server' : 'checked-out';
      if (l.lease.state !== want) throw new Error(`the lease is ${l.lease.state} after the run, not ${want}`);
    },
    async teardown() {
      if (running === undefined) return;
      await running.server.stop();
      // VMs outlive their server (detached): none may outlive the run.
      for (const q of await findQemuProcesses(running.vmsDir)) {
        try {
          process.kill(q.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      running = undefined;
    },
  };
}

export function runningDesktopScenarios(): Scenario[] {
  return [runningScenario('stop'), runningScenario('checkout')];
}
