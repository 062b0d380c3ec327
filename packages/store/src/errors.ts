/**
 * Errors of @roamdesk/store: `StoreError` + stable `code` (STORE_ERR_*) + JSON-safe `data`, one subclass per
 * failure a caller acts on.
 *
 *   StoreError (abstract)
 *   ├── InvalidObjectIdError     STORE_ERR_INVALID_OBJECT_ID   not 64 lowercase hex: never turned into a path
 *   ├── InvalidOverlayError      STORE_ERR_INVALID_OVERLAY     an Overlay that is not a writable overlay of this store
 *   ├── ObjectNotFoundError      STORE_ERR_OBJECT_NOT_FOUND
 *   ├── ParentMissingError       STORE_ERR_PARENT_MISSING      a layer's parent (or a chain link) is not in the store
 *   ├── ChainBrokenError         STORE_ERR_CHAIN_BROKEN        a header does not name the parent the metadata says
 *   ├── ObjectInUseError         STORE_ERR_OBJECT_IN_USE       remove() refused: layers or overlays depend on it
 *   ├── OverlayInUseError        STORE_ERR_OVERLAY_IN_USE      seal() refused: a running VM holds the overlay
 *   ├── HashMismatchError        STORE_ERR_HASH_MISMATCH       the bytes do not hash to the expected id
 *   ├── UnsupportedSourceError   STORE_ERR_UNSUPPORTED_SOURCE  empty, not a regular file, or a format we do not take
 *   ├── ImportFailedError        STORE_ERR_IMPORT_FAILED       qemu-img check/convert refused the bytes (cause attached)
 *   ├── SealFailedError          STORE_ERR_SEAL_FAILED         a step of seal/sealLive failed (data.step; cause attached)
 *   ├── NoSpaceError             STORE_ERR_NO_SPACE            the store's disk cannot hold the object (checked before copying)
 *   └── StoreAbortedError        STORE_ERR_ABORTED             the caller's AbortSignal fired
 *
 * qcow2 header policy violations are NOT wrapped: they propagate as @roamdesk/qcow2's own Qcow2Error
 * subclasses (code QCOW2_ERR_*), because their subclass and data already say exactly what is wrong with the
 * file (backing name, dirty bit …) and the api/ catalog maps those codes directly. qemu-img failures are wrapped
 * (ImportFailedError / SealFailedError with `cause`), except a lock conflict, which becomes OverlayInUseError.
 */

export type StoreErrorCode =
  | 'STORE_ERR_INVALID_OBJECT_ID'
  | 'STORE_ERR_INVALID_OVERLAY'
  | 'STORE_ERR_OBJECT_NOT_FOUND'
  | 'STORE_ERR_PARENT_MISSING'
  | 'STORE_ERR_CHAIN_BROKEN'
  | 'STORE_ERR_OBJECT_IN_USE'
  | 'STORE_ERR_OVERLAY_IN_USE'
  | 'STORE_ERR_DISK'
  | 'STORE_ERR_HASH_MISMATCH'
  | 'STORE_ERR_UNSUPPORTED_SOURCE'
  | 'STORE_ERR_IMPORT_FAILED'
  | 'STORE_ERR_SEAL_FAILED'
  | 'STORE_ERR_NO_SPACE'
  | 'STORE_ERR_ABORTED';

export type StoreErrorData = Readonly<Record<string, unknown>>;

export abstract class StoreError extends Error {
  abstract readonly code: StoreErrorCode;
  readonly data: StoreErrorData;
  constructor(message: string, data: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.data = Object.freeze({ ...data });
  }
  toJSON(): { name: string; code: string; message: string; data: StoreErrorData } {
    return { name: this.name, code: this.code, message: this.message, data: this.data };
  }
}

export class InvalidObjectIdError extends StoreError {
  readonly code = 'STORE_ERR_INVALID_OBJECT_ID';
  constructor(id: unknown) {
    // Only a bounded, escaped prefix of a hostile id goes into the message.
    super(`invalid object id ${JSON.stringify(String(id).slice(0, 80))}: expected 64 lowercase hex digits`, { id: String(id).slice(0, 200) });
  }
}

export class InvalidOverlayError extends StoreError {
  readonly code = 'STORE_ERR_INVALID_OVERLAY';
}

export class ObjectNotFoundError extends StoreError {
  readonly code = 'STORE_ERR_OBJECT_NOT_FOUND';
  constructor(id: string) {
    super(`object ${id} is not in the store`, { id });
  }
}

export class ParentMissingError extends StoreError {
  readonly code = 'STORE_ERR_PARENT_MISSING';
  constructor(parent: string, child?: string) {
    super(`parent ${parent} is not in the store${child !== undefined ? ` (needed by ${child})` : ''}`, { parent, child });
  }
}

export class ChainBrokenError extends StoreError {
  readonly code = 'STORE_ERR_CHAIN_BROKEN';
}

export class ObjectInUseError extends StoreError {
  readonly code = 'STORE_ERR_OBJECT_IN_USE';
  constructor(id: string, dependents: readonly string[]) {
    super(`object ${id} is the parent of ${dependents.length} other object(s) or overlay(s)`, { id, dependents: [...dependents] });
  }
}

export class OverlayInUseError extends StoreError {
  readonly code = 'STORE_ERR_OVERLAY_IN_USE';
}

export class HashMismatchError extends StoreError {
  readonly code = 'STORE_ERR_HASH_MISMATCH';
  constructor(expected: string, actual: string) {
    super(`content hashes to ${actual}, expected ${expected}`, { expected, actual });
  }
}

export class UnsupportedSourceError extends StoreError {
  readonly code = 'STORE_ERR_UNSUPPORTED_SOURCE';
}

export class ImportFailedError extends StoreError {
  readonly code = 'STORE_ERR_IMPORT_FAILED';
}

export type SealStep = 'precondition' | 'check' | 'create-overlay' | 'blockdev-add' | 'blockdev-snapshot' | 'publish' | 'change-backing-file' | 'retire';

export class SealFailedError extends StoreError {
  readonly code = 'STORE_ERR_SEAL_FAILED';
  get step(): SealStep {
    return this.data['step'] as SealStep;
  }
}

export class NoSpaceError extends StoreError {
  readonly code = 'STORE_ERR_NO_SPACE';
}

/**
 * The store's disk failed a write or an fsync (EIO): the operation published nothing. After a failed fsync the
 * page cache may hold bytes that never reached the disk, so nothing written in it is trusted (reliability.md R7).
 */
export class DiskError extends StoreError {
  readonly code = 'STORE_ERR_DISK';
}

/** An EIO from the file system, as a DiskError with what to do; anything else unchanged. */
export function asDiskError(e: unknown, what: string): unknown {
  if ((e as { code?: unknown } | null)?.code !== 'EIO') return e;
  return new DiskError(`${what}: the store's disk reported an I/O error (${(e as Error).message})`, {
    errno: 'EIO',
    hint: "check the disk's health (the kernel log, SMART); nothing was published, and the same command can run again once the disk is sound",
  }, { cause: e });
}

export class StoreAbortedError extends StoreError {
  readonly code = 'STORE_ERR_ABORTED';
}
