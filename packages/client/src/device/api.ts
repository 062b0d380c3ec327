// The lease endpoints of the server (packages/api schemas/leases.ts), one typed method each. Device calls
// authenticate with the device credential (`rdd_…`); registration, device lists, revocation and rollback with the
// user's session token. Kept apart from ApiClient so the device agent can hold both credentials at once.

import type { CheckoutResponse, ChainResponse, Desktop, DesktopResponse, Device, HeartbeatRequest, HeartbeatResponse, LayersRequest, LeaseResponse, Operation, OperationProgress, RegisterDeviceResponse } from '@roamdesk/api';

import { type FetchFn, Transport } from '../http.ts';

const seg = (name: string): string => encodeURIComponent(name);

export interface LeaseApiOptions {
  server: string;
  token: string;
  fetch?: FetchFn;
  /** Per-request deadline in ms (default none). Offline detection uses a short one. */
  timeoutMs?: number;
}

export type OperationEnd = { state: 'succeeded' | 'failed' | 'cancelled'; error?: { code: string; message: string } };

export class LeaseApi {
  readonly #http: Transport;
  readonly #timeoutMs: number | undefined;

  constructor(opts: LeaseApiOptions) {
    this.#http = new Transport(opts.server, opts.token, opts.fetch ?? ((input, init) => fetch(input, init)));
    this.#timeoutMs = opts.timeoutMs;
  }

  get server(): string {
    return this.#http.server;
  }

  /** `<server>/api/v1`, for the transfer engine. */
  get apiBase(): string {
    return this.#http.url('').replace(/\/$/, '');
  }

  get token(): string {
    return this.#http.token ?? '';
  }

  #o(): { signal?: AbortSignal } {
    return this.#timeoutMs !== undefined ? { signal: AbortSignal.timeout(this.#timeoutMs) } : {};
  }

  // --- devices (user token)

  async registerDevice(name?: string): Promise<RegisterDeviceResponse> {
    return this.#http.json<RegisterDeviceResponse>('POST', '/devices', { body: { json: name !== undefined ? { name } : {} }, ...this.#o() });
  }

  async listDevices(): Promise<Device[]> {
    return (await this.#http.json<{ devices: Device[] }>('GET', '/devices', this.#o())).devices;
  }

  async revokeDevice(id: string): Promise<void> {
    await this.#http.empty('DELETE', `/devices/${seg(id)}`, this.#o());
  }

  async grantKey(): Promise<string> {
    return (await this.#http.json<{ grantKey: string }>('GET', '/grant-key', this.#o())).grantKey;
  }

  // --- device calls (device credential)

  async heartbeat(req: HeartbeatRequest): Promise<HeartbeatResponse> {
    return this.#http.json<HeartbeatResponse>('POST', '/devices/heartbeat', { body: { json: req }, ...this.#o() });
  }

  async checkout(name: string): Promise<CheckoutResponse> {
    return this.#http.json<CheckoutResponse>('POST', `/desktops/${seg(name)}/checkout`, { body: { json: {} }, ...this.#o() });
  }

  async confirmCheckout(name: string, generation: number): Promise<LeaseResponse> {
    return this.#http.json<LeaseResponse>('POST', `/desktops/${seg(name)}/checkout/confirm`, { body: { json: { generation } }, ...this.#o() });
  }

  async cancelCheckout(name: string, generation: number): Promise<LeaseResponse> {
    return this.#http.json<LeaseResponse>('POST', `/desktops/${seg(name)}/checkout/cancel`, { body: { json: { generation } }, ...this.#o() });
  }

  async replicate(name: string, req: LayersRequest): Promise<LeaseResponse> {
    return this.#http.json<LeaseResponse>('POST', `/desktops/${seg(name)}/replicate`, { body: { json: req }, ...this.#o() });
  }

  async checkin(name: string, req: LayersRequest): Promise<LeaseResponse> {
    return this.#http.json<LeaseResponse>('POST', `/desktops/${seg(name)}/checkin`, { body: { json: req }, ...this.#o() });
  }

  async rollback(name: string): Promise<LeaseResponse> {
    return this.#http.json<LeaseResponse>('POST', `/desktops/${seg(name)}/rollback`, { body: { json: {} }, ...this.#o() });
  }

  async lease(name: string): Promise<LeaseResponse> {
    return this.#http.json<LeaseResponse>('GET', `/desktops/${seg(name)}/lease`, this.#o());
  }

  async desktop(name: string): Promise<Desktop> {
    return (await this.#http.json<DesktopResponse>('GET', `/desktops/${seg(name)}`, this.#o())).desktop;
  }

  async chain(name: string): Promise<ChainResponse> {
    return this.#http.json<ChainResponse>('GET', `/desktops/${seg(name)}/objects`, this.#o());
  }

  /** Announce a replicate or check-in before uploading its layers (progress is posted to it). */
  async startOperation(name: string, kind: 'replicate' | 'checkin', generation: number): Promise<Operation> {
    return (await this.#http.json<{ operation: Operation }>('POST', `/desktops/${seg(name)}/operations`, { body: { json: { kind, generation } }, ...this.#o() })).operation;
  }

  async operation(id: string): Promise<Operation> {
    return (await this.#http.json<{ operation: Operation }>('GET', `/operations/${seg(id)}`, this.#o())).operation;
  }

  async operations(desktop: string): Promise<Operation[]> {
    return (await this.#http.json<{ operations: Operation[] }>('GET', '/operations', { query: { desktop }, ...this.#o() })).operations;
  }

  async operationProgress(id: string, p: OperationProgress): Promise<void> {
    await this.#http.empty('POST', `/operations/${seg(id)}/progress`, { body: { json: p }, ...this.#o() });
  }

  async finishOperation(id: string, end: OperationEnd): Promise<void> {
    await this.#http.empty('POST', `/operations/${seg(id)}/finish`, { body: { json: end }, ...this.#o() });
  }
}
