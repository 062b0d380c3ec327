/**
 * Opens a UNIX stream socket, retrying while it does not exist yet (ENOENT) or nobody listens
 * (ECONNREFUSED): QEMU creates its `-qmp unix:…,server=on` socket a few hundred ms after spawn.
 */
import { abortError } from '../abort.ts';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

import { QmpConnectError } from '../errors.ts';

export interface ConnectUnixOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  retryIntervalMs?: number;
}

const RETRYABLE = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN']);

function attempt(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path });
    const onError = (err: Error): void => {
      socket.destroy();
      reject(err);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

export async function connectUnixSocket(path: string, opts: ConnectUnixOptions): Promise<Socket> {
  const { timeoutMs, signal, retryIntervalMs = 50 } = opts;
  const deadline = Date.now() + timeoutMs;
  let lastCode = '';
  for (;;) {
    if (signal?.aborted) throw abortError(signal);
    try {
      return await attempt(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      lastCode = code;
      if (!RETRYABLE.has(code)) {
        throw new QmpConnectError(`Cannot connect to QMP socket ${path}: ${(err as Error).message}`, { path, errno: code }, { cause: err });
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new QmpConnectError(
          `QMP socket ${path} not available within ${timeoutMs} ms (last error ${code}: ${code === 'ENOENT' ? 'the socket does not exist' : 'connection refused'})`,
          { path, errno: lastCode },
          { cause: err },
        );
      }
      await sleep(Math.min(retryIntervalMs, left), undefined, signal ? { signal } : {}).catch(() => {
        throw abortError(signal);
      });
    }
  }
}
