/**
 * startVm: spawn QEMU for a VmConfig in a private run dir, connect QMP, wait until it runs.
 *
 * Lifetime 'owner' (default): QEMU is started through `setpriv --pdeathsig KILL` (util-linux), so
 * the kernel SIGKILLs it when the thread that spawned it dies, even if Node itself is SIGKILLed.
 * (Start VMs from the main thread: pdeathsig follows the spawning *thread*.)
 * Lifetime 'detached': QEMU gets its own session and outlives us; attachVm re-adopts it.
 */
import { spawn } from 'node:child_process';
import { chmod, open, writeFile } from 'node:fs/promises';

import { QmpClient } from '@roamdesk/qmp';

import { buildQemuArgs } from '../args.ts';
import { QemuSpawnFailedError, QemuStartTimeoutError, QemuVmExitedError } from '../errors.ts';
import { classifyExit } from '../exit.ts';
import { runPaths, specInRunDir, type VmConfig } from '../run-paths.ts';
import { readTail, removeFiles } from './files.ts';
import { childVmProcess } from './processes.ts';
import { prepareRunDir } from './run-dir.ts';
import { Vm, type ProcessExit } from './vm.ts';
import { findExecutable } from './which.ts';

export type VmLifetime = 'owner' | 'detached';

export interface StartVmOptions {
  /** Absolute path of the VM's private directory (created with mode 0700). */
  runDir: string;
  /** Default 'qemu-system-x86_64' from PATH. */
  qemuBinary?: string;
  /** Default 'owner'. */
  lifetime?: VmLifetime;
  /** Aborts the start (the process is killed). It has no effect once startVm has resolved. */
  signal?: AbortSignal;
  /** Deadline for QMP to answer and the VM to run. Default 30 000 ms. */
  timeoutMs?: number;
}

/** What vm.json records, for attachVm. */
export interface RunRecord {
  name: string;
  activeNode: string;
  lifetime: VmLifetime;
  binary: string;
  startedAt: string;
  spec: ReturnType<typeof specInRunDir>;
}

const INSTALL_HINT = 'install it with: apt-get install --no-install-recommends qemu-system-x86';

export async function startVm(config: VmConfig, opts: StartVmOptions): Promise<Vm> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  const lifetime = opts.lifetime ?? 'owner';
  const spec = specInRunDir(config, opts.runDir);
  const args = buildQemuArgs(spec); // validates before we touch the disk
  const paths = runPaths(opts.runDir);

  const binaryName = opts.qemuBinary ?? 'qemu-system-x86_64';
  const binary = await findExecutable(binaryName);
  if (!binary) throw new QemuSpawnFailedError(`${binaryName} not found or not executable; ${INSTALL_HINT}`, { binary: binaryName, errno: 'ENOENT' });
  let command = binary;
  let argv = args;
  if (lifetime === 'owner') {
    const setpriv = await findExecutable('setpriv');
    if (!setpriv) {
      throw new QemuSpawnFailedError("setpriv not found (package util-linux); it is needed for lifetime 'owner'", { binary: 'setpriv', errno: 'ENOENT' });
    }
    command = setpriv;
    // setpriv sets PR_SET_PDEATHSIG and execs QEMU in the same process: the pid stays QEMU's.
    argv = ['--pdeathsig', 'KILL', '--', binary, ...args];
  }

  await prepareRunDir(opts.runDir);
  const activeNode = spec.disk.nodes.at(-1)!.nodeName;
  const record: RunRecord = { name: spec.name, activeNode, lifetime, binary, startedAt: new Date().toISOString(), spec };
  await writeFile(paths.spec, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });

  // stdout+stderr go to a file, not a pipe: a detached QEMU must not die of SIGPIPE when we exit,
  // and the tail of the file explains crashes.
  const log = await open(paths.stderr, 'w', 0o600);
  let child;
  try {
    child = spawn(command, argv, { stdio: ['ignore', log.fd, log.fd], detached: lifetime === 'detached' });
  } finally {
    await log.close();
  }
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  if (child.pid === undefined) {
    const err = await spawnError;
    throw new QemuSpawnFailedError(`Cannot spawn ${command}: ${err.message}`, { binary: command }, { cause: err });
  }
  if (lifetime === 'detached') child.unref();
  const proc = childVmProcess(child as typeof child & { pid: number });

  let qmp: QmpClient | undefined;
  const fail = async (): Promise<void> => {
    child.kill('SIGKILL');
    await proc.exited;
    await qmp?.close();
    await removeFiles([paths.qmp, paths.vnc, paths.pid]);
  };
  const exitedEarly = proc.exited.then(async (p: ProcessExit) => {
    const stderrTail = await readTail(paths.stderr).catch(() => '');
    const exit = classifyExit({ ...p, stderrTail });
    return new QemuVmExitedError(`QEMU exited during start of VM ${spec.name} (${exit.detail})`, {
      reason: exit.reason,
      code: p.code,
      signal: p.signal,
      stderrTail,
      while: 'start',
    });
  });

  let stage = 'connecting to QMP';
  try {
    const connectAbort = new AbortController();
    const onAbort = (): void => connectAbort.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const connected = QmpClient.connect(paths.qmp, { timeoutMs: Math.max(1, deadline - Date.now()), signal: connectAbort.signal, retryIntervalMs: 25 });
      const first = await Promise.race([connected, exitedEarly]);
      if (first instanceof QemuVmExitedError) {
        connectAbort.abort();
        await connected.catch(() => undefined);
        throw first;
      }
      qmp = first;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }

    const vm = new Vm({ name: spec.name, runDir: opts.runDir, paths, qmp, process: proc, activeNode });
    stage = 'waiting for the VM to run';
    for (;;) {
      if (opts.signal?.aborted) throw opts.signal.reason instanceof Error ? opts.signal.reason : new Error('aborted');
      const status = await Promise.race([qmp.execute('query-status', undefined, { timeoutMs: Math.max(1, deadline - Date.now()) }), exitedEarly]);
      if (status instanceof QemuVmExitedError) throw status;
      // -S leaves the VM in 'prelaunch' until `cont`; that is the requested state.
      if (status.running || (spec.startPaused && (status.status === 'prelaunch' || status.status === 'paused'))) {
        vm.setStateFromStatus(status.running);
        break;
      }
      if (Date.now() >= deadline) throw new Error(`VM status is still '${status.status}'`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // The run dir is 0700 already; 0600 on the socket keeps VNC private even if that changes.
    if (spec.vncSocket !== undefined) await chmod(spec.vncSocket, 0o600);
    return vm;
  } catch (err) {
    // QEMU may have died on its own and the QMP disconnect won the race: report the exit and its stderr
    // (checked before fail(), whose SIGKILL would otherwise be what we see).
    if (!(err instanceof QemuVmExitedError) && opts.signal?.aborted !== true) {
      const exited = await Promise.race([exitedEarly, new Promise<null>((r) => setTimeout(() => r(null), 1000))]);
      if (exited !== null) {
        await fail();
        throw exited;
      }
    }
    await fail();
    if (err instanceof QemuVmExitedError || opts.signal?.aborted) throw err;
    if (Date.now() >= deadline || (err as { code?: string }).code === 'QMP_ERR_TIMEOUT' || (err as { code?: string }).code === 'QMP_ERR_CONNECT') {
      throw new QemuStartTimeoutError(
        `VM ${spec.name} did not start within ${timeoutMs} ms (${stage}): ${(err as Error).message}`,
        { timeoutMs, stage, stderrTail: await readTail(paths.stderr).catch(() => '') },
        { cause: err },
      );
    }
    throw err;
  }
}
