/**
 * A running (or finished) QEMU process with its QMP connection: state tracking, exit
 * classification, serial console access, power-down and kill. Made by startVm or attachVm.
 */
import type { QmpClient, QmpEvent } from '@roamdesk/qmp';

import { QemuPowerDownTimeoutError, QemuSerialTimeoutError, QemuVmExitedError, QemuVmRunningError } from '../errors.ts';
import { classifyExit, type VmExit } from '../exit.ts';
import type { VmPaths } from '../run-paths.ts';
import { readTail, removeFiles } from './files.ts';
import { AppendReader, readWholeFile, SERIAL_POLL_MS } from './serial.ts';

export type VmState = 'starting' | 'running' | 'paused' | 'stopping' | 'stopped' | 'crashed';

/** What the process adapter reports when the process is gone. */
export interface ProcessExit {
  code: number | null;
  signal: string | null;
  /** True for an adopted (not our child) process: its exit status cannot be read. */
  statusUnknown: boolean;
}

/** The process behind a Vm, as the runner sees it. Kept small so tests and adapters can fake it. */
export interface VmProcess {
  pid: number;
  exited: Promise<ProcessExit>;
  /** Sends SIGKILL to this exact process (never a group, never by name). */
  kill(): Promise<void>;
}

export interface VmInit {
  name: string;
  runDir: string;
  paths: VmPaths;
  qmp: QmpClient;
  process: VmProcess;
  activeNode: string;
}

export interface PowerDownOptions {
  /** How long the guest gets to power off after system_powerdown. Default 60 000 ms. */
  timeoutMs?: number;
  /** After the timeout: `quit`, then SIGKILL (default true). If false, reject with QemuPowerDownTimeoutError. */
  force?: boolean;
  /** How long `quit` gets before SIGKILL. Default 10 000 ms. */
  quitTimeoutMs?: number;
}

export interface WaitForSerialOptions {
  /** Default 60 000 ms. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export class Vm {
  readonly name: string;
  readonly pid: number;
  readonly runDir: string;
  readonly paths: VmPaths;
  readonly qmp: QmpClient;
  /** Resolves once QEMU is gone, with how it ended. Never rejects. */
  readonly exited: Promise<VmExit>;
  /**
   * Node name of the writable top of the disk chain. Update it after a live seal
   * (blockdev-add + blockdev-snapshot) moves guest writes to a new overlay.
   */
  activeNode: string;
  #state: VmState = 'starting';
  #exit: VmExit | null = null;
  #shutdown: { guest: boolean; reason: string } | undefined;
  #sentSignal: string | undefined;
  readonly #process: VmProcess;

  constructor(init: VmInit) {
    this.name = init.name;
    this.pid = init.process.pid;
    this.runDir = init.runDir;
    this.paths = init.paths;
    this.qmp = init.qmp;
    this.activeNode = init.activeNode;
    this.#process = init.process;
    init.qmp.onEvent((e) => this.#onEvent(e));
    this.exited = init.process.exited.then(async (p) => {
      const stderrTail = await readTail(this.paths.stderr, 4096).catch(() => '');
      const exit = classifyExit({
        code: p.code,
        signal: p.signal,
        shutdown: this.#shutdown,
        sentSignal: this.#sentSignal,
        statusUnknown: p.statusUnknown,
        stderrTail,
      });
      this.#exit = exit;
      this.#state = exit.reason === 'crashed' ? 'crashed' : 'stopped';
      await this.qmp.close();
      return exit;
    });
  }

  get state(): VmState {
    return this.#state;
  }

  /** How QEMU ended, once it has; null while it runs. */
  get exit(): VmExit | null {
    return this.#exit;
  }

  /** Sets the state from query-status; called by the runner once QMP is up. */
  setStateFromStatus(running: boolean): void {
    if (this.#state === 'starting' || this.#state === 'running' || this.#state === 'paused') {
      this.#state = running ? 'running' : 'paused';
    }
  }

  #onEvent(e: QmpEvent): void {
    if (this.#exit) return;
    if (e.event === 'STOP' && this.#state === 'running') this.#state = 'paused';
    else if (e.event === 'RESUME' && (this.#state === 'paused' || this.#state === 'starting')) this.#state = 'running';
    else if (e.event === 'SHUTDOWN') {
      const guest = e.data['guest'] === true;
      const reason = typeof e.data['reason'] === 'string' ? e.data['reason'] : 'unknown';
      this.#shutdown = { guest, reason };
      this.#state = 'stopping';
    }
  }

  /** The whole serial console log so far ('' before the first byte). */
  readSerial(): Promise<string> {
    return readWholeFile(this.paths.serial);
  }

  /**
   * Resolves with the first match of `re` in the serial log (from its start). Rejects with
   * QemuVmExitedError as soon as QEMU exits without a match, QemuSerialTimeoutError after
   * `timeoutMs`, or the signal's reason.
   */
  async waitForSerial(re: RegExp, opts: WaitForSerialOptions = {}): Promise<RegExpMatchArray> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    const pattern = new RegExp(re.source, re.flags.replace(/[gy]/g, ''));
    const reader = new AppendReader(this.paths.serial);
    let text = '';
    let exitedSeen = false;
    void this.exited.then(() => {
      exitedSeen = true;
    });
    for (;;) {
      if (opts.signal?.aborted) throw opts.signal.reason instanceof Error ? opts.signal.reason : new Error('aborted');
      // Read after noting the exit, so output written just before the exit is still seen.
      const exitedBefore = exitedSeen;
      text += await reader.readNew();
      const match = text.match(pattern);
      if (match) return match;
      if (exitedBefore) {
        const exit = await this.exited;
        throw new QemuVmExitedError(
          `VM ${this.name} exited (${exit.reason}: ${exit.detail}) before its serial console matched ${String(re)}`,
          { reason: exit.reason, code: exit.code, signal: exit.signal, stderrTail: exit.stderrTail, while: 'waitForSerial' },
        );
      }
      if (Date.now() >= deadline) {
        throw new QemuSerialTimeoutError(`VM ${this.name}: serial console did not match ${String(re)} within ${timeoutMs} ms`, {
          pattern: String(re),
          timeoutMs,
          serialTail: text.slice(-2000),
        });
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(SERIAL_POLL_MS, Math.max(0, deadline - Date.now())));
        void this.exited.then(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /**
   * ACPI power-down: system_powerdown, then wait. A guest that does not handle the power button
   * (no ACPI daemon, or no guest at all) ignores it; then, unless `force: false`, we `quit` and,
   * if even that fails, SIGKILL this pid.
   */
  async powerDown(opts: PowerDownOptions = {}): Promise<VmExit> {
    if (this.#exit) return this.#exit;
    const timeoutMs = opts.timeoutMs ?? 60_000;
    this.#state = 'stopping';
    try {
      await this.qmp.execute('system_powerdown', undefined, { timeoutMs: 5000 });
    } catch {
      // QMP already gone (QEMU exiting) or wedged: the timeout below decides.
    }
    const exit = await this.#exitWithin(timeoutMs);
    if (exit) return exit;
    if (opts.force === false) {
      throw new QemuPowerDownTimeoutError(`VM ${this.name} did not power down within ${timeoutMs} ms`, { timeoutMs, pid: this.pid });
    }
    try {
      await this.qmp.execute('quit', undefined, { timeoutMs: 5000 });
    } catch {
      // fall through to SIGKILL
    }
    return (await this.#exitWithin(opts.quitTimeoutMs ?? 10_000)) ?? this.kill();
  }

  /** SIGKILL this QEMU (only this pid) and wait for it to be gone. */
  async kill(): Promise<VmExit> {
    if (this.#exit) return this.#exit;
    this.#state = 'stopping';
    this.#sentSignal = 'SIGKILL';
    await this.#process.kill();
    return this.exited;
  }

  /**
   * Removes the sockets, pidfile and vm.json; with `logs: true` also serial and stderr logs.
   * Refuses while QEMU runs (QemuVmRunningError).
   */
  async cleanup(opts: { logs?: boolean } = {}): Promise<void> {
    if (!this.#exit) {
      throw new QemuVmRunningError(`VM ${this.name} (pid ${this.pid}) is still running; stop it before cleanup`, {
        pid: this.pid,
        runDir: this.runDir,
      });
    }
    const p = this.paths;
    await removeFiles([p.qmp, p.vnc, p.pid, p.spec, ...(opts.logs ? [p.serial, p.stderr] : [])]);
  }

  async #exitWithin(ms: number): Promise<VmExit | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), ms);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}
