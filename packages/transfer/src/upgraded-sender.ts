/**
 * The client end of a piece upload over an upgraded connection (upgraded-receiver.ts has the why): the PUT
 * asks for PIECES_UPGRADE (RFC 9110 §7.8); after the server's 101 the frames follow on the same connection,
 * then END_FRAME, and the server's one answer is read with the strict response parser. The connection is not
 * reused. The request itself carries an empty pieces body, so a proxy that drops the hop-by-hop Upgrade
 * header (RFC 9110 §7.6.1) forwards a harmless empty PUT: its 2xx answer means "not switched", and the caller
 * sends the batch as a plain PUT.
 */
import { type IncomingMessage, request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';

import { abortedError, connectionError, TransferError } from './errors.ts';
import { END_FRAME } from './frames.ts';
import { type Connection, remoteError, writeChunks } from './http.ts';
import { ResponseParser } from './http1-response.ts';
import { PIECES_CONTENT_TYPE, PIECES_RECEIVED_HEADER, PIECES_UPGRADE } from './protocol.ts';

/** An answer larger than this is not an upload state. */
const MAX_ANSWER_BYTES = 1024 * 1024;
/**
 * A connection silent this long (no 101, no answer, no progress writing) is given up; the batch is retried. Once
 * the last frame is in the kernel's send buffer nothing here shows those bytes leaving: the server's interim
 * responses while it receives (upgraded-receiver.ts) are what keeps a slow but moving link from looking silent,
 * and what moves the progress before the answer.
 */
const SILENCE_TIMEOUT_MS = 60_000;

export interface UpgradedPut {
  /** Relative to the remote's API base. */
  readonly path: string;
  readonly signal: AbortSignal;
  /** Writes the frames (awaiting `write` is backpressure); END_FRAME is added after it resolves. */
  readonly body: (write: (...chunks: Buffer[]) => Promise<void>) => Promise<void>;
  /** The server's count of the stream's pieces it has taken so far, from its interim responses (rising). */
  readonly onPiecesReceived?: (pieces: number) => void;
}

/**
 * Resolves with the server's answer (JSON text of a 2xx) once the stream was received, or with null when the
 * server answered the request without switching (nothing was sent: send it as a plain PUT). Non-2xx answers
 * reject with XFER_ERR_REMOTE, connection trouble with XFER_ERR_NETWORK (retryable) or XFER_ERR_TLS.
 */
export function putUpgraded(conn: Connection, put: UpgradedPut): Promise<string | null> {
  const url = new URL(conn.remote.apiBase + put.path);
  const where = url.origin + url.pathname;
  const doRequest = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<string | null>((resolve, reject) => {
    let socket: Socket | null = null;
    let settled = false;
    const settle = (f: () => void): void => {
      if (settled) return;
      settled = true;
      put.signal.removeEventListener('abort', onAbort);
      socket?.destroy();
      f();
    };
    const fail = (e: unknown): void => settle(() => reject(e instanceof Error ? e : new Error(String(e))));
    const onAbort = (): void => {
      req.destroy();
      fail(abortedError(put.signal));
    };
    const req = doRequest(url, {
      method: 'PUT',
      agent: conn.agent,
      headers: {
        authorization: `Bearer ${conn.remote.token}`, connection: 'Upgrade', upgrade: PIECES_UPGRADE,
        'content-type': PIECES_CONTENT_TYPE, 'content-length': '0',
      },
    });
    put.signal.addEventListener('abort', onAbort, { once: true });
    if (put.signal.aborted) onAbort();
    req.setTimeout(SILENCE_TIMEOUT_MS, () => req.destroy(connectionError(where, new Error(`no answer for ${SILENCE_TIMEOUT_MS / 1000} s`))));
    req.on('error', (e) => fail(e instanceof TransferError ? e : connectionError(where, e)));
    req.on('response', (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => { if (chunks.length < 64) chunks.push(c); });
      res.on('error', (e) => fail(connectionError(where, e)));
      res.on('end', () => {
        if (status >= 200 && status < 300) settle(() => resolve(null));
        else fail(remoteError(url, status, Buffer.concat(chunks).toString('utf8')));
      });
    });
    req.on('upgrade', (_res: IncomingMessage, s: Socket, head: Buffer) => {
      socket = s;
      if (settled) {
        s.destroy();
        return;
      }
      let status = 0;
      const answer: Buffer[] = [];
      let answerBytes = 0;
      const parser = new ResponseParser({
        head: (h) => { status = h.status; },
        interim: (h) => {
          const n = h.headers.get(PIECES_RECEIVED_HEADER);
          if (n !== undefined && /^\d{1,9}$/.test(n)) put.onPiecesReceived?.(Number(n));
        },
        body: (c) => {
          answerBytes += c.length;
          if (answerBytes > MAX_ANSWER_BYTES) throw new TransferError('XFER_ERR_PROTOCOL', `answer larger than ${MAX_ANSWER_BYTES} bytes`);
          answer.push(Buffer.from(c));
        },
        end: () => undefined,
      });
      const done = (): void => {
        const text = Buffer.concat(answer).toString('utf8');
        if (status >= 200 && status < 300) settle(() => resolve(text));
        else fail(remoteError(url, status, text));
      };
      const feed = (b: Buffer): void => {
        try {
          parser.feed(b);
          if (parser.done) done();
        } catch (e) {
          fail(e);
        }
      };
      s.setTimeout(SILENCE_TIMEOUT_MS, () => fail(connectionError(where, new Error(`no data for ${SILENCE_TIMEOUT_MS / 1000} s`))));
      s.on('data', feed);
      s.on('error', (e) => fail(connectionError(where, e)));
      s.on('close', () => {
        try {
          parser.eof();
          if (parser.done) done();
        } catch (e) {
          fail(e);
        }
      });
      if (head.length > 0) feed(head);
      // An answer that comes while frames are still going out (a refused piece) ends the exchange: the
      // writes then fail on the destroyed socket, and that failure is not the news.
      put.body((...chunks) => writeChunks(s, chunks))
        .then(() => writeChunks(s, [END_FRAME]))
        .catch((e: unknown) => fail(e instanceof TransferError ? e : connectionError(where, e instanceof Error ? e : new Error(String(e)))));
    });
    req.end();
  });
}

