/**
 * Errors of the qemu-img wrapper. Kept apart from `packages/qemu/src/errors.ts` (the VM runner's errors),
 * but shaped the same way: `Error` + stable `code` + structured `data`.
 *
 *   QemuImgError                      (abstract base; never thrown itself)
 *   ├── QemuImgMissingError           QEMU_ERR_IMG_MISSING   qemu-img (or prlimit) is not installed
 *   ├── QemuImgFailedError            QEMU_ERR_IMG_FAILED    non-zero exit that the command does not define as a result
 *   │   ├── QemuImgLockedError        QEMU_ERR_IMG_LOCKED    the image is locked by another process (a running VM)
 *   │   └── QemuImgNoSpaceError       QEMU_ERR_IMG_NO_SPACE  the disk it writes to is full (ENOSPC)
 *   ├── QemuImgLimitError             QEMU_ERR_IMG_LIMIT     killed by a resource limit (address space, CPU) or the wall-clock timeout
 *   ├── QemuImgAbortedError           QEMU_ERR_IMG_ABORTED   the caller's AbortSignal fired
 *   ├── QemuImgOutputError            QEMU_ERR_IMG_BAD_OUTPUT qemu-img succeeded but its output did not parse
 *   └── QemuImgInvalidArgumentError   QEMU_ERR_IMG_INVALID_ARGUMENT a refused argument (e.g. a backing name with a protocol prefix)
 */

export type QemuImgErrorCode =
  | 'QEMU_ERR_IMG_MISSING'
  | 'QEMU_ERR_IMG_FAILED'
  | 'QEMU_ERR_IMG_LOCKED'
  | 'QEMU_ERR_IMG_NO_SPACE'
  | 'QEMU_ERR_IMG_LIMIT'
  | 'QEMU_ERR_IMG_ABORTED'
  | 'QEMU_ERR_IMG_BAD_OUTPUT'
  | 'QEMU_ERR_IMG_INVALID_ARGUMENT';

/** What the wrapper knows about a failed run; `stderrTail` is the last few KiB, never the whole stream. */
export interface QemuImgErrorData {
  readonly args: readonly string[];
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stderrTail: string;
  readonly [key: string]: unknown;
}

export abstract class QemuImgError extends Error {
  abstract readonly code: QemuImgErrorCode;
  readonly data: QemuImgErrorData;
  constructor(message: string, data: QemuImgErrorData, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.data = data;
  }
}

export class QemuImgMissingError extends QemuImgError {
  readonly code = 'QEMU_ERR_IMG_MISSING';
}

export class QemuImgFailedError extends QemuImgError {
  readonly code: 'QEMU_ERR_IMG_FAILED' | 'QEMU_ERR_IMG_LOCKED' | 'QEMU_ERR_IMG_NO_SPACE' = 'QEMU_ERR_IMG_FAILED';
}

/** qemu-img could not take the image lock: a running VM (or another tool) has it open. See qemu-img(1), "-U". */
export class QemuImgLockedError extends QemuImgFailedError {
  override readonly code = 'QEMU_ERR_IMG_LOCKED';
}

/** A write of qemu-img failed with ENOSPC: the disk it writes to is full. `data.hint` says what to do. */
export class QemuImgNoSpaceError extends QemuImgFailedError {
  override readonly code = 'QEMU_ERR_IMG_NO_SPACE';
}

/** Which limit ended the run. */
export type QemuImgLimit = 'address-space' | 'cpu' | 'wall-clock';

export class QemuImgLimitError extends QemuImgError {
  readonly code = 'QEMU_ERR_IMG_LIMIT';
  get limit(): QemuImgLimit {
    return this.data['limit'] as QemuImgLimit;
  }
}

export class QemuImgAbortedError extends QemuImgError {
  readonly code = 'QEMU_ERR_IMG_ABORTED';
}

export class QemuImgOutputError extends QemuImgError {
  readonly code = 'QEMU_ERR_IMG_BAD_OUTPUT';
}

export class QemuImgInvalidArgumentError extends QemuImgError {
  readonly code = 'QEMU_ERR_IMG_INVALID_ARGUMENT';
}
