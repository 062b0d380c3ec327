/**
 * A push-based HTTP/1.1 response parser (RFC 9112) for the piece streams the receiver reads straight from its
 * socket (stream-client.ts). Pure: bytes in, callbacks out; no I/O, no allocation per body byte — body bytes
 * are handed on as views of the caller's buffer.
 *
 * What it accepts, and why it is strict: it talks to a Roamdesk server (or a proxy in front of one), so
 * anything odd is a protocol error rather than something to guess about.
 *   - status line `HTTP/1.x NNN reason` (§4); interim 1xx responses are handed to `interim` or skipped (§15.2 of RFC 9110);
 *   - header fields `name: value`, obs-fold refused (§5.2), the head bounded (MAX_HEAD_BYTES);
 *   - message body length (§6.3): none for 1xx/204/304; `Transfer-Encoding: chunked` (chunk extensions
 *     ignored, trailers skipped, §7.1); otherwise `Content-Length` (one value, or repeats of the same value);
 *     otherwise until the connection closes. Both Transfer-Encoding and Content-Length, or a transfer coding
 *     other than chunked, are refused (§6.1: a request-smuggling vector);
 *   - persistence (§9.3): HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 closes unless
 *     `Connection: keep-alive`; a body delimited by the close never leaves a reusable connection.
 */
import { TransferError } from './errors.ts';

export const MAX_HEAD_BYTES = 64 * 1024;
const MAX_CHUNK_LINE_BYTES = 4096;
/** 2^53 - 1 has 14 hex digits; a longer chunk size cannot be a real one. */
const MAX_CHUNK_SIZE_DIGITS = 13;

export interface ResponseHead {
  readonly status: number;
  readonly reason: string;
  /** Field names lower-cased; repeated fields joined with ", " (RFC 9110 §5.3). */
  readonly headers: ReadonlyMap<string, string>;
  /** The body length when known in advance (Content-Length), else null. */
  readonly contentLength: number | null;
}

export interface ResponseHandlers {
  head(head: ResponseHead): void;
  /** An interim (1xx) response's head; the final response follows. Skipped when not given. */
  interim?(head: ResponseHead): void;
  /** A run of body bytes: a view of the buffer given to `feed`, valid only during the call. */
  body(chunk: Buffer): void;
  end(): void;
}

type State = 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'chunk-data-end' | 'trailers' | 'until-close' | 'done';

function protocolError(message: string): TransferError {
  return new TransferError('XFER_ERR_PROTOCOL', `HTTP response: ${message}`);
}

export class ResponseParser {
  #state: State = 'head';
  /** Bytes of the head (or of a chunk-size line, or of the trailers) collected across feeds. */
  #line: Buffer[] = [];
  #lineBytes = 0;
  #remaining = 0;
  #trailerBytes = 0;
  #keepAlive = false;

  constructor(private readonly h: ResponseHandlers) {}

  get done(): boolean {
    return this.#state === 'done';
  }

  /** True once the response is complete and the connection may carry another request. */
  get reusable(): boolean {
    return this.#state === 'done' && this.#keepAlive;
  }

  /** Bytes not consumed are returned as a count: after `done`, anything left belongs to no request. */
  feed(buf: Buffer, start = 0, end = buf.length): number {
    let pos = start;
    while (pos < end && this.#state !== 'done') {
      switch (this.#state) {
        case 'head': {
          const stop = this.#collectUntil(buf, pos, end, '\r\n\r\n', MAX_HEAD_BYTES, 'the response head');
          if (stop < 0) return 0;
          pos = stop;
          this.#onHead(this.#takeLine());
          break;
        }
        case 'length':
          pos = this.#deliver(buf, pos, end);
          if (this.#remaining === 0) this.#finish();
          break;
        case 'until-close':
          this.h.body(buf.subarray(pos, end));
          pos = end;
          break;
        case 'chunk-size': {
          const stop = this.#collectUntil(buf, pos, end, '\r\n', MAX_CHUNK_LINE_BYTES, 'a chunk-size line');
          if (stop < 0) return 0;
          pos = stop;
          this.#onChunkSize(this.#takeLine().toString('latin1'));
          break;
        }
        case 'chunk-data':
          pos = this.#deliver(buf, pos, end);
          if (this.#remaining === 0) this.#state = 'chunk-data-end';
          break;
        case 'chunk-data-end': {
          const stop = this.#collectUntil(buf, pos, end, '\r\n', 2, 'the CRLF after a chunk');
          if (stop < 0) return 0;
          pos = stop;
          if (this.#takeLine().length !== 2) throw protocolError('chunk data longer than its size');
          this.#state = 'chunk-size';
          break;
        }
        case 'trailers': {
          // Trailer fields end with an empty line; a response without trailers has just that CRLF.
          const stop = this.#collectUntil(buf, pos, end, '\r\n', MAX_HEAD_BYTES, 'the trailer section');
          if (stop < 0) return 0;
          pos = stop;
          const line = this.#takeLine();
          if (line.length === 2) this.#finish();
          else this.#trailerBytes += line.length;
          if (this.#trailerBytes > MAX_HEAD_BYTES) throw protocolError('trailer section too large');
          break;
        }
      }
    }
    return end - pos;
  }

  /** Hands on up to #remaining body bytes from buf[pos, end); returns the position after them. */
  #deliver(buf: Buffer, pos: number, end: number): number {
    const n = Math.min(this.#remaining, end - pos);
    this.h.body(buf.subarray(pos, pos + n));
    this.#remaining -= n;
    return pos + n;
  }

  /** The connection closed. Completes a body delimited by the close; anything else was cut short. */
  eof(): void {
    if (this.#state === 'done') return;
    if (this.#state === 'until-close') {
      this.#keepAlive = false;
      this.#finish();
      return;
    }
    throw protocolError(this.#state === 'head' && this.#lineBytes === 0 ? 'the connection closed before a response' : 'the connection closed in the middle of the response');
  }

  /**
   * Appends bytes up to and including `delimiter` to the pending line. Returns the position after the
   * delimiter, or -1 when the buffer ended first (everything consumed and kept).
   */
  #collectUntil(buf: Buffer, pos: number, end: number, delimiter: string, limit: number, what: string): number {
    // The delimiter may straddle two feeds: search the joint of the kept tail and the new bytes.
    const keep = delimiter.length - 1;
    const tail = this.#lineBytes > 0 ? this.#tail(keep) : Buffer.alloc(0);
    const fresh = buf.subarray(pos, Math.min(end, pos + limit + delimiter.length));
    const window = tail.length > 0 ? Buffer.concat([tail, fresh]) : fresh;
    const at = window.indexOf(delimiter, 0, 'latin1');
    if (at >= 0) {
      const take = at + delimiter.length - tail.length;
      this.#append(buf.subarray(pos, pos + take));
      if (this.#lineBytes > limit) throw protocolError(`${what} is longer than ${limit} bytes`);
      return pos + take;
    }
    this.#append(buf.subarray(pos, end));
    if (this.#lineBytes > limit) throw protocolError(`${what} is longer than ${limit} bytes`);
    return -1;
  }

  #append(b: Buffer): void {
    if (b.length === 0) return;
    this.#line.push(Buffer.from(b)); // copied: the caller's buffer is reused after feed() returns
    this.#lineBytes += b.length;
  }

  #tail(n: number): Buffer {
    const all = Buffer.concat(this.#line);
    this.#line = [all];
    return all.subarray(Math.max(0, all.length - n));
  }

  #takeLine(): Buffer {
    const line = this.#line.length === 1 ? this.#line[0]! : Buffer.concat(this.#line);
    this.#line = [];
    this.#lineBytes = 0;
    return line;
  }

  #onHead(raw: Buffer): void {
    const lines = raw.toString('latin1').slice(0, -4).split('\r\n');
    const statusLine = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([^\r\n]*))?$/.exec(lines[0] ?? '');
    if (statusLine === null) throw protocolError(`not an HTTP/1.x status line: ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`);
    const minor = Number(statusLine[1]);
    const status = Number(statusLine[2]);
    const headers = new Map<string, string>();
    for (const line of lines.slice(1)) {
      if (line.startsWith(' ') || line.startsWith('\t')) throw protocolError('obsolete line folding in a header field');
      const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*$/.exec(line);
      if (m === null) throw protocolError(`malformed header field ${JSON.stringify(line.slice(0, 80))}`);
      const name = m[1]!.toLowerCase();
      const prev = headers.get(name);
      headers.set(name, prev === undefined ? m[2]! : `${prev}, ${m[2]!}`);
    }
    if (status < 200) {
      // An interim response (100 Continue, 102 Processing, 103 Early Hints): the final one follows on the same connection.
      this.h.interim?.({ status, reason: statusLine[3] ?? '', headers, contentLength: 0 });
      this.#state = 'head';
      return;
    }
    const connection = (headers.get('connection') ?? '').toLowerCase().split(',').map((t) => t.trim());
    this.#keepAlive = minor === 1 ? !connection.includes('close') : connection.includes('keep-alive');
    const te = headers.get('transfer-encoding');
    const cl = headers.get('content-length');
    let contentLength: number | null = null;
    if (te !== undefined) {
      if (cl !== undefined) throw protocolError('both Transfer-Encoding and Content-Length');
      // Chunked framing from an HTTP/1.0 sender is suspect: read it, never reuse the connection (§6.1).
      if (minor === 0) this.#keepAlive = false;
      if (te.toLowerCase().trim() !== 'chunked') throw protocolError(`unsupported transfer coding ${JSON.stringify(te)}`);
    } else if (cl !== undefined) {
      const values = new Set(cl.split(',').map((v) => v.trim()));
      const only = values.size === 1 ? [...values][0]! : '';
      if (!/^\d{1,15}$/.test(only)) throw protocolError(`invalid Content-Length ${JSON.stringify(cl)}`);
      contentLength = Number(only);
    }
    const noBody = status === 204 || status === 304;
    this.h.head({ status, reason: statusLine[3] ?? '', headers, contentLength: noBody ? 0 : contentLength });
    if (noBody || contentLength === 0) this.#finish();
    else if (te !== undefined) this.#state = 'chunk-size';
    else if (contentLength !== null) {
      this.#remaining = contentLength;
      this.#state = 'length';
    } else {
      this.#keepAlive = false;
      this.#state = 'until-close';
    }
  }

  #onChunkSize(line: string): void {
    const m = /^([0-9A-Fa-f]+)[ \t]*(;.*)?\r\n$/.exec(line);
    if (m === null || m[1]!.length > MAX_CHUNK_SIZE_DIGITS) throw protocolError(`invalid chunk size line ${JSON.stringify(line.slice(0, 40))}`);
    const size = parseInt(m[1]!, 16);
    if (size === 0) {
      this.#state = 'trailers';
      return;
    }
    this.#remaining = size;
    this.#state = 'chunk-data';
  }

  #finish(): void {
    this.#state = 'done';
    this.h.end();
  }
}
