/**
 * The server end of a piece upload over an upgraded connection (RFC 9110 §7.8, protocol PIECES_UPGRADE).
 * After the 101 the client sends frames and then END_FRAME on the same connection; the server answers with one
 * HTTP/1.1 response (the upload's state, or an error) and closes. The client sends nothing before the 101.
 *
 * Why not a plain PUT: node:http's server copies every body chunk its parser sees into freshly allocated
 * memory, and fresh memory is slow to touch on these VMs (notes/performance.md). It received a 41 MB check-in
 * layer at 100–250 MB/s. Read straight from the socket into one reused buffer (net `onread`), the same bytes
 * arrive at 400–550 MB/s (probe, 41 MB into a file with fdatasync: 98 vs 352 ms for the first request after a
 * pause, 73 vs 162 ms warm). TLS connections are read as a stream (no `onread` hand-over for them).
 */
import { type OnReadOpts, Socket, type SocketConstructorOpts } from 'node:net';

import { TransferError } from './errors.ts';
import { PIECES_RECEIVED_HEADER, PIECES_UPGRADE, type UploadState } from './protocol.ts';
import type { PieceSink } from './upload-registry.ts';

export interface UpgradedReceiveOptions {
  /** The read buffer, reused for every read (the caller pools it across requests). */
  readonly buffer: Buffer;
  /** The most stream bytes accepted on one connection. */
  readonly maxBytes: number;
  /** A connection silent this long is given up. */
  readonly idleMs: number;
  /** How often at most an interim response reports a moved piece count (default PROGRESS_EVERY_MS). */
  readonly progressEveryMs?: number;
  /** The answer (status and JSON body) for the state reached, or for the error that ended the stream. */
  answer(outcome: { state: UploadState } | { error: unknown }): { status: number; body: unknown };
}

/** After answering an error mid-stream, the peer's remaining bytes are read and dropped this long at most. */
const LINGER_MS = 5_000;

/**
 * While stream bytes keep arriving, the client hears from the server: an interim response (RFC 9110 §15.2, "request
 * progress") carrying how many pieces of the stream the server has taken so far (PIECES_RECEIVED_HEADER), at most
 * once a second when that count moved, and at least every ten seconds in any case. HTTP/1.1 clients skip interim
 * responses before the final answer; ours reads the count (upgraded-sender.ts).
 *
 * Why: the client can only see its own writes. Once its frames are in its kernel's send buffer (several MB on
 * Linux) they cross a slow link with its socket quiet — 4 MB take a minute at 64 KB/s. Its progress used to move
 * only when a batch was answered (a 32 MiB batch at 64 KB/s: nine minutes without a change), and its silence timer
 * took the quiet for a stall, gave up and sent the batch again while the abandoned connection's bytes were still
 * arriving (reliability.md T6). With these, its progress follows the pieces the server holds, and its silence means
 * what it should: the server received nothing for that long.
 */
const PROGRESS_EVERY_MS = 1_000;
const KEEPALIVE_EVERY_MS = 10_000;

function progressResponse(pieces: number): string {
  return `HTTP/1.1 102 Processing\r\n${PIECES_RECEIVED_HEADER}: ${pieces}\r\n\r\n`;
}

/**
 * Switches `socket` (the upgrade request's, `head` = bytes read past its head) to the piece stream, feeds the
 * stream to `sink` and answers. Resolves once the connection is closed (so `opts.buffer` is free again);
 * never rejects. The sink is disposed either way.
 */
export function receiveUpgraded(socket: Socket, head: Buffer, sink: PieceSink, opts: UpgradedReceiveOptions): Promise<void> {
  return new Promise<void>((resolve) => {
    let received = 0;
    let settled = false;
    let lastProgress = performance.now();
    let lastPieces = 0;
    const progressEvery = opts.progressEveryMs ?? PROGRESS_EVERY_MS;

    const finish = (outcome: { state: UploadState } | { error: unknown } | null): void => {
      if (settled) return;
      settled = true;
      sink.dispose();
      if (outcome === null) {
        conn.destroy();
        return;
      }
      const { status, body } = opts.answer(outcome);
      const text = JSON.stringify(body);
      conn.write(`HTTP/1.1 ${status} ${status < 300 ? 'OK' : 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
      conn.end();
      // A client still sending (an error came mid-stream) reads the answer before it sees the close; its
      // bytes are dropped meanwhile (closing with unread data would reset the connection and lose the answer).
      conn.setTimeout(LINGER_MS, () => conn.destroy());
      conn.resume();
    };

    const fail = (e: unknown): void => finish({ error: e });

    const onBytes = (view: Buffer): boolean => {
      if (settled) return true;
      received += view.length;
      const now = performance.now();
      const pieces = sink.piecesReceived;
      if (now - lastProgress >= (pieces !== lastPieces ? progressEvery : KEEPALIVE_EVERY_MS)) {
        lastProgress = now;
        lastPieces = pieces;
        conn.write(progressResponse(pieces));
      }
      if (received > opts.maxBytes) {
        fail(new TransferError('XFER_ERR_PROTOCOL', `the piece stream is longer than ${opts.maxBytes} bytes`, { max: opts.maxBytes }));
        return true;
      }
      try {
        const wait = sink.push(view);
        if (wait !== undefined) {
          wait.then(() => (sink.ended ? finish({ state: sink.end() }) : conn.resume()), fail);
          return false;
        }
        if (sink.ended) finish({ state: sink.end() });
      } catch (e) {
        fail(e);
      }
      return true;
    };

    const early = head.length > 0 || socket.readableLength > 0;
    const conn = adopt(socket, opts.buffer, onBytes);
    conn.setTimeout(opts.idleMs, () => {
      if (settled) conn.destroy();
      else fail(new TransferError('XFER_ERR_NETWORK', `no data for ${opts.idleMs / 1000} s`));
    });
    conn.on('error', () => finish(null));
    conn.on('end', () => {
      if (!settled) finish(null); // the client went away before END_FRAME: nothing to answer
    });
    conn.on('close', () => {
      finish(null);
      resolve();
    });
    // Bytes sent before the 101 could have been read as the next request by anything in between: refused.
    if (early) fail(new TransferError('XFER_ERR_PROTOCOL', 'piece stream bytes arrived before the 101: wait for the switch'));
    else conn.write(`HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: ${PIECES_UPGRADE}\r\n\r\n`);
  });
}

/**
 * The connection to read from: for plain TCP a new net.Socket on the same handle, reading into `buffer`
 * (`onread`); the old wrapper is destroyed without closing the handle it no longer owns. For TLS the socket
 * itself, read as a stream. `onBytes` returns false to stop reading until `resume()`.
 */
function adopt(socket: Socket, buffer: Buffer, onBytes: (view: Buffer) => boolean): Socket {
  const internals = socket as Socket & { _handle?: object | null; encrypted?: boolean };
  if (internals.encrypted === true || internals._handle == null) {
    socket.on('data', (c: Buffer) => {
      if (!onBytes(c)) socket.pause();
    });
    return socket;
  }
  const handle = internals._handle;
  internals._handle = null;
  socket.destroy();
  // `handle` and `onread` are net.Socket options @types/node does not list for the constructor.
  const onread: OnReadOpts = { buffer, callback: (n, b) => onBytes((b as Buffer).subarray(0, n)) };
  return new Socket({ handle, onread } as SocketConstructorOpts);
}
