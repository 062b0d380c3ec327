// The transport under ApiClient: URL building, bearer auth, and turning every failure into a typed error.
// Network failures become CLIENT_ERR_UNREACHABLE naming the URL; server refusals become ApiError with the
// server's code, message and data; anything else the server says becomes CLIENT_ERR_BAD_RESPONSE.

import { API_PREFIX } from '@roamdesk/api/core';
// The errors module alone: the transfer engine itself loads only when a transfer runs.
import { isUntrustedCertificate, UNTRUSTED_CERTIFICATE_HINT } from '@roamdesk/transfer/errors';

import { ApiError, ClientError } from './errors.ts';

/** A body the client may send: JSON, or raw bytes streamed from an async iterable. */
export type RequestBody = { json: unknown } | { stream: AsyncIterable<Uint8Array>; length: number; contentType: string };

export type Query = Readonly<Record<string, string | number | undefined>>;

export interface RequestOptions {
  body?: RequestBody;
  query?: Query;
  signal?: AbortSignal;
  /** Send the bearer token (default true). */
  auth?: boolean;
}

export type FetchFn = (input: string, init: RequestInit) => Promise<Response>;

/**
 * Parse and normalize a server URL: absolute http(s), no credentials, query or fragment; no trailing slash,
 * so `${url}/api/v1/…` is right. A path prefix is kept (a server behind a reverse proxy under `/roamdesk`).
 */
export function normalizeServerUrl(input: string): string {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw badUrl(input, 'it is not an absolute URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw badUrl(input, 'only http:// and https:// are supported');
  if (url.username !== '' || url.password !== '') throw badUrl(input, 'credentials in the URL are not supported');
  if (url.search !== '' || url.hash !== '') throw badUrl(input, 'it must not have a query or fragment');
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

function badUrl(input: string, why: string): ClientError {
  return new ClientError('CLIENT_ERR_BAD_URL', `invalid server URL ${JSON.stringify(input)}: ${why}`, {
    url: input,
    hint: 'give the server URL like http://127.0.0.1:8760',
  });
}

export class Transport {
  readonly server: string;
  token: string | undefined;
  private readonly fetchFn: FetchFn;

  constructor(server: string, token: string | undefined, fetchFn: FetchFn) {
    this.server = normalizeServerUrl(server);
    this.token = token;
    this.fetchFn = fetchFn;
  }

  url(path: string, query?: Query): string {
    const u = new URL(`${this.server}${API_PREFIX}${path}`);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) u.searchParams.set(k, String(v));
    return u.toString();
  }

  /** Send a request; resolves only for a 2xx response, whose body the caller reads. */
  async send(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
    const url = this.url(path, opts.query);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (opts.auth !== false && this.token !== undefined) headers['authorization'] = `Bearer ${this.token}`;
    const init: RequestInit = { method, headers, redirect: 'error' };
    if (opts.signal !== undefined) init.signal = opts.signal;
    const body = opts.body;
    if (body !== undefined && 'json' in body) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body.json);
    } else if (body !== undefined) {
      headers['content-type'] = body.contentType;
      headers['content-length'] = String(body.length);
      init.body = body.stream;
      // Node's fetch streams a request body only in half-duplex mode.
      (init as RequestInit & { duplex: 'half' }).duplex = 'half';
    }

    let res: Response;
    try {
      res = await this.fetchFn(url, init);
    } catch (err) {
      throw unreachable(this.server, method, url, err);
    }
    if (res.ok) return res;
    throw await errorFromResponse(res, method, url);
  }

  /** Send and parse a JSON answer. */
  async json<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.send(method, path, opts);
    return readJson<T>(res, method, this.url(path, opts.query));
  }

  /** Send and expect no body (204). */
  async empty(method: string, path: string, opts: RequestOptions = {}): Promise<void> {
    const res = await this.send(method, path, opts);
    await res.body?.cancel();
  }

  /** Send and read a text answer. */
  async text(method: string, path: string, opts: RequestOptions = {}): Promise<string> {
    const res = await this.send(method, path, opts);
    try {
      return await res.text();
    } catch (err) {
      throw unreachable(this.server, method, res.url, err);
    }
  }
}

/** The low-level cause of a fetch failure (`ECONNREFUSED`, `ENOTFOUND`, `UND_ERR_…`), if any. */
export function causeCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 5 && e instanceof Error; depth += 1) {
    const code = (e as Error & { code?: unknown }).code;
    if (typeof code === 'string') return code;
    e = e.cause;
  }
  return undefined;
}

export function unreachable(server: string, method: string, url: string, err: unknown): ClientError | ApiError {
  if (err instanceof ClientError || err instanceof ApiError) return err;
  if (err instanceof Error && err.name === 'AbortError') {
    return new ClientError('CLIENT_ERR_UNREACHABLE', `${method} ${url} was aborted`, { url, server, reason: 'aborted' }, { cause: err });
  }
  const code = causeCode(err);
  const why = code ?? (err instanceof Error && err.cause instanceof Error ? err.cause.message : String(err));
  const untrusted = isUntrustedCertificate(code);
  return new ClientError(
    'CLIENT_ERR_UNREACHABLE',
    `cannot reach the Roamdesk server at ${server}${untrusted ? ': its TLS certificate is not trusted' : ''} (${why})`,
    {
      url,
      server,
      ...(code !== undefined ? { cause: code } : {}),
      hint: untrusted
        ? UNTRUSTED_CERTIFICATE_HINT
        : `check that the server is running (roamdesk server), that ${server} is the right address and that it is reachable from here; log in again with the right URL if it moved`,
    },
    { cause: err },
  );
}

async function readJson<T>(res: Response, method: string, url: string): Promise<T> {
  let text: string;
  try {
    text = await res.text();
  } catch (err) {
    throw unreachable(new URL(url).origin, method, url, err);
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw badResponse(res.status, method, url, text);
  }
}

function badResponse(status: number, method: string, url: string, text: string): ClientError {
  return new ClientError('CLIENT_ERR_BAD_RESPONSE', `${method} ${url} answered HTTP ${status} with something that is not the Roamdesk API`, {
    url,
    status,
    body: text.slice(0, 200),
    hint: 'check that the URL points at a Roamdesk server (and not at a proxy or another service)',
  });
}

/** Turn a non-2xx response into ApiError (the API's one error shape) or BAD_RESPONSE (anything else). */
async function errorFromResponse(res: Response, method: string, url: string): Promise<Error> {
  let text = '';
  try {
    text = await res.text();
  } catch {
    // The body is only used for the detail; the status alone still says what happened.
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return badResponse(res.status, method, url, text);
  }
  const error = isRecord(body) ? body['error'] : undefined;
  if (!isRecord(error) || typeof error['code'] !== 'string' || typeof error['message'] !== 'string') {
    return badResponse(res.status, method, url, text);
  }
  const data = isRecord(error['data']) ? error['data'] : undefined;
  return new ApiError(res.status, error['code'], error['message'], data);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
