/**
 * Errors of the VM side of @roamdesk/qemu (the qemu-img wrapper has its own, in img/errors.ts).
 * Each carries a stable `code` and structured `data`:
 *
 *   QemuError                        (base)
 *   ├── QemuSpecInvalidError         QEMU_ERR_SPEC_INVALID     the VmSpec is refused; data.problems lists every field
 *   ├── QemuSpawnFailedError         QEMU_ERR_SPAWN_FAILED     qemu-system-x86_64 (or setpriv) missing / not executable
 *   ├── QemuRunDirError              QEMU_ERR_RUN_DIR          run dir unusable, or a live VM already uses it
 *   ├── QemuStartTimeoutError        QEMU_ERR_START_TIMEOUT    QMP not ready / not running in time (the process is killed)
 *   ├── QemuVmExitedError            QEMU_ERR_VM_EXITED        QEMU exited while we waited (start, serial); data has reason + stderr tail
 *   ├── QemuPowerDownTimeoutError    QEMU_ERR_POWERDOWN_TIMEOUT the guest ignored system_powerdown and `force: false` was asked
 *   ├── QemuSerialTimeoutError       QEMU_ERR_SERIAL_TIMEOUT   waitForSerial saw no match in time
 *   └── QemuVmRunningError           QEMU_ERR_VM_RUNNING       cleanup() called while QEMU still runs
 */

export type QemuErrorCode =
  | 'QEMU_ERR_SPEC_INVALID'
  | 'QEMU_ERR_SPAWN_FAILED'
  | 'QEMU_ERR_RUN_DIR'
  | 'QEMU_ERR_START_TIMEOUT'
  | 'QEMU_ERR_VM_EXITED'
  | 'QEMU_ERR_POWERDOWN_TIMEOUT'
  | 'QEMU_ERR_SERIAL_TIMEOUT'
  | 'QEMU_ERR_VM_RUNNING';

export class QemuError extends Error {
  constructor(
    readonly code: QemuErrorCode,
    message: string,
    readonly data: Readonly<Record<string, unknown>> = {},
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

export interface SpecProblem {
  /** Dotted path of the field, e.g. `disk.nodes[1].nodeName`. */
  field: string;
  problem: string;
}

export class QemuSpecInvalidError extends QemuError {
  constructor(readonly problems: readonly SpecProblem[]) {
    super(
      'QEMU_ERR_SPEC_INVALID',
      `Invalid VM spec: ${problems.map((p) => `${p.field}: ${p.problem}`).join('; ')}`,
      { problems },
    );
  }
}

export class QemuSpawnFailedError extends QemuError {
  constructor(message: string, data: { binary: string; errno?: string }, options?: ErrorOptions) {
    super('QEMU_ERR_SPAWN_FAILED', message, data, options);
  }
}

export class QemuRunDirError extends QemuError {
  constructor(message: string, data: { runDir: string; pid?: number }, options?: ErrorOptions) {
    super('QEMU_ERR_RUN_DIR', message, data, options);
  }
}

export class QemuStartTimeoutError extends QemuError {
  constructor(message: string, data: { timeoutMs: number; stage: string; stderrTail: string }, options?: ErrorOptions) {
    super('QEMU_ERR_START_TIMEOUT', message, data, options);
  }
}

export class QemuVmExitedError extends QemuError {
  constructor(message: string, data: { reason: string; code: number | null; signal: string | null; stderrTail: string; while: string }) {
    super('QEMU_ERR_VM_EXITED', message, data);
  }
}

export class QemuPowerDownTimeoutError extends QemuError {
  constructor(message: string, data: { timeoutMs: number; pid: number }) {
    super('QEMU_ERR_POWERDOWN_TIMEOUT', message, data);
  }
}

export class QemuSerialTimeoutError extends QemuError {
  constructor(message: string, data: { pattern: string; timeoutMs: number; serialTail: string }) {
    super('QEMU_ERR_SERIAL_TIMEOUT', message, data);
  }
}

export class QemuVmRunningError extends QemuError {
  constructor(message: string, data: { pid: number; runDir: string }) {
    super('QEMU_ERR_VM_RUNNING', message, data);
  }
}
