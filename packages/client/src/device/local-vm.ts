// The local VM of a checked-out desktop: QEMU on the local chain (image + layers + the local overlay), run
// files in `<ROAMDESK_HOME>/vms/<desktop id>/` (0700; QMP and VNC on UNIX sockets there, VNC 0600).
//
// The VM is started `detached`, so it outlives the `roamdesk start` that launched it; later commands find it by
// its pidfile and QMP socket (the pid must be a QEMU serving this run dir's socket, so a recycled pid is never
// mistaken for it). They talk QMP directly and let go: no command keeps a watcher alive, so the CLI exits.
//
// A window when a display exists (DISPLAY or WAYLAND_DISPLAY; ROAMDESK_DISPLAY=none|gtk|sdl overrides),
// otherwise headless with VNC on the socket only (`roamdesk console NAME` serves a local noVNC page for it).

import { access, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { isUuid } from '@roamdesk/api/core';
import { detectAccel, isQemuFor, isRunning, MAX_SOCKET_PATH_BYTES, queryPause, readPidFile, RESUME_MIN_FREE_BYTES, readTail, runPaths, socketPathExcess, startVm, type DisplayKind, type VmConfig, type VmPause, type VmPaths } from '@roamdesk/qemu';
import { QmpClient } from '@roamdesk/qmp';
import { formatMB, freeSpace, type Store } from '@roamdesk/store';

import { DeviceError } from './errors.ts';
import type { LocalDesktop } from './records.ts';

export const VMS_DIR = 'vms';
/** The qdev id of the disk (buildQemuArgs' default), used to find the active node for live sealing. */
export const DISK_DEVICE = 'disk0';

export interface LocalVmInfo {
  running: boolean;
  /** The display the VM was started with (start only; 'none' = VNC only). */
  display?: DisplayKind;
  pid: number | null;
  runDir: string;
  paths: VmPaths;
}

export function localRunDir(home: string, desktopId: string): string {
  if (!isUuid(desktopId)) throw new DeviceError('DEVICE_ERR_STATE_INVALID', 'desktop id is not a UUID', { desktopId: String(desktopId).slice(0, 80) });
  return join(home, VMS_DIR, desktopId);
}

/** Which display the local VM gets. */
export function chooseDisplay(env: Readonly<Record<string, string | undefined>> = process.env): DisplayKind {
  const forced = env['ROAMDESK_DISPLAY'];
  if (forced === 'none' || forced === 'gtk' || forced === 'sdl') return forced;
  const has = (k: string): boolean => (env[k] ?? '') !== '';
  return has('DISPLAY') || has('WAYLAND_DISPLAY') ? 'gtk' : 'none';
}

export async function localVm(home: string, desktopId: string): Promise<LocalVmInfo> {
  const runDir = localRunDir(home, desktopId);
  const paths = runPaths(runDir);
  const pid = await readPidFile(paths.pid);
  if (pid !== null && (await isQemuFor(pid, paths.qmp))) return { running: true, pid, runDir, paths };
  return { running: false, pid: null, runDir, paths };
}

/** A pause of the running local VM, with the space left where its disk files are (the store's objects/). */
export interface LocalVmPause extends VmPause {
  dir: string;
  /** null when the filesystem cannot say. */
  freeBytes: number | null;
  /** What to do, in words. */
  hint: string;
}

/**
 * Why the running local VM is paused (args.ts: a disk error pauses it), or null when it runs on. Null too when QMP
 * does not answer within a few seconds (another command may hold it): status must not hang on a busy VM.
 */
export async function localVmPause(name: string, vm: LocalVmInfo, objectsDir: string): Promise<LocalVmPause | null> {
  if (!vm.running) return null;
  const qmp = await QmpClient.connect(vm.paths.qmp, { timeoutMs: 3000 }).catch(() => null);
  if (qmp === null) return null;
  let pause: VmPause | null;
  try {
    pause = await queryPause(qmp, { timeoutMs: 3000 }).catch(() => null);
  } finally {
    await qmp.close().catch(() => undefined);
  }
  if (pause === null) return null;
  const freeBytes = await freeSpace(objectsDir);
  const resume = `roamdesk start ${name}`;
  const hint = pause.reason === 'no-space'
    ? `the disk holding ${objectsDir} is full (${freeBytes === null ? 'free space unknown' : `${formatMB(freeBytes)} free`}): free at least ${formatMB(RESUME_MIN_FREE_BYTES)} there, then run ${resume}; the guest resumes where it stopped and its pending writes are kept`
    : pause.reason === 'disk-error'
      ? `the disk holding ${objectsDir} reported an I/O error (see the kernel log: dmesg); once it is fixed, ${resume} retries the write`
      : `${resume} resumes it`;
  return { ...pause, dir: objectsDir, freeBytes, hint };
}

/**
 * `roamdesk start` on a paused local VM: resume it (QMP cont: QEMU retries the requests that failed). A full disk
 * that is still full is refused, and nothing changes.
 */
export async function resumeLocalVm(name: string, vm: LocalVmInfo, pause: LocalVmPause): Promise<void> {
  if (pause.reason === 'no-space' && pause.freeBytes !== null && pause.freeBytes < RESUME_MIN_FREE_BYTES) {
    throw new DeviceError('DEVICE_ERR_NO_SPACE', `the local VM of ${name} stays paused: ${pause.dir} has ${formatMB(pause.freeBytes)} free, less than the ${formatMB(RESUME_MIN_FREE_BYTES)} it needs to go on`, {
      desktop: name, dir: pause.dir, freeBytes: pause.freeBytes, neededBytes: RESUME_MIN_FREE_BYTES, hint: pause.hint,
    });
  }
  const qmp = await QmpClient.connect(vm.paths.qmp, { timeoutMs: 10_000 });
  try {
    await qmp.execute('cont', undefined, { timeoutMs: 10_000 });
  } finally {
    await qmp.close().catch(() => undefined);
  }
}

/**
 * A graceful stop (and so a check-in) of a VM that a disk error paused is refused: the paused guest cannot see the
 * power button, and the writes it is waiting on would be lost. Free the space and resume it first, or force the stop.
 * `only: 'no-space'`: refuse for a full disk only (a replication's live seal needs room for a new overlay).
 */
export async function refuseDiskPause(name: string, vm: LocalVmInfo, objectsDir: string, action: string, opts: { only?: 'no-space' } = {}): Promise<void> {
  const pause = await localVmPause(name, vm, objectsDir);
  if (pause === null || pause.reason === 'paused' || (opts.only !== undefined && pause.reason !== opts.only)) return;
  const what = pause.reason === 'no-space' ? `its disk is full (${pause.dir})` : `its disk reported an I/O error (${pause.dir})`;
  // Only a stop (and a check-in, which stops) has the forced way out.
  const force = opts.only === undefined ? `; or power it off now, losing those writes as a power cut would: roamdesk stop ${name} --force` : '';
  throw new DeviceError('DEVICE_ERR_VM_PAUSED', `cannot ${action}: the local VM of ${name} is paused because ${what}, and its last writes are waiting`, {
    desktop: name, reason: pause.reason, dir: pause.dir, freeBytes: pause.freeBytes, hint: `${pause.hint}${force}`,
  });
}

/** The serial console log of the last (or current) local VM. */
export async function localSerialLog(home: string, desktopId: string, tailBytes: number): Promise<string> {
  const { paths } = await localVm(home, desktopId);
  try {
    return await readTail(paths.serial, tailBytes);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

export interface StartLocalOptions {
  display?: DisplayKind;
  timeoutMs?: number;
  /** Replace the kernel command line (tests choose the guest workload with it). */
  append?: string;
}

export async function startLocalVm(home: string, store: Store, rec: LocalDesktop, opts: StartLocalOptions = {}): Promise<LocalVmInfo> {
  const current = await localVm(home, rec.desktopId);
  if (current.running) {
    throw new DeviceError('DEVICE_ERR_VM_RUNNING', `the local VM of ${rec.name} is already running (pid ${String(current.pid)})`, {
      desktop: rec.name, pid: current.pid, hint: `roamdesk console ${rec.name} opens its screen`,
    });
  }
  const excess = socketPathExcess(current.runDir);
  if (excess > 0) {
    throw new DeviceError('DEVICE_ERR_VM_CONFIG', `ROAMDESK_HOME ${home} is ${excess} byte${excess === 1 ? '' : 's'} too long for the local VM's UNIX sockets (${MAX_SOCKET_PATH_BYTES} bytes at most)`, {
      desktop: rec.name, home, hint: 'set ROAMDESK_HOME to a shorter path (and move its contents there)',
    });
  }
  if (rec.overlay === null) throw new DeviceError('DEVICE_ERR_LEASE_STATE', `desktop ${rec.name} has no local overlay yet`, { desktop: rec.name, hint: `finish the check-out: roamdesk checkout ${rec.name}` });
  const c = rec.config;
  for (const f of [c.kernel, c.initrd]) {
    if (f !== null && !(await access(f).then(() => true, () => false))) {
      throw new DeviceError('DEVICE_ERR_VM_CONFIG', `the desktop boots the kernel file ${f}, which this machine does not have`, {
        desktop: rec.name, file: f, hint: 'copy the kernel and initrd to the same paths on this machine',
      });
    }
  }
  const append = opts.append ?? c.append;
  const display = opts.display ?? chooseDisplay();
  const config: VmConfig = {
    name: `roamdesk-${rec.desktopId}`,
    memoryMiB: c.memoryMiB,
    cpus: c.cpus,
    accel: await detectAccel(),
    disk: { nodes: await store.diskNodes(rec.overlay), deviceId: DISK_DEVICE },
    display,
    noReboot: true,
    ...(c.kernel !== null ? { kernel: { path: c.kernel, ...(c.initrd !== null ? { initrd: c.initrd } : {}), ...(append !== null ? { append } : {}) } } : {}),
  };
  await mkdir(join(home, VMS_DIR), { recursive: true, mode: 0o700 });
  // The previous run's serial log would otherwise be appended to (QEMU opens it for writing): start clean.
  await rm(current.paths.serial, { force: true });
  const start = (cfg: VmConfig) => startVm(cfg, { runDir: current.runDir, lifetime: 'detached', timeoutMs: opts.timeoutMs ?? 60_000 });
  let vm;
  let used = display;
  try {
    vm = await start(config);
  } catch (err) {
    // A display without QEMU's UI module (Debian: qemu-system-gui not installed) or a display QEMU cannot
    // open: the desktop still starts, headless, with its screen on VNC (roamdesk console NAME).
    const raw = (err as { data?: { stderrTail?: unknown } }).data?.stderrTail;
    const tail = typeof raw === 'string' ? raw : '';
    if (display === 'none' || opts.display !== undefined || !/display|module ui|gtk|sdl|cannot open/i.test(tail)) throw err;
    used = 'none';
    await rm(current.paths.serial, { force: true });
    vm = await start({ ...config, display: 'none' });
  }
  await vm.qmp.close().catch(() => undefined);
  return { running: true, display: used, pid: vm.pid, runDir: current.runDir, paths: current.paths };
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await isRunning(pid))) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !(await isRunning(pid));
}

export interface StopResult {
  wasRunning: boolean;
  /** 'powerdown': the guest shut down; 'quit'/'killed': forced after the timeout. */
  how: 'not-running' | 'powerdown' | 'quit' | 'killed';
}

/** Graceful ACPI power-down; after `timeoutMs` QMP quit, then SIGKILL of exactly this pid (unless force is false). */
export async function stopLocalVm(home: string, desktopId: string, opts: { timeoutMs?: number; force?: boolean } = {}): Promise<StopResult> {
  const vm = await localVm(home, desktopId);
  if (!vm.running || vm.pid === null) return { wasRunning: false, how: 'not-running' };
  const pid = vm.pid;
  let how: StopResult['how'] = 'powerdown';
  const qmp = await QmpClient.connect(vm.paths.qmp, { timeoutMs: 10_000 }).catch(() => null);
  try {
    // A guest paused on request would not see the power button until it runs again.
    if (opts.timeoutMs !== 0 && qmp !== null && (await queryPause(qmp).catch(() => null))?.reason === 'paused') {
      await qmp.execute('cont', undefined, { timeoutMs: 5000 }).catch(() => undefined);
    }
    await qmp?.execute('system_powerdown', undefined, { timeoutMs: 5000 }).catch(() => undefined);
    if (!(await waitGone(pid, opts.timeoutMs ?? 60_000))) {
      if (opts.force === false) {
        throw new DeviceError('DEVICE_ERR_VM_RUNNING', `the local VM did not power down within ${opts.timeoutMs ?? 60_000} ms`, { pid });
      }
      how = 'quit';
      await qmp?.execute('quit', undefined, { timeoutMs: 5000 }).catch(() => undefined);
      if (!(await waitGone(pid, 10_000))) {
        how = 'killed';
        if (await isQemuFor(pid, vm.paths.qmp)) process.kill(pid, 'SIGKILL');
        await waitGone(pid, 10_000);
      }
    }
  } finally {
    await qmp?.close().catch(() => undefined);
  }
  await cleanRunFiles(vm.paths);
  return { wasRunning: true, how };
}

/** Sockets, pidfile and vm.json of a VM that is gone; the serial log stays for `roamdesk logs`. */
export async function cleanRunFiles(paths: VmPaths): Promise<void> {
  for (const f of [paths.qmp, paths.vnc, paths.pid, paths.spec]) await rm(f, { force: true });
}

/** Remove the whole run dir (after check-in or quarantine), when no VM runs. */
export async function removeRunDir(home: string, desktopId: string): Promise<void> {
  const vm = await localVm(home, desktopId);
  if (vm.running) throw new DeviceError('DEVICE_ERR_VM_RUNNING', 'the local VM runs', { pid: vm.pid });
  await rm(vm.runDir, { recursive: true, force: true });
}

/** Run `fn` with a QMP connection to the running local VM and the node its disk writes to now. */
export async function withLocalQmp<T>(home: string, desktopId: string, fn: (qmp: QmpClient, activeNode: string) => Promise<T>): Promise<T> {
  const vm = await localVm(home, desktopId);
  if (!vm.running) throw new DeviceError('DEVICE_ERR_VM_NOT_RUNNING', 'the local VM does not run', {});
  const qmp = await QmpClient.connect(vm.paths.qmp, { timeoutMs: 10_000 });
  try {
    const blocks = await qmp.execute('query-block');
    const disk = blocks.find((b) => b.qdev?.includes(`/peripheral/${DISK_DEVICE}/`) === true || b.qdev === DISK_DEVICE);
    const node = disk?.inserted?.['node-name'];
    if (node === undefined) throw new DeviceError('DEVICE_ERR_VM_CONFIG', `the local VM has no ${DISK_DEVICE} disk`, {});
    return await fn(qmp, node);
  } finally {
    await qmp.close().catch(() => undefined);
  }
}
