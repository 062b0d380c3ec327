// The real DesktopRuntime: each desktop is a QEMU started by @roamdesk/qemu on its store chain
// (image + layers + the desktop's store overlay), with its run files in `<data>/vms/<desktop-id>/`.
//
// VMs are started `detached`: they outlive the server process, so a server restart or upgrade does not
// power users' desktops off. The next server re-adopts them in reconcile() (attachVm). Everything QEMU-shaped
// that belongs to our vms/ directory and that no desktop owns is killed there: no orphan QEMU survives a start.

import { mkdir, open, readdir, rm, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { isUuid, type DesktopPause } from '@roamdesk/api';
import { attachVm, detectAccel, queryPause, readTail, RESUME_MIN_FREE_BYTES, runPaths, startVm, type Accel, type VmConfig, type VmExit, type Vm } from '@roamdesk/qemu';
import { formatMB, freeSpace, type Overlay, type Store } from '@roamdesk/store';
import type { DesktopRuntime, RuntimeDesktop, RuntimeStatus } from '../ports.ts';
import { RuntimeDesktopRunningError, RuntimeError, RuntimeOverlayMissingError } from './errors.ts';
import { exists } from './files.ts';
import { findQemuProcesses, killOrphan } from './proc-scan.ts';

export interface QemuRuntimeOptions {
  store: Store;
  /** `<data>/vms`: one run dir per desktop id. */
  vmsDir: string;
  /** Where exports are staged (same filesystem as the data; emptied at server start): `<data>/uploads`. */
  tmpDir: string;
  /** QEMU start deadline. TCG on a busy host is slow to bring QMP up. */
  startTimeoutMs?: number;
  accel?: Accel;
  /** How often a VM that a full disk paused checks for room to resume by itself. Default 5000 ms. */
  autoResumePollMs?: number;
}

type ExitListener = (desktopId: string, status: RuntimeStatus) => void;
type PauseListener = (desktopId: string, pause: DesktopPause | null, info: { auto: boolean; freeBytes: number | null }) => void;

/**
 * A VM a full disk paused resumes by itself once the store's disk has this much free: more than a manual resume
 * needs, so a disk that hovers near full does not make the guest stop and go every few seconds.
 */
export const AUTO_RESUME_MIN_FREE_BYTES = 4 * RESUME_MIN_FREE_BYTES;

/** What a VM's end means for its desktop: only a crash is an error worth showing. */
export function statusOfExit(exit: VmExit): RuntimeStatus {
  return exit.reason === 'crashed' ? { state: 'error', detail: `QEMU crashed: ${exit.detail}` } : { state: 'stopped' };
}

export class QemuRuntime implements DesktopRuntime {
  readonly #store: Store;
  readonly #vmsDir: string;
  readonly #tmpDir: string;
  readonly #startTimeoutMs: number;
  #accel: Promise<Accel> | undefined;
  /** Live VMs by desktop id (started here or adopted). */
  readonly #vms = new Map<string, Vm>();
  /** How the last VM of a desktop ended, when that was a crash (so status() can say why). */
  readonly #lastExit = new Map<string, RuntimeStatus>();
  /** Desktops being stopped on request: their exit is not news for the listeners. */
  readonly #stopping = new Set<string>();
  readonly #listeners = new Set<ExitListener>();
  /** VMs paused now (from their STOP/RESUME events), with the timer of a full disk's auto-resume. */
  readonly #paused = new Map<string, { pause: DesktopPause; timer?: NodeJS.Timeout }>();
  /** Desktops this runtime resumed by itself (so the RESUME that follows is reported as automatic). */
  readonly #autoResumed = new Set<string>();
  readonly #pauseListeners = new Set<PauseListener>();
  readonly #autoResumePollMs: number;
  #closed = false;

  constructor(options: QemuRuntimeOptions) {
    this.#store = options.store;
    this.#vmsDir = resolve(options.vmsDir);
    this.#tmpDir = resolve(options.tmpDir);
    this.#startTimeoutMs = options.startTimeoutMs ?? 60_000;
    this.#autoResumePollMs = options.autoResumePollMs ?? 5000;
    if (options.accel !== undefined) this.#accel = Promise.resolve(options.accel);
  }

  /** The run dir of a desktop, re-derived from its id: the runtime never trusts a path it did not build. */
  #runDir(d: RuntimeDesktop): string {
    if (!isUuid(d.id)) throw new RangeError('desktop id is not a UUID');
    return join(this.#vmsDir, d.id);
  }

  #live(id: string): Vm | undefined {
    const vm = this.#vms.get(id);
    return vm !== undefined && vm.exit === null ? vm : undefined;
  }

  /** Track a VM: when it ends, forget it, drop its sockets and tell the listeners (unless we stopped it). */
  #track(id: string, vm: Vm): void {
    this.#vms.set(id, vm);
    this.#lastExit.delete(id);
    const off = vm.qmp.onEvent((e) => {
      if (e.event === 'STOP' || e.event === 'RESUME') void this.#pauseChanged(id, vm);
    });
    // Adopted paused (a server restart while the disk was full): the events were before our time.
    void this.#pauseChanged(id, vm);
    void vm.exited.then(async (exit) => {
      off();
      this.#clearPause(id);
      this.#autoResumed.delete(id);
      if (this.#vms.get(id) !== vm) return;
      // Decided now, synchronously: stop() clears its mark once it has seen the exit too.
      const news = !this.#closed && !this.#stopping.has(id);
      this.#vms.delete(id);
      const status = statusOfExit(exit);
      if (status.state === 'error') this.#lastExit.set(id, status);
      await vm.cleanup().catch(() => {}); // sockets/pidfile only; the serial log stays readable
      if (news) for (const l of this.#listeners) l(id, status);
    });
  }

  onPause(listener: PauseListener): () => void {
    this.#pauseListeners.add(listener);
    return () => this.#pauseListeners.delete(listener);
  }

  paused(desktopId: string): DesktopPause | null {
    return this.#paused.get(desktopId)?.pause ?? null;
  }

  /**
   * QMP cont. A VM a full disk paused is resumed only when the disk has room (RESUME_MIN_FREE_BYTES): else NO_SPACE
   * and it stays paused. Resuming a VM that runs is not an error.
   */
  async resume(d: RuntimeDesktop): Promise<void> {
    const vm = this.#live(d.id);
    if (vm === undefined) return;
    if (this.#paused.get(d.id)?.pause.reason === 'no-space') {
      const free = await freeSpace(this.#store.objectsDir);
      if (free !== null && free < RESUME_MIN_FREE_BYTES) {
        throw new RuntimeError('NO_SPACE', `the disk holding ${this.#store.objectsDir} has ${formatMB(free)} free, less than the ${formatMB(RESUME_MIN_FREE_BYTES)} the desktop needs to go on`, {
          path: this.#store.objectsDir, free, needed: RESUME_MIN_FREE_BYTES,
          hint: `free space there; the server resumes the desktop by itself once ${formatMB(AUTO_RESUME_MIN_FREE_BYTES)} are free`,
        });
      }
    }
    await vm.qmp.execute('cont', undefined, { timeoutMs: 10_000 });
  }

  /** After a STOP or RESUME (or an adoption): ask the VM why it is paused, and tell the listeners what changed. */
  async #pauseChanged(id: string, vm: Vm): Promise<void> {
    const pause = await queryPause(vm.qmp).catch(() => null);
    if (this.#vms.get(id) !== vm || vm.exit !== null) return;
    const was = this.#paused.get(id);
    if (pause === null) {
      if (was === undefined) return;
      this.#clearPause(id);
      const auto = this.#autoResumed.delete(id);
      for (const l of this.#pauseListeners) l(id, null, { auto, freeBytes: await freeSpace(this.#store.objectsDir) });
      return;
    }
    if (was?.pause.reason === pause.reason) return;
    this.#clearPause(id);
    const entry: { pause: DesktopPause; timer?: NodeJS.Timeout } = { pause: { reason: pause.reason, since: new Date().toISOString() } };
    if (pause.reason === 'no-space') entry.timer = setInterval(() => void this.#autoResume(id, vm), this.#autoResumePollMs).unref();
    this.#paused.set(id, entry);
    const freeBytes = await freeSpace(this.#store.objectsDir);
    for (const l of this.#pauseListeners) l(id, entry.pause, { auto: false, freeBytes });
  }

  #clearPause(id: string): void {
    clearInterval(this.#paused.get(id)?.timer);
    this.#paused.delete(id);
  }

  /** A VM a full disk paused goes on by itself once there is room (the guest never saw an error: nothing is lost). */
  async #autoResume(id: string, vm: Vm): Promise<void> {
    if (this.#closed || this.#autoResumed.has(id) || this.#paused.get(id)?.pause.reason !== 'no-space') return;
    const free = await freeSpace(this.#store.objectsDir);
    if (free === null || free < AUTO_RESUME_MIN_FREE_BYTES) return;
    this.#autoResumed.add(id);
    // A failed cont (QMP gone: QEMU exiting) is retried at the next poll, if the VM is still there.
    await vm.qmp.execute('cont', undefined, { timeoutMs: 10_000 }).catch(() => this.#autoResumed.delete(id));
  }

  onExit(listener: ExitListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async start(d: RuntimeDesktop): Promise<void> {
    const runDir = this.#runDir(d);
    const running = this.#live(d.id);
    if (running !== undefined) throw new RuntimeDesktopRunningError(d.id, running.pid);
    // Creating a fresh overlay here would boot an empty disk in place of the user's: refuse instead.
    if (d.overlayPath === null || !(await exists(d.overlayPath))) throw new RuntimeOverlayMissingError(d.id, d.overlayPath);
    const overlay: Overlay = { path: d.overlayPath, parent: d.topObjectId };
    const config: VmConfig = {
      name: `roamdesk-${d.id}`,
      memoryMiB: d.memoryMiB,
      cpus: d.cpus,
      accel: await (this.#accel ??= detectAccel()),
      disk: { nodes: await this.#store.diskNodes(overlay) },
      // A guest reboot ends the VM (state 'stopped'): a desktop that reboots in a loop must not spin forever.
      noReboot: true,
      ...(d.kernel !== null
        ? { kernel: { path: d.kernel, ...(d.initrd !== null ? { initrd: d.initrd } : {}), ...(d.append !== null ? { append: d.append } : {}) } }
        : {}),
    };
    await mkdir(this.#vmsDir, { recursive: true, mode: 0o700 });
    this.#stopping.delete(d.id);
    const vm = await startVm(config, { runDir, lifetime: 'detached', timeoutMs: this.#startTimeoutMs });
    this.#track(d.id, vm);
  }

  async stop(d: RuntimeDesktop, options: { timeoutMs: number }): Promise<void> {
    const vm = this.#live(d.id) ?? (await this.#attach(d.id));
    if (vm === undefined) return;
    this.#stopping.add(d.id);
    try {
      await vm.powerDown({ timeoutMs: options.timeoutMs });
      await vm.exited;
      await vm.cleanup().catch(() => {});
    } finally {
      this.#stopping.delete(d.id);
    }
  }

  status(d: RuntimeDesktop): Promise<RuntimeStatus> {
    if (this.#live(d.id) !== undefined) return Promise.resolve({ state: 'running' });
    return Promise.resolve(this.#lastExit.get(d.id) ?? { state: 'stopped' });
  }

  async serialLog(d: RuntimeDesktop, tailBytes: number): Promise<string> {
    return readTail(runPaths(this.#runDir(d)).serial, tailBytes);
  }

  consoleSocket(d: RuntimeDesktop): Promise<string | null> {
    return Promise.resolve(this.#live(d.id)?.paths.vnc ?? null);
  }

  async export(d: RuntimeDesktop): Promise<Readable> {
    const running = this.#live(d.id);
    // qemu-img must never read a chain a running VM writes to (reliability.md R9).
    if (running !== undefined) throw new RuntimeDesktopRunningError(d.id, running.pid);
    const top: string | Overlay = d.overlayPath === null ? d.topObjectId : { path: d.overlayPath, parent: d.topObjectId };
    await mkdir(this.#tmpDir, { recursive: true, mode: 0o700 });
    const tmp = join(this.#tmpDir, `export-${randomBytes(8).toString('hex')}.qcow2`);
    try {
      await this.#store.exportChain(top, tmp);
      const fh = await open(tmp, 'r');
      // Unlinked while open: the bytes live until the stream closes, and nothing is left behind if the
      // client goes away mid-download or the server dies.
      await unlink(tmp);
      return fh.createReadStream();
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  async remove(d: RuntimeDesktop): Promise<void> {
    const vm = this.#live(d.id) ?? (await this.#attach(d.id));
    if (vm !== undefined) {
      // The API deletes only stopped desktops; a VM here is a leftover and must not keep the overlay open.
      this.#stopping.add(d.id);
      await vm.kill();
      this.#stopping.delete(d.id);
    }
    this.#vms.delete(d.id);
    this.#lastExit.delete(d.id);
    await rm(this.#runDir(d), { recursive: true, force: true });
    if (d.overlayPath !== null) await this.#store.discardOverlay({ path: d.overlayPath, parent: d.topObjectId });
  }

  async reconcile(desktops: readonly RuntimeDesktop[]): Promise<ReadonlyMap<string, RuntimeStatus>> {
    const known = new Set(desktops.map((d) => d.id));
    const result = new Map<string, RuntimeStatus>();
    let entries: string[] = [];
    try {
      entries = await readdir(this.#vmsDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    // 1. Run dirs with a pidfile: re-adopt what a desktop owns, kill the rest (deleted or checked-out desktops).
    for (const id of entries.filter(isUuid)) {
      let vm: Vm | undefined;
      try {
        vm = this.#live(id) ?? (await this.#attach(id));
      } catch (err) {
        // QEMU is there but QMP does not answer: it cannot be driven, so step 2 kills it.
        result.set(id, { state: 'error', detail: `could not re-adopt the VM: ${(err as Error).message}; it was killed` });
        continue;
      }
      if (vm === undefined) continue;
      if (known.has(id)) {
        result.set(id, { state: 'running' });
      } else {
        this.#stopping.add(id);
        await vm.kill();
        await vm.cleanup().catch(() => {});
        this.#stopping.delete(id);
      }
    }
    // 2. QEMUs of our vms/ dir that nothing adopted (pidfile lost, QMP wedged, run dir deleted): kill.
    const adopted = new Set([...this.#vms.values()].filter((vm) => vm.exit === null).map((vm) => vm.pid));
    for (const p of await findQemuProcesses(this.#vmsDir)) {
      if (adopted.has(p.pid)) continue;
      await killOrphan(p, this.#vmsDir);
      if (known.has(p.desktopId) && result.get(p.desktopId)?.state === 'running') result.delete(p.desktopId);
    }
    for (const d of desktops) if (!result.has(d.id)) result.set(d.id, { state: 'stopped' });
    return result;
  }

  /** Re-adopt a detached QEMU of this desktop from its run dir (undefined when none runs). */
  async #attach(id: string): Promise<Vm | undefined> {
    const runDir = join(this.#vmsDir, id);
    if (!(await exists(runPaths(runDir).pid))) return undefined;
    const vm = await attachVm(runDir);
    if (vm === null) return undefined;
    this.#track(id, vm);
    return vm;
  }

  /** Let go of every VM without stopping it: they keep running and the next server re-adopts them. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#listeners.clear();
    this.#pauseListeners.clear();
    for (const id of [...this.#paused.keys()]) this.#clearPause(id);
    for (const vm of this.#vms.values()) await vm.qmp.close().catch(() => {});
    this.#vms.clear();
  }

  /** Desktops with a live VM right now (for logs and tests). */
  runningIds(): string[] {
    return [...this.#vms.entries()].filter(([, vm]) => vm.exit === null).map(([id]) => id);
  }
}
