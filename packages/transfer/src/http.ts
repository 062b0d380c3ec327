/**
 * A minimal HTTP/1.1 client on node:http(s) with keep-alive: the transfer keeps a few requests in flight on
 * reused connections and streams bodies without WHATWG stream overhead (notes/performance.md: a stock stream
 * pipeline costs 2.6× the floor). Non-2xx answers become XFER_ERR_REMOTE with the server's error code;
 * connection failures become XFER_ERR_NETWORK (retryable).
 */
import { Agent as HttpAgent, type IncomingMessage, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Writable } from 'node:stream';

import { connectionError, TransferError } from './errors.ts';

export interface Remote {
  /** The API base, e.g. `http://127.0.0.1:8760/api/v1`. */
  readonly apiBase: string;
  readonly token: string;
}

export interface Connection {
  readonly remote: Remote;
  readonly agent: HttpAgent;
}

export function connect(remote: Remote, maxSockets: number): Connection {
  const https = remote.apiBase.startsWith('https:');
  const opts = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets };
  return { remote, agent: https ? new HttpsAgent(opts) : new HttpAgent(opts) };
}

export interface RequestInit {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  readonly path: string;
  readonly headers?: Record<string, string>;
  /** A whole body, or a producer that writes chunks (awaiting the returned promise is backpressure). */
  readonly body?: Buffer | ((write: (...chunks: Buffer[]) => Promise<void>) => Promise<void>);
  readonly signal?: AbortSignal | undefined;
}

/** Sends the request; resolves with the response once its head arrives (2xx only). */
export async function send(conn: Connection, init: RequestInit): Promise<IncomingMessage> {
  const url = new URL(conn.remote.apiBase + init.path);
  const doRequest = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const headers: Record<string, string> = { authorization: `Bearer ${conn.remote.token}`, ...init.headers };
  if (Buffer.isBuffer(init.body)) headers['content-length'] = String(init.body.length);
  return new Promise<IncomingMessage>((resolve, reject) => {
    const req = doRequest(url, { method: init.method, headers, agent: conn.agent, ...(init.signal !== undefined ? { signal: init.signal } : {}) });
    req.on('error', (e) => reject(networkError(url, e, init.signal)));
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) {
        resolve(res);
        return;
      }
      readSmall(res).then((text) => reject(remoteError(url, status, text)), (e: unknown) => reject(networkError(url, e, init.signal)));
    });
    if (init.body === undefined) req.end();
    else if (Buffer.isBuffer(init.body)) {
      req.end(init.body);
    } else {
      const write = (...chunks: Buffer[]): Promise<void> => writeChunks(req, chunks);
      init.body(write).then(() => req.end(), (e: unknown) => req.destroy(e instanceof Error ? e : new Error(String(e))));
    }
  });
}

export async function sendJson<T>(conn: Connection, init: Omit<RequestInit, 'body'> & { json?: unknown }): Promise<T> {
  const body = init.json === undefined ? undefined : Buffer.from(JSON.stringify(init.json));
  const res = await send(conn, {
    ...init,
    ...(body !== undefined ? { body, headers: { ...init.headers, 'content-type': 'application/json' } } : {}),
  });
  const text = await readSmall(res, 64 * 1024 * 1024);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new TransferError('XFER_ERR_PROTOCOL', `${init.method} ${init.path}: the server's answer is not JSON`, { path: init.path });
  }
}

async function readSmall(res: IncomingMessage, limit = 256 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > limit) {
      res.destroy();
      throw new TransferError('XFER_ERR_PROTOCOL', `answer larger than ${limit} bytes`);
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export function remoteError(url: URL, status: number, text: string): TransferError {
  let code: string | undefined;
  let message = text.slice(0, 300);
  let data: unknown;
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; data?: unknown } };
    if (typeof body.error?.code === 'string') code = body.error.code;
    if (typeof body.error?.message === 'string') message = body.error.message;
    data = body.error?.data;
  } catch {
    // not JSON: keep the text
  }
  // 507 Insufficient Storage (RFC 4918 §11.5): only the server's operator can help; the verified pieces stay there.
  const hint = status === 507 ? 'the server has no space left for this: ask its administrator to free some, then run the same command again (the pieces it verified are kept)' : undefined;
  return new TransferError('XFER_ERR_REMOTE', `${url.pathname}: ${status} ${code ?? ''} ${message}`.replace(/\s+/g, ' ').trim(), {
    status, code, remoteData: data, ...(hint !== undefined ? { hint } : {}),
  });
}

function networkError(url: URL, e: unknown, signal: AbortSignal | undefined): TransferError {
  if (signal?.aborted === true) return new TransferError('XFER_ERR_ABORTED', 'transfer aborted', {}, { cause: signal.reason });
  if (e instanceof TransferError) return e;
  return connectionError(url.origin + url.pathname, e as Error);
}

/** Errors worth retrying: the connection, a truncated or garbled stream, a bad piece, a server hiccup. */
export function isRetryable(e: unknown): boolean {
  if (!(e instanceof TransferError)) return false;
  if (e.code === 'XFER_ERR_NETWORK' || e.code === 'XFER_ERR_PROTOCOL' || e.code === 'XFER_ERR_PIECE_HASH') return true;
  if (e.code === 'XFER_ERR_REMOTE') {
    const status = e.data['status'];
    // A full disk on the server (507) stays full however often the request is repeated.
    return typeof status === 'number' && ((status >= 500 && status !== 507) || status === 429);
  }
  return false;
}

/**
 * Writes chunks as one writev (cork/uncork) and resolves once they were handed to the socket, so the caller
 * may reuse the buffers afterwards.
 */
export function writeChunks(w: Writable, chunks: readonly Buffer[]): Promise<void> {
  return new Promise((resolve, reject) => {
    if (w.destroyed) {
      reject(new TransferError('XFER_ERR_NETWORK', 'the connection is closed'));
      return;
    }
    // A ServerResponse whose connection goes away never calls the callback of a write it still holds: without
    // this, the writer (a piece stream, with its file, buffers and sender slot) would wait forever.
    const onClose = (): void => reject(new TransferError('XFER_ERR_NETWORK', 'the connection closed during a write'));
    w.once('close', onClose);
    w.cork();
    chunks.forEach((c, i) => {
      if (i < chunks.length - 1) w.write(c);
      else {
        w.write(c, (e) => {
          w.off('close', onClose);
          if (e) reject(e);
          else resolve();
        });
      }
    });
    w.uncork();
  });
}
