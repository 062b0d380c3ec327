// The console pipe: WebSocket binary frames <-> the VM's VNC UNIX socket, bytes unchanged (RFB end to end;
// noVNC speaks it in the browser). Backpressure both ways, so a slow browser cannot make the server buffer
// the whole screen stream, and a fast one cannot flood QEMU.

import { connect } from 'node:net';
import type { RawData, WebSocket } from 'ws';

/** Pause reading from QEMU while this much is queued towards the browser. */
const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;

export type ConsoleEnd = 'client' | 'vm' | 'error' | 'protocol';

export interface ConsoleStats {
  bytesToVm: number;
  bytesFromVm: number;
  closedBy: ConsoleEnd;
  /** A system error code (ENOENT, ECONNREFUSED…) when closedBy is 'error'. */
  error?: string;
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/** Pipe until either side closes; `onEnd` runs exactly once. */
export function proxyConsole(ws: WebSocket, socketPath: string, onEnd: (stats: ConsoleStats) => void): void {
  const upstream = connect(socketPath);
  let ended = false;
  let toVm = 0;
  let fromVm = 0;

  const end = (closedBy: ConsoleEnd, error?: string): void => {
    if (ended) return;
    ended = true;
    upstream.destroy();
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) {
      // 1000 when the VM side closed normally (desktop stopped); 1011/1003 tell the page something broke.
      if (closedBy === 'vm') ws.close(1000, 'console closed');
      else if (closedBy === 'protocol') ws.close(1003, 'binary frames only');
      else ws.close(1011, 'console unavailable');
    }
    onEnd({ bytesToVm: toVm, bytesFromVm: fromVm, closedBy, ...(error !== undefined ? { error } : {}) });
  };

  ws.on('message', (data, isBinary) => {
    if (!isBinary) {
      end('protocol');
      return;
    }
    const buf = toBuffer(data);
    toVm += buf.length;
    if (!upstream.write(buf)) ws.pause();
  });
  upstream.on('drain', () => ws.resume());

  upstream.on('data', (chunk: Buffer) => {
    fromVm += chunk.length;
    ws.send(chunk, { binary: true }, () => {
      if (!ended && upstream.isPaused() && ws.bufferedAmount < LOW_WATER) upstream.resume();
    });
    if (ws.bufferedAmount > HIGH_WATER) upstream.pause();
  });

  upstream.on('error', (err: NodeJS.ErrnoException) => end('error', err.code ?? 'ERROR'));
  upstream.on('close', () => end('vm'));
  ws.on('close', () => end('client'));
  ws.on('error', () => end('error', 'WS_ERROR'));
}
