/**
 * HTTP/1.1 GETs whose response bodies are read straight from the socket into one reused buffer (net/tls
 * `onread`), for the piece streams a download receives. Measured on the bench machine (2 cores, loopback,
 * 209 MB of pieces with BLAKE3): node:http's client took 0.55–0.6 s and 0.65 CPU-s to deliver the body even
 * with nothing written to disk — a fresh buffer, a parser callback and a stream push per 64 KiB read — where
 * reading into a reused 1 MiB buffer took 0.12 s and 0.11 CPU-s. Everything else (manifests, uploads) stays on
 * node:http (http.ts).
 *
 * A connection carries one request at a time and is kept alive for the next (RFC 9112 §9.3). A kept-alive
 * connection the server closed while idle fails the next request before any byte of an answer: that request
 * is sent once more on a fresh connection (GET is idempotent, RFC 9110 §9.2.2).
 */
import { validateHeaderValue } from 'node:http';
import { isIP, connect as netConnect, type OnReadOpts, type Socket } from 'node:net';
import { type ConnectionOptions, connect as tlsConnect } from 'node:tls';

import { abortedError, connectionError, TransferError } from './errors.ts';
import type { Remote } from './http.ts';
import { remoteError } from './http.ts';
import { type ResponseHead, ResponseParser } from './http1-response.ts';

/** One read from the socket at most; the assembler copies every byte out before the next read. */
const READ_BUFFER_BYTES = 1024 * 1024;
/** A connection silent this long while an answer is due is given up (and the batch asked again). */
const SILENCE_TIMEOUT_MS = 60_000;
/** Error answers are read for their message, up to this much. */
const MAX_ERROR_BODY = 256 * 1024;

export interface StreamGet {
  /** Relative to the remote's API base, with its query. */
  readonly path: string;
  readonly accept: string;
  readonly signal?: AbortSignal | undefined;
  /** A 2xx answer's head, before its body. */
  readonly onHead?: (head: ResponseHead) => void;
  /**
   * Body bytes of a 2xx answer: a view of the connection's read buffer, valid only during the call (copy what
   * you keep). Return false to stop reading until `resume()`. Throwing abandons the request (and the connection).
   */
  readonly onBody: (chunk: Buffer) => boolean;
}

/** One request and its answer on a connection. */
class Exchange {
  status = 0;
  receivedAny = false;
  paused = false;
  readonly parser: ResponseParser;
  readonly #errorBody: Buffer[] = [];
  #errorBytes = 0;

  constructor(readonly req: StreamGet, readonly resolve: () => void, readonly reject: (e: Error) => void) {
    this.parser = new ResponseParser({ head: (h) => this.#head(h), body: (c) => this.#body(c), end: () => undefined });
  }

  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  get errorText(): string {
    return Buffer.concat(this.#errorBody).toString('utf8');
  }

  #head(h: ResponseHead): void {
    this.status = h.status;
    if (this.ok) this.req.onHead?.(h);
  }

  #body(chunk: Buffer): void {
    if (this.ok) {
      if (!this.req.onBody(chunk)) this.paused = true;
    } else if (this.#errorBytes < MAX_ERROR_BODY) {
      this.#errorBody.push(Buffer.from(chunk.subarray(0, MAX_ERROR_BODY - this.#errorBytes)));
      this.#errorBytes += chunk.length;
    }
  }
}

/** The server closed a kept-alive connection before answering: worth one immediate retry on a new one. */
class StaleConnection extends Error {}

export class StreamConnection {
  readonly #url: URL;
  readonly #buffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  #socket: Socket | null = null;
  #active: Exchange | null = null;

  constructor(private readonly remote: Remote) {
    this.#url = new URL(remote.apiBase);
    validateHeaderValue('authorization', `Bearer ${remote.token}`);
  }

  /** Resolves once a 2xx answer's body has been delivered; rejects with XFER_ERR_REMOTE / _NETWORK / _PROTOCOL / _ABORTED. */
  async get(req: StreamGet): Promise<void> {
    try {
      await this.#attempt(req);
    } catch (e) {
      if (!(e instanceof StaleConnection)) throw e;
      await this.#attempt(req);
    }
  }

  /** Reads on after `onBody` returned false. */
  resume(): void {
    const a = this.#active;
    if (a === null || !a.paused) return;
    a.paused = false;
    this.#socket?.resume();
  }

  /** Ends the request in progress with `e` (the caller found its body unacceptable); the connection is closed. */
  abandon(e: unknown): void {
    if (this.#active !== null) this.#fail(e);
  }

  close(): void {
    this.#fail(new TransferError('XFER_ERR_ABORTED', 'the connection was closed'));
  }

  async #attempt(req: StreamGet): Promise<void> {
    if (req.signal?.aborted === true) throw abortedError(req.signal);
    const reused = this.#socket !== null;
    const socket = this.#socket ?? this.#connect();
    const target = new URL(this.remote.apiBase + req.path);
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => this.#fail(abortedError(req.signal!));
      const settled = (): void => req.signal?.removeEventListener('abort', onAbort);
      const exchange: Exchange = new Exchange(
        req,
        () => { settled(); resolve(); },
        (e) => {
          settled();
          reject(reused && !exchange.receivedAny && isConnectionLoss(e) ? new StaleConnection() : e);
        },
      );
      this.#active = exchange;
      req.signal?.addEventListener('abort', onAbort, { once: true });
      socket.write(`GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\nAuthorization: Bearer ${this.remote.token}\r\nAccept: ${req.accept}\r\n\r\n`, 'latin1');
    });
  }

  #connect(): Socket {
    const url = this.#url;
    const tls = url.protocol === 'https:';
    const port = Number(url.port || (tls ? 443 : 80));
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const onread = { buffer: this.#buffer, callback: (n: number): boolean => this.#onRead(n) };
    // `onread` works for TLS sockets too since Node 15 (nodejs/node#35753); @types/node lists it for net only.
    // SNI carries host names only (RFC 6066 §3).
    const sni = isIP(host) === 0 ? { servername: host } : {};
    const socket: Socket = tls
      ? tlsConnect({ host, port, ...sni, onread, ALPNProtocols: ['http/1.1'] } as ConnectionOptions & { onread: OnReadOpts })
      : netConnect({ host, port, onread, noDelay: true });
    // A server that stops sending mid-answer would otherwise hold the transfer forever; the batch is retried.
    socket.setTimeout(SILENCE_TIMEOUT_MS, () => {
      if (this.#active === null) this.#drop();
      else this.#fail(new TransferError('XFER_ERR_NETWORK', `${url.origin}: no data for ${SILENCE_TIMEOUT_MS / 1000} s`, { url: url.origin }));
    });
    socket.on('end', () => this.#onEnd(socket));
    socket.on('error', (e) => this.#onError(socket, e));
    socket.on('close', () => this.#onClose(socket));
    this.#socket = socket;
    return socket;
  }

  #onRead(n: number): boolean {
    const a = this.#active;
    if (a === null) {
      // Bytes nobody asked for (the server misbehaves): this connection cannot be trusted to frame answers.
      this.#drop();
      return false;
    }
    a.receivedAny = true;
    try {
      const left = a.parser.feed(this.#buffer, 0, n);
      if (a.parser.done) {
        if (left > 0) this.#drop(); // bytes after the answer: never reuse this connection
        this.#complete(a);
        return this.#socket !== null;
      }
    } catch (e) {
      this.#fail(e);
      return false;
    }
    return !a.paused;
  }

  #complete(a: Exchange): void {
    this.#active = null;
    if (!a.parser.reusable) this.#drop();
    if (a.ok) a.resolve();
    else a.reject(remoteError(new URL(this.remote.apiBase + a.req.path), a.status, a.errorText));
  }

  #onEnd(socket: Socket): void {
    if (socket !== this.#socket) return;
    const a = this.#active;
    if (a === null) {
      this.#drop();
      return;
    }
    try {
      a.parser.eof();
      this.#socket = null;
      this.#complete(a);
    } catch (e) {
      this.#fail(e);
    }
  }

  #onError(socket: Socket, e: Error): void {
    if (socket !== this.#socket) return;
    this.#fail(connectionError(this.#url.origin, e));
  }

  #onClose(socket: Socket): void {
    if (socket !== this.#socket) return;
    this.#fail(new TransferError('XFER_ERR_NETWORK', `${this.#url.origin}: the connection closed`, { url: this.#url.origin }));
  }

  #fail(e: unknown): void {
    const a = this.#active;
    this.#active = null;
    this.#drop();
    a?.reject(e instanceof Error ? e : new Error(String(e)));
  }

  #drop(): void {
    const s = this.#socket;
    this.#socket = null;
    s?.destroy();
  }
}

function isConnectionLoss(e: unknown): boolean {
  if (!(e instanceof TransferError)) return false;
  if (e.code === 'XFER_ERR_NETWORK') return true;
  return e.code === 'XFER_ERR_PROTOCOL' && e.message.includes('closed before a response');
}

/** Connections for the requests in flight, kept for the whole transfer. */
export class StreamConnections {
  readonly #idle: StreamConnection[] = [];
  readonly #all = new Set<StreamConnection>();
  constructor(private readonly remote: Remote) {}

  take(): StreamConnection {
    const c = this.#idle.pop() ?? new StreamConnection(this.remote);
    this.#all.add(c);
    return c;
  }

  give(c: StreamConnection): void {
    this.#idle.push(c);
  }

  closeAll(): void {
    for (const c of this.#all) c.close();
    this.#all.clear();
    this.#idle.length = 0;
  }
}
