/**
 * Spawns qemu-img, optionally under `prlimit` (util-linux) and a wall-clock timeout, and maps the outcome to
 * typed errors. This is the only file of the wrapper that starts processes.
 */
import { spawn } from 'node:child_process';

import { classify } from './classify.ts';
import {
  QemuImgAbortedError,
  QemuImgFailedError,
  QemuImgLimitError,
  QemuImgLockedError,
  QemuImgMissingError,
  QemuImgNoSpaceError,
  QemuImgOutputError,
  type QemuImgErrorData,
} from './errors.ts';
import type { ResourceLimits } from './types.ts';

const STDERR_TAIL_BYTES = 8192;

export interface RunSpec {
  readonly binary: string;
  readonly prlimitBinary: string;
  readonly args: readonly string[];
  readonly limits: ResourceLimits | null;
  readonly timeoutMs: number | null;
  readonly signal?: AbortSignal | undefined;
  /** Exit codes that are results, not failures (e.g. check: 0, 2, 3, 63; compare: 0, 1). */
  readonly okExitCodes: readonly number[];
  readonly onStdout?: ((chunk: string) => void) | undefined;
  /** Output beyond this is a failure (a crafted image could make `map` print without end). */
  readonly maxStdoutBytes: number;
}

export interface RunResult {
  readonly args: readonly string[];
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderrTail: string;
}

export function prlimitArgv(limits: ResourceLimits): string[] {
  const as = Math.floor(limits.addressSpaceBytes);
  const cpu = Math.ceil(limits.cpuSeconds);
  return [`--as=${as}`, `--cpu=${cpu}`, '--'];
}

export function runQemuImg(spec: RunSpec): Promise<RunResult> {
  const limited = spec.limits !== null;
  const command = spec.limits !== null ? spec.prlimitBinary : spec.binary;
  const argv = spec.limits !== null ? [...prlimitArgv(spec.limits), spec.binary, ...spec.args] : [...spec.args];

  return new Promise<RunResult>((resolvePromise, reject) => {
    const data = (exitCode: number | null, signal: string | null, stderr: string, extra: Record<string, unknown> = {}): QemuImgErrorData => ({
      args: spec.args,
      exitCode,
      signal,
      stderrTail: stderr.slice(-STDERR_TAIL_BYTES),
      ...extra,
    });

    if (spec.signal?.aborted === true) {
      reject(new QemuImgAbortedError('qemu-img was not started: aborted', data(null, null, ''), { cause: spec.signal.reason }));
      return;
    }

    const child = spawn(command, argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      // Stable messages for classify(); qemu-img is not localised today, but its libraries may be. Under the
      // address-space limit, one malloc arena: glibc otherwise reserves 64 MiB of address space per arena, up to
      // 8 per core (mallopt(3) M_ARENA_MAX), for qemu-img's I/O threads, and a loaded machine then fails sound
      // images at random (qemu_thread_create: Resource temporarily unavailable, seen here under load).
      env: { ...process.env, LC_ALL: 'C', ...(limited ? { MALLOC_ARENA_MAX: '1' } : {}) },
    });
    const stdoutChunks: string[] = [];
    let stdoutBytes = 0;
    let stderr = '';
    let timedOut = false;
    let aborted = false;
    let overflow = false;
    let settled = false;

    const kill = (): void => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    const timer = spec.timeoutMs !== null ? setTimeout(() => { timedOut = true; kill(); }, spec.timeoutMs) : null;
    const onAbort = (): void => { aborted = true; kill(); };
    spec.signal?.addEventListener('abort', onAbort, { once: true });
    const cleanup = (): void => {
      if (timer !== null) clearTimeout(timer);
      spec.signal?.removeEventListener('abort', onAbort);
    };

    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      stdoutBytes += chunk.length;
      if (stdoutBytes > spec.maxStdoutBytes) {
        overflow = true;
        kill();
        return;
      }
      stdoutChunks.push(chunk);
      spec.onStdout?.(chunk);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-STDERR_TAIL_BYTES * 2);
    });

    child.on('error', (err: NodeJS.ErrnoException) => {
      if (settled) return;
      settled = true;
      cleanup();
      if (err.code === 'ENOENT') {
        const what = limited ? `prlimit (${spec.prlimitBinary}; package util-linux)` : `qemu-img (${spec.binary})`;
        const pkg = limited ? 'util-linux' : 'qemu-utils';
        reject(new QemuImgMissingError(`${what} is not installed; install the ${pkg} package`, data(null, null, ''), { cause: err }));
      } else {
        reject(new QemuImgFailedError(`could not start qemu-img: ${err.message}`, data(null, null, ''), { cause: err }));
      }
    });

    child.on('close', (exitCode: number | null, signal: NodeJS.Signals | null) => {
      if (settled) return;
      settled = true;
      cleanup();
      const d = data(exitCode, signal, stderr);
      const sub = spec.args[0] ?? '';
      if (overflow) {
        reject(new QemuImgOutputError(`qemu-img ${sub}: output exceeded ${spec.maxStdoutBytes} bytes`, d));
        return;
      }
      const outcome = classify({ exitCode, signal, stderr, limited, timedOut, aborted }, spec.okExitCodes);
      const detail = stderr.trim().split('\n').slice(-3).join(' ').slice(0, 500);
      switch (outcome.kind) {
        case 'ok':
          resolvePromise({ args: spec.args, exitCode: exitCode ?? 0, stdout: stdoutChunks.join(''), stderrTail: d.stderrTail });
          return;
        case 'missing':
          reject(new QemuImgMissingError(`qemu-img (${spec.binary}) is not installed; install the qemu-utils package`, d));
          return;
        case 'aborted':
          reject(new QemuImgAbortedError(`qemu-img ${sub}: aborted`, d, { cause: spec.signal?.reason }));
          return;
        case 'limit': {
          const what = outcome.limit === 'wall-clock' ? `the ${spec.timeoutMs} ms timeout`
            : outcome.limit === 'cpu' ? `the CPU limit (${spec.limits?.cpuSeconds} s)`
              : `the address-space limit (${spec.limits?.addressSpaceBytes} bytes)`;
          reject(new QemuImgLimitError(`qemu-img ${sub} was stopped by ${what}`, { ...d, limit: outcome.limit }));
          return;
        }
        case 'locked':
          reject(new QemuImgLockedError(`qemu-img ${sub}: the image is in use by another process: ${detail}`, d));
          return;
        case 'no-space':
          reject(new QemuImgNoSpaceError(`qemu-img ${sub}: the disk it writes to is full: ${detail}`, {
            ...d, hint: 'free space on the disk that holds the data directory (or move it to a larger disk), then run the same command again',
          }));
          return;
        case 'failed': {
          const how = exitCode !== null ? `exit code ${exitCode}` : `signal ${signal ?? '?'}`;
          reject(new QemuImgFailedError(`qemu-img ${sub} failed (${how}): ${detail}`, d));
          return;
        }
      }
    });
  });
}
