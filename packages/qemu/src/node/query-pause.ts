/** Asks a VM whether (and why) it is paused: query-status, then query-block for the failing disk. */
import type { QmpClient } from '@roamdesk/qmp';

import { classifyPause, type VmPause } from '../disk-pause.ts';

export async function queryPause(qmp: QmpClient, opts: { timeoutMs?: number } = {}): Promise<VmPause | null> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const status = await qmp.execute('query-status', undefined, { timeoutMs });
  if (status.running) return null;
  return classifyPause(status, status.status === 'io-error' ? await qmp.execute('query-block', undefined, { timeoutMs }) : []);
}
