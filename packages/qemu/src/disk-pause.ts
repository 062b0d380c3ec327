/**
 * Why a VM is paused, from what QMP says: the disk's error policy (args.ts: werror/rerror 'stop') pauses the VM
 * on an I/O error instead of failing the guest's request. Pure; the node adapter asks QMP (node/query-pause.ts).
 */
import type { QmpBlockInfo, QmpStatusInfo } from '@roamdesk/qmp';

/**
 * - `no-space`: a write found the host filesystem full (ENOSPC). Free space, then resume: QEMU retries the request.
 * - `disk-error`: any other I/O error (EIO…) on the host file. Resuming retries it too.
 * - `paused`: paused on request (QMP `stop`), not by an error.
 */
export type VmPauseReason = 'no-space' | 'disk-error' | 'paused';

/** A VM a full disk paused is resumed only with at least this much free: less would pause it again at once. */
export const RESUME_MIN_FREE_BYTES = 16 * 2 ** 20;

export interface VmPause {
  reason: VmPauseReason;
  /** The qdev id of the disk that failed (no-space and disk-error), when QEMU names one. */
  device?: string;
}

/**
 * `status` from query-status, `blocks` from query-block (whose io-status is present for devices that stop on
 * errors: qapi BlockInfo). Null when the VM runs (or is not paused in a way a resume could end: shutdown, …).
 */
export function classifyPause(status: Pick<QmpStatusInfo, 'running' | 'status'>, blocks: readonly Pick<QmpBlockInfo, 'device' | 'qdev' | 'io-status'>[]): VmPause | null {
  if (status.running) return null;
  if (status.status === 'io-error') {
    const failed = blocks.find((b) => b['io-status'] === 'nospace') ?? blocks.find((b) => b['io-status'] === 'failed');
    const device = failed === undefined ? undefined : qdevId(failed);
    return { reason: failed?.['io-status'] === 'nospace' ? 'no-space' : 'disk-error', ...(device !== undefined ? { device } : {}) };
  }
  return status.status === 'paused' ? { reason: 'paused' } : null;
}

/** `/machine/peripheral/disk0/virtio-backend` → `disk0`; a backend name otherwise. */
function qdevId(b: Pick<QmpBlockInfo, 'device' | 'qdev'>): string | undefined {
  const m = /\/peripheral\/([^/]+)\//.exec(b.qdev ?? '');
  if (m?.[1] !== undefined) return m[1];
  return b.device !== '' ? b.device : b.qdev;
}
