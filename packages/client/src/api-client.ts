// ApiClient: one typed method per route of the server's HTTP API (`/api/v1`, see packages/server/README.md).
// Request and response types come from @roamdesk/api, so a contract change breaks the build here, not at run time.

import type { ChainResponse, CreateDesktopRequest, CreateUserRequest, Desktop, DesktopListResponse, DesktopResponse, Event, EventListResponse, EventsQuery, Image, ImageFormat, ImageListResponse, ImageResponse, ImageVersionResponse, ImportImageRequest, LoginResponse, PublishImageVersionRequest, User, UserListResponse, UserResponse } from '@roamdesk/api';

import { type FetchFn, Transport, unreachable } from './http.ts';
import { assertTargetFree, type DownloadResult, openUpload, type ProgressFn, writeStreamToFile } from './transfer.ts';

export interface ApiClientOptions {
  /** Server base URL, e.g. `http://127.0.0.1:8760`. */
  server: string;
  /** Bearer token from `login`; omitted for a client that only logs in. */
  token?: string;
  /** Replace the global fetch (tests, proxies). */
  fetch?: FetchFn;
}

/**
 * `POST /desktops/:name/console`: a short-lived single-use token for the console WebSocket and the URL of the
 * console page. Declared here until the api package carries the schema; `url` may be relative to the server.
 */
export interface ConsoleSession {
  token: string;
  expiresAt: string;
  url: string;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface ExportOptions extends CallOptions {
  /** Replace an existing file (default: refuse with CLIENT_ERR_FILE_EXISTS). */
  overwrite?: boolean;
  onProgress?: ProgressFn;
}

export interface UploadOptions extends CallOptions {
  format?: ImageFormat;
  onProgress?: ProgressFn;
}

const seg = (name: string): string => encodeURIComponent(name);

export class ApiClient {
  private readonly http: Transport;

  constructor(opts: ApiClientOptions) {
    this.http = new Transport(opts.server, opts.token, opts.fetch ?? ((input, init) => fetch(input, init)));
  }

  /** The normalized server URL (no trailing slash). */
  get server(): string {
    return this.http.server;
  }

  get token(): string | undefined {
    return this.http.token;
  }

  // --- auth

  /** `POST /auth/login`; on success the client uses the new token for later calls. */
  async login(user: string, password: string, o: CallOptions = {}): Promise<LoginResponse> {
    const r = await this.http.json<LoginResponse>('POST', '/auth/login', { body: { json: { user, password } }, auth: false, ...o });
    this.http.token = r.token;
    return r;
  }

  /** `POST /auth/logout`: revokes the token of this client. */
  async logout(o: CallOptions = {}): Promise<void> {
    await this.http.empty('POST', '/auth/logout', o);
    this.http.token = undefined;
  }

  async me(o: CallOptions = {}): Promise<User> {
    return (await this.http.json<UserResponse>('GET', '/me', o)).user;
  }

  // --- users (admin)

  async listUsers(o: CallOptions = {}): Promise<User[]> {
    return (await this.http.json<UserListResponse>('GET', '/users', o)).users;
  }

  async getUser(name: string, o: CallOptions = {}): Promise<User> {
    return (await this.http.json<UserResponse>('GET', `/users/${seg(name)}`, o)).user;
  }

  async createUser(req: CreateUserRequest, o: CallOptions = {}): Promise<User> {
    return (await this.http.json<UserResponse>('POST', '/users', { body: { json: req }, ...o })).user;
  }

  async deleteUser(name: string, o: CallOptions = {}): Promise<void> {
    await this.http.empty('DELETE', `/users/${seg(name)}`, o);
  }

  // --- images

  async listImages(o: CallOptions = {}): Promise<Image[]> {
    return (await this.http.json<ImageListResponse>('GET', '/images', o)).images;
  }

  async getImage(name: string, o: CallOptions = {}): Promise<Image> {
    return (await this.http.json<ImageResponse>('GET', `/images/${seg(name)}`, o)).image;
  }

  /** `POST /images`: import a file that is already on the server machine (`req.path` is a server path). */
  async importImage(req: ImportImageRequest, o: CallOptions = {}): Promise<Image> {
    return (await this.http.json<ImageResponse>('POST', '/images', { body: { json: req }, ...o })).image;
  }

  /** `PUT /images/:name/content`: stream a local file to the server as a new image. */
  async uploadImage(name: string, file: string, o: UploadOptions = {}): Promise<Image> {
    const { size, stream } = await openUpload(file, o.onProgress);
    const opts = {
      body: { stream, length: size, contentType: 'application/octet-stream' },
      query: { format: o.format },
      ...(o.signal !== undefined ? { signal: o.signal } : {}),
    };
    return (await this.http.json<ImageResponse>('PUT', `/images/${seg(name)}/content`, opts)).image;
  }

  /**
   * `POST /images/:name/versions`: publish a new version of an image from a file already on the server machine
   * (`req.path` is a server path). The server stores it as one layer over the latest version.
   */
  async publishImageVersion(name: string, req: PublishImageVersionRequest, o: CallOptions = {}): Promise<ImageVersionResponse> {
    return this.http.json<ImageVersionResponse>('POST', `/images/${seg(name)}/versions`, { body: { json: req }, ...o });
  }

  /** `PUT /images/:name/versions`: stream a local file (the whole new disk) to the server as a new version. */
  async uploadImageVersion(name: string, file: string, o: UploadOptions = {}): Promise<ImageVersionResponse> {
    const { size, stream } = await openUpload(file, o.onProgress);
    const opts = {
      body: { stream, length: size, contentType: 'application/octet-stream' },
      query: { format: o.format },
      ...(o.signal !== undefined ? { signal: o.signal } : {}),
    };
    return this.http.json<ImageVersionResponse>('PUT', `/images/${seg(name)}/versions`, opts);
  }

  async deleteImage(name: string, o: CallOptions = {}): Promise<void> {
    await this.http.empty('DELETE', `/images/${seg(name)}`, o);
  }

  // --- desktops

  async listDesktops(o: CallOptions = {}): Promise<Desktop[]> {
    return (await this.http.json<DesktopListResponse>('GET', '/desktops', o)).desktops;
  }

  async getDesktop(name: string, o: CallOptions = {}): Promise<Desktop> {
    return (await this.http.json<DesktopResponse>('GET', `/desktops/${seg(name)}`, o)).desktop;
  }

  async createDesktop(req: CreateDesktopRequest, o: CallOptions = {}): Promise<Desktop> {
    return (await this.http.json<DesktopResponse>('POST', '/desktops', { body: { json: req }, ...o })).desktop;
  }

  async deleteDesktop(name: string, o: CallOptions = {}): Promise<void> {
    await this.http.empty('DELETE', `/desktops/${seg(name)}`, o);
  }

  async startDesktop(name: string, o: CallOptions = {}): Promise<Desktop> {
    return (await this.http.json<DesktopResponse>('POST', `/desktops/${seg(name)}/start`, o)).desktop;
  }

  /** `force`: QEMU quits at once; `timeoutSeconds`: how long the guest gets to power off (default: the server's). */
  async stopDesktop(name: string, o: CallOptions & { force?: boolean; timeoutSeconds?: number } = {}): Promise<Desktop> {
    const { force, timeoutSeconds, ...rest } = o;
    const query = { force: force === true ? 'true' : undefined, timeoutSeconds: timeoutSeconds?.toString() };
    return (await this.http.json<DesktopResponse>('POST', `/desktops/${seg(name)}/stop`, { query, ...rest })).desktop;
  }

  async restartDesktop(name: string, o: CallOptions = {}): Promise<Desktop> {
    return (await this.http.json<DesktopResponse>('POST', `/desktops/${seg(name)}/restart`, o)).desktop;
  }

  /** `GET /desktops/:name/log`: the last `tail` bytes of the serial console (server default 64 KiB). */
  async serialLog(name: string, o: CallOptions & { tail?: number } = {}): Promise<string> {
    const { tail, ...rest } = o;
    return this.http.text('GET', `/desktops/${seg(name)}/log`, { query: { tail }, ...rest });
  }

  /** `POST /desktops/:name/console`: a console token and the console page's URL (made absolute). */
  async createConsole(name: string, o: CallOptions = {}): Promise<ConsoleSession> {
    const r = await this.http.json<Partial<ConsoleSession>>('POST', `/desktops/${seg(name)}/console`, o);
    const fallback = `${this.server}/console/${seg(name)}`;
    const url = typeof r.url === 'string' && r.url !== '' ? new URL(r.url, `${this.server}/`).toString() : fallback;
    return { token: r.token ?? '', expiresAt: r.expiresAt ?? '', url };
  }

  /**
   * `GET /desktops/:name/objects`: the desktop's chain on the server, image first (what a device needs to hold
   * it; `prefetchDesktop` downloads it into the local store).
   */
  async desktopChain(name: string, o: CallOptions = {}): Promise<ChainResponse> {
    return this.http.json<ChainResponse>('GET', `/desktops/${seg(name)}/objects`, o);
  }

  /** `GET /desktops/:name/export` as a stream, for callers that pipe it elsewhere. */
  async exportStream(name: string, o: CallOptions = {}): Promise<{ body: ReadableStream<Uint8Array>; size: number | null }> {
    const res = await this.http.send('GET', `/desktops/${seg(name)}/export`, { ...o });
    const len = res.headers.get('content-length');
    const size = len !== null && /^\d+$/.test(len) ? Number(len) : null;
    if (res.body === null) return { body: new ReadableStream({ start: (c) => c.close() }), size: size ?? 0 };
    return { body: res.body, size };
  }

  /**
   * Download the desktop's current chain as one qcow2 into `file`: streamed to a temp file beside it,
   * fsynced, then renamed, so `file` is either absent or complete.
   */
  async exportDesktop(name: string, file: string, o: ExportOptions = {}): Promise<DownloadResult> {
    const overwrite = o.overwrite === true;
    await assertTargetFree(file, overwrite);
    const { body, size } = await this.exportStream(name, o.signal !== undefined ? { signal: o.signal } : {});
    const url = this.http.url(`/desktops/${seg(name)}/export`);
    return writeStreamToFile(body, file, {
      overwrite,
      total: size,
      ...(o.onProgress !== undefined ? { onProgress: o.onProgress } : {}),
      onReadError: (err) => unreachable(this.server, 'GET', url, err),
    });
  }

  // --- events

  async listEvents(query: EventsQuery = {}, o: CallOptions = {}): Promise<Event[]> {
    const q = { desktop: query.desktop, limit: query.limit, before: query.before };
    return (await this.http.json<EventListResponse>('GET', '/events', { query: q, ...o })).events;
  }
}
