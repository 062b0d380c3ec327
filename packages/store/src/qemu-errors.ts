/** Maps qemu-img wrapper errors to store errors at the boundary of an operation. */
import { QemuImgAbortedError, QemuImgError, QemuImgNoSpaceError } from '@roamdesk/qemu';

import { asDiskError, ImportFailedError, NoSpaceError, StoreAbortedError, StoreError } from './errors.ts';

export function asImportError(e: unknown, what: string): unknown {
  if (e instanceof StoreError) return e;
  if (e instanceof QemuImgAbortedError) return new StoreAbortedError(`${what}: aborted`, {}, { cause: e });
  if (e instanceof QemuImgNoSpaceError) return new NoSpaceError(`${what}: the store's disk is full`, { hint: e.data['hint'] }, { cause: e });
  if (e instanceof QemuImgError) return new ImportFailedError(`${what}: ${e.message}`, { qemuImgCode: e.code }, { cause: e });
  return asDiskError(e, what);
}
