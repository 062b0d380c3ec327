/**
 * attachVm: re-adopt a QEMU started with lifetime 'detached' (e.g. after a server restart).
 * Returns null, after removing stale sockets and pidfile, when no such QEMU runs any more.
 */
import { readFile } from 'node:fs/promises';

import { QmpClient } from '@roamdesk/qmp';

import { runPaths } from '../run-paths.ts';
import { removeFiles } from './files.ts';
import { isQemuFor, readPidFile } from './proc.ts';
import { adoptedVmProcess } from './processes.ts';
import type { RunRecord } from './start-vm.ts';
import { Vm } from './vm.ts';

export async function attachVm(runDir: string, opts: { timeoutMs?: number } = {}): Promise<Vm | null> {
  const paths = runPaths(runDir);
  const pid = await readPidFile(paths.pid);
  // The pid must be a QEMU serving *this* run dir's socket; a recycled pid is someone else.
  if (pid === null || !(await isQemuFor(pid, paths.qmp))) {
    await removeFiles([paths.qmp, paths.vnc, paths.pid, paths.spec]);
    return null;
  }
  let record: Partial<RunRecord> = {};
  try {
    record = JSON.parse(await readFile(paths.spec, 'utf8')) as RunRecord;
  } catch {
    // vm.json is a convenience; the live QEMU is the truth.
  }
  const qmp = await QmpClient.connect(paths.qmp, { timeoutMs: opts.timeoutMs ?? 10_000 });
  const deviceId = record.spec?.disk.deviceId ?? 'disk0';
  const blocks = await qmp.execute('query-block');
  const live = blocks.find((b) => b.qdev?.includes(`/peripheral/${deviceId}/`))?.inserted?.['node-name'];
  const vm = new Vm({
    name: record.name ?? runDir.split('/').filter(Boolean).at(-1) ?? 'vm',
    runDir,
    paths,
    qmp,
    process: adoptedVmProcess(pid, paths.qmp),
    activeNode: live ?? record.activeNode ?? '',
  });
  vm.setStateFromStatus((await qmp.execute('query-status')).running);
  return vm;
}
