// The device agent: check-out, the local VM, replicate, check-in, rollback and status, for one ROAMDESK_HOME.
// A library (never logs or exits); the CLI renders what it returns and its progress callbacks.
//
// Files in ROAMDESK_HOME (all 0600 in 0700 directories, replaced atomically):
//   device.json                   this device's registration and credential (identity.ts)
//   checkouts/<name>.json         one record per desktop checked out here (records.ts)
//   clock.json                    monotonic elapsed time for the offline grant (clock.ts)
//   store/                        the local content-addressed store: images, layers, overlays
//   vms/<desktop id>/             the local VM's run dir (local-vm.ts)
//   locks/<name>.lock             one lease operation per desktop at a time (lock.ts)
//   quarantine/<desktop>-<time>/  work the server no longer accepts (quarantine.ts)
//
// Every online command first sends a heartbeat: it renews the offline grants and tells the device which of
// its leases moved away (rollback, cancelled check-out, revoked device); those records become 'lost' and their
// local work goes to quarantine as soon as no VM has it open.

import { readdir, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';

import type { Device, LeaseResponse, OperationProgress, StoredObject } from '@roamdesk/api';
import { QemuImg } from '@roamdesk/qemu';
import { hasOwnClusters, type LiveSealResult, readHeader, Store, type ObjectInfo, type SealOptions } from '@roamdesk/store';
import type { ManifestCache, TransferProgress, TransferReport } from '@roamdesk/transfer';

import { ApiError, ClientError } from '../errors.ts';
import { type LocalStoreLock, lockLocalStore } from '../local-store.ts';
import type { FetchFn } from '../http.ts';
import { LeaseApi } from './api.ts';
import { DeviceClock, systemTime, type ClockReading, type TimeSource } from './clock.ts';
import { DeviceError } from './errors.ts';
import { checkGrant, verifyGrant, type GrantCheck } from './grant.ts';
import { IdentityStore, type DeviceIdentity } from './identity.ts';
import { localRunDir, localVm, localVmPause, refuseDiskPause, removeRunDir, resumeLocalVm, startLocalVm, stopLocalVm, withLocalQmp, DISK_DEVICE, type LocalVmInfo, type LocalVmPause, type StartLocalOptions, type StopResult } from './local-vm.ts';
import { keeperPid, lockDesktop, SCHEDULED_REPLICATION, type Lock } from './lock.ts';
import { operationReporter, type OperationReporter } from './operation-reporter.ts';
import { quarantineDesktop, type QuarantineEntry } from './quarantine.ts';
import { pendingLayers, RecordStore, sealedTop, type LocalDesktop } from './records.ts';

/** Chains above the replicated top longer than this are compacted before they are sent (issue 5 item 6). */
export const DEFAULT_MAX_CHAIN_LENGTH = 8;
/**
 * Offline detection: a command that can work offline (start, status) gives up on the server after this long. A
 * refused or unroutable connection fails at once; this is for a server that does not answer. Not shorter: a slow
 * link's round trip (reliability.md T6: 2 s ± 1 s each way, behind transfer bytes) is an answer, not "offline".
 */
const QUICK_TIMEOUT_MS = 15_000;
/** The heartbeat that opens a command which needs the server anyway (check-out, replicate, check-in). */
const ONLINE_HEARTBEAT_MS = 30_000;
const PROGRESS_POST_MS = 1000;
/** An operation hears from the device at least this often while it transfers (operation-reporter.ts). */
const PROGRESS_KEEPALIVE_MS = 60_000;

export type AgentStep =
  | 'heartbeat' | 'checkout' | 'download' | 'verify' | 'overlay' | 'confirm' | 'stop' | 'seal' | 'compact' | 'upload'
  | 'commit' | 'quarantine' | 'cleanup' | 'cancel' | 'rollback' | 'wait';

export interface AgentProgress {
  step: AgentStep;
  desktop: string;
  /** Present while objects move, with the objects (bottom first). */
  transfer?: TransferProgress;
  objects?: readonly StoredObject[];
}
export type AgentProgressFn = (p: AgentProgress) => void;

export interface UserSession {
  server: string;
  token: string;
}

export interface DeviceAgentOptions {
  home: string;
  /** The user's session (register, device lists, rollback); device calls use the device credential. */
  session?: UserSession | null;
  /** Opens the local store at `<home>/store`. The CLI passes its shared helper. */
  openStore?: (root: string) => Promise<Store>;
  time?: TimeSource;
  fetch?: FetchFn;
  /** Deadline of each lease call in ms (default 5 min: check-out waits for the server VM to stop). */
  callTimeoutMs?: number;
  maxChainLength?: number;
  qemuImg?: QemuImg;
  /** How long to wait for another process's store lock (default 30 s). */
  storeLockWaitMs?: number;
}

export interface CheckoutResult {
  desktop: string;
  generation: number;
  already: boolean;
  chain: string[];
  overlay: string;
  download: TransferReport | null;
  grantExpiresAt: string | null;
}

export interface SendResult {
  desktop: string;
  generation: number;
  top: string;
  layersSent: string[];
  compacted: boolean;
  upload: TransferReport | null;
}

export interface CheckinResult extends SendResult {
  stopped: StopResult | null;
  /** The check-in had already been committed by an earlier, interrupted run. */
  alreadyCommitted: boolean;
}

export interface HeartbeatResult {
  online: boolean;
  device: Device | null;
  /** Desktops whose lease moved away: their records are now 'lost'. */
  lost: string[];
  /** Every desktop the server answered valid:false for (lost, and check-ins that may have committed). */
  invalid: string[];
  error: string | null;
}

export interface LocalChainFiles {
  image: string;
  layers: string[];
  overlay: string | null;
}

/** A desktop checked out to this device, as `roamdesk status` shows it. */
export interface CheckoutStatus extends LocalChainFiles {
  desktop: string;
  desktopId: string;
  location: 'this-device';
  device: { id: string; name: string } | null;
  state: LocalDesktop['state'];
  generation: number;
  lostReason: string | null;
  checkedOutAt: string;
  /** `paused`: why a running VM is paused (a full disk, a disk error, a request), and what to do; null when it runs on. */
  vm: { running: boolean; pid: number | null; vncSocket: string | null; serialLog: string; paused: LocalVmPause | null };
  /** Sealed objects in the local chain (image included), how many of them the server holds, how many it lacks. */
  layerCounts: { local: number; onServer: number; pending: number };
  /** Unsent sealed layers plus the overlay's current size. */
  bytesPendingUpload: number;
  replicatedTop: string;
  replicatedAt: string | null;
  lastReplication: LocalDesktop['lastReplication'];
  lastContact: string | null;
  offlineLease: (GrantCheck & { maxOfflineSeconds: number; grantExpiresAt: string }) | null;
  /**
   * The server's scheduled replication (null: none): how often, when the next one is due (from the last
   * replication, else the check-out), and the keeper that does it while the local VM runs (null: none runs).
   */
  scheduledReplication: { everySeconds: number; dueAt: string; keeperPid: number | null } | null;
}

function isApi(err: unknown, code: string): err is ApiError {
  return err instanceof ApiError && err.code === code;
}

function describe(o: ObjectInfo): StoredObject {
  return { id: o.id, kind: o.kind, parent: o.parent, size: o.size, virtualSize: o.virtualSize };
}

/** An unreachable server (or a timeout): the command may go on offline. */
export function isOffline(err: unknown): boolean {
  return err instanceof ClientError && err.code === 'CLIENT_ERR_UNREACHABLE';
}

export class DeviceAgent {
  readonly home: string;
  readonly identity: IdentityStore;
  readonly records: RecordStore;
  readonly clock: DeviceClock;
  readonly #opts: DeviceAgentOptions;
  #store: Promise<Store> | undefined;
  /** Upload manifests of the layers this agent sealed (memory only: a check-in seals and uploads in one run). */
  #manifests: ManifestCache | undefined;
  readonly #img: QemuImg;
  /** The local store's lock (store.lock, shared with prefetch), held while this agent changes the store; re-entrant. */
  #storeLock: { depth: number; held: LocalStoreLock | null } = { depth: 0, held: null };

  constructor(opts: DeviceAgentOptions) {
    this.#opts = opts;
    this.home = opts.home;
    this.identity = new IdentityStore(opts.home);
    this.records = new RecordStore(opts.home);
    this.clock = new DeviceClock(opts.home, opts.time ?? systemTime);
    this.#img = opts.qemuImg ?? new QemuImg();
  }

  get storeRoot(): string {
    return join(this.home, 'store');
  }

  /** Where the local chain's files live (objects and overlays: store/layout.ts), for space checks. */
  get #objectsDir(): string {
    return join(this.storeRoot, 'objects');
  }

  /**
   * The local store. Opened as its writer (stale temp files removed) when this agent holds the store lock, else
   * as a reader (another roamdesk process, e.g. a prefetch, may be writing it).
   */
  async store(): Promise<Store> {
    const reader = this.#storeLock.depth === 0;
    this.#store ??= this.#opts.openStore !== undefined ? this.#opts.openStore(this.storeRoot) : Store.open(this.storeRoot, { reader });
    return this.#store;
  }

  /**
   * Hold the local store's lock (the one prefetch takes) while changing the store: sealing, compacting,
   * downloading, creating or discarding overlays, quarantining. Waits up to 30 s for another process to finish.
   */
  async #lockStore(purpose: string): Promise<{ release(): Promise<void> }> {
    const l = this.#storeLock;
    if (l.depth === 0) {
      const deadline = Date.now() + (this.#opts.storeLockWaitMs ?? 30_000);
      for (;;) {
        try {
          l.held = await lockLocalStore(this.home, purpose);
          break;
        } catch (err) {
          if (!(err instanceof ClientError && err.code === 'CLIENT_ERR_BUSY') || Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    }
    l.depth += 1;
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        l.depth -= 1;
        if (l.depth === 0) {
          const held = l.held;
          l.held = null;
          await held?.release();
        }
      },
    };
  }

  /** The desktop lock for a user's command: it waits (up to 30 minutes) for a round of scheduled replication to end. */
  async #lockForUser(name: string, what: string, opts: { onProgress?: AgentProgressFn; signal?: AbortSignal } = {}): Promise<Lock> {
    return lockDesktop(this.home, name, what, {
      waitForScheduledMs: 30 * 60_000,
      onWait: () => opts.onProgress?.({ step: 'wait', desktop: name }),
      ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
    });
  }

  /** The compaction threshold: this agent's option, else the server's policy, else DEFAULT_MAX_CHAIN_LENGTH. */
  maxChainLength(rec: LocalDesktop): number {
    return this.#opts.maxChainLength ?? rec.maxChainLength ?? DEFAULT_MAX_CHAIN_LENGTH;
  }

  #api(id: DeviceIdentity, timeoutMs?: number): LeaseApi {
    const t = timeoutMs ?? this.#opts.callTimeoutMs ?? 300_000;
    return new LeaseApi({ server: id.server, token: id.credential, timeoutMs: t, ...(this.#opts.fetch !== undefined ? { fetch: this.#opts.fetch } : {}) });
  }

  #userApi(): LeaseApi {
    const s = this.#opts.session;
    if (s === null || s === undefined) {
      throw new ClientError('CLIENT_ERR_NOT_LOGGED_IN', 'not logged in: run `roamdesk login URL --user NAME`', { hint: 'log in first' });
    }
    return new LeaseApi({ server: s.server, token: s.token, timeoutMs: this.#opts.callTimeoutMs ?? 60_000, ...(this.#opts.fetch !== undefined ? { fetch: this.#opts.fetch } : {}) });
  }

  // --- devices

  /** Register this machine with the logged-in user's server (once per home; again with `force`). */
  async register(opts: { name?: string; force?: boolean } = {}): Promise<{ identity: DeviceIdentity; created: boolean }> {
    const existing = await this.identity.load();
    const api = this.#userApi();
    if (existing !== null && existing.server === api.server && opts.force !== true) return { identity: existing, created: false };
    const r = await api.registerDevice(opts.name);
    const identity: DeviceIdentity = {
      version: 1, server: api.server, id: r.device.id, name: r.device.name, owner: r.device.owner, credential: r.credential,
      grantKey: r.grantKey, registeredAt: r.device.createdAt,
    };
    await this.identity.save(identity);
    await this.clock.now();
    return { identity, created: true };
  }

  async listDevices(): Promise<Device[]> {
    return this.#userApi().listDevices();
  }

  async revokeDevice(id: string): Promise<void> {
    await this.#userApi().revokeDevice(id);
  }

  // --- heartbeat and grants

  /** Record a contact with the server: the grant (verified) and the clock reading it counts from. */
  async #contact(rec: LocalDesktop, id: DeviceIdentity, grant: string | undefined, reading?: ClockReading, policy?: { maxChainLength?: number; replicateEverySeconds?: number }): Promise<void> {
    const now = reading ?? (await this.clock.now());
    if (policy?.maxChainLength !== undefined) rec.maxChainLength = policy.maxChainLength;
    if (policy?.replicateEverySeconds !== undefined) rec.replicateEverySeconds = policy.replicateEverySeconds;
    if (grant !== undefined) {
      const body = verifyGrant(grant, id.grantKey);
      if (body.deviceId !== id.id || body.desktop !== rec.name || body.generation !== rec.generation) {
        throw new DeviceError('DEVICE_ERR_GRANT_INVALID', `the server sent a grant for ${body.desktop} generation ${body.generation}, not ${rec.name} generation ${rec.generation}`, {});
      }
      rec.grant = grant;
      rec.grantReceived = { ...now, at: new Date(now.trustedWallMs).toISOString() };
    }
    rec.lastContact = { ...now, at: new Date(now.trustedWallMs).toISOString() };
  }

  /**
   * Tell the server which leases this device holds; renew their grants; mark the ones that moved away as lost.
   * Offline (server unreachable) is not an error: `online: false`. A revoked device loses every lease.
   */
  async heartbeat(opts: { timeoutMs?: number } = {}): Promise<HeartbeatResult> {
    const id = await this.identity.load();
    if (id === null) return { online: false, device: null, lost: [], invalid: [], error: 'not registered' };
    const records = (await this.records.list()).filter((r) => r.state !== 'lost' && r.server === id.server);
    const api = this.#api(id, opts.timeoutMs ?? QUICK_TIMEOUT_MS);
    let res;
    try {
      res = await api.heartbeat({ leases: records.map((r) => ({ desktop: r.name, generation: r.generation })) });
    } catch (err) {
      if (isOffline(err)) return { online: false, device: null, lost: [], invalid: [], error: (err as Error).message };
      if (isApi(err, 'DEVICE_REVOKED')) {
        for (const r of records) await this.#markLost(r, 'this device was revoked by an administrator');
        const names = records.map((r) => r.name);
        return { online: true, device: null, lost: names, invalid: names, error: err.message };
      }
      throw err;
    }
    const reading = await this.clock.now();
    const lost: string[] = [];
    const invalid: string[] = [];
    for (const sent of records) {
      const l = res.leases.find((x) => x.desktop === sent.name);
      if (l === undefined) continue;
      // Read again: during the round trip another command (a check-in, the keeper's replication) may have changed
      // or removed the record; a heartbeat must neither write back the old one nor bring a removed one back.
      const r = await this.records.load(sent.name);
      if (r === null || r.generation !== sent.generation || r.state === 'lost') continue;
      if (!l.valid) {
        invalid.push(r.name);
        // A check-in that committed before its answer was lost also reads as "moved away": checkin() tells
        // the two apart (the server answers a retried check-in as the first time).
        if (r.state === 'checking-in') continue;
        await this.#markLost(r, `the server reports that the lease (generation ${r.generation}) moved away: rolled back, cancelled or revoked`);
        lost.push(r.name);
        continue;
      }
      await this.#contact(r, id, l.grant, reading, l);
      await this.records.save(r);
    }
    return { online: true, device: res.device, lost, invalid, error: null };
  }

  async #markLost(r: LocalDesktop, reason: string): Promise<void> {
    r.state = 'lost';
    r.lostReason = reason;
    await this.records.save(r);
  }

  /** The offline grant check for starting the local VM. */
  async grantCheck(rec: LocalDesktop): Promise<(GrantCheck & { maxOfflineSeconds: number; grantExpiresAt: string }) | null> {
    const id = await this.identity.load();
    if (id === null || rec.grant === null || rec.lastContact === null) return null;
    let body;
    try {
      body = verifyGrant(rec.grant, id.grantKey);
    } catch (err) {
      return { ok: false, reason: (err as Error).message, expiresAt: new Date(0).toISOString(), offlineSeconds: Number.POSITIVE_INFINITY, secondsLeft: 0, maxOfflineSeconds: 0, grantExpiresAt: new Date(0).toISOString() };
    }
    const c = checkGrant(body, { desktop: rec.name, deviceId: id.id, generation: rec.generation }, rec.lastContact, await this.clock.now(), rec.grantReceived ?? rec.lastContact);
    return { ...c, maxOfflineSeconds: body.maxOfflineSeconds, grantExpiresAt: body.expiresAt };
  }

  // --- check-out

  async checkout(name: string, opts: { onProgress?: AgentProgressFn; signal?: AbortSignal } = {}): Promise<CheckoutResult> {
    const id = await this.identity.require();
    const lock = await lockDesktop(this.home, name, 'check-out');
    let storeLock: { release(): Promise<void> } | undefined;
    try {
      const step = (s: AgentStep, transfer?: TransferProgress, objects?: readonly StoredObject[]): void =>
        opts.onProgress?.({ step: s, desktop: name, ...(transfer !== undefined ? { transfer } : {}), ...(objects !== undefined ? { objects } : {}) });
      step('heartbeat');
      await this.heartbeat({ timeoutMs: ONLINE_HEARTBEAT_MS });
      let rec = await this.records.load(name);
      if (rec !== null && rec.state === 'lost') {
        await this.#quarantineIfStopped(rec);
        rec = await this.records.load(name);
      }
      if (rec !== null && rec.state !== 'checking-out' && rec.state !== 'lost') {
        return this.#checkoutResult(rec, true, null);
      }
      const api = this.#api(id);
      // Loaded on first use, like prefetch's: commands that move nothing do not pay for it at start-up. It loads,
      // and starts its hashing worker, while the server stops and seals the desktop.
      const transfer = import('@roamdesk/transfer').then((t) => {
        t.prewarmObjectHasher();
        return t;
      });
      transfer.catch(() => undefined);
      step('checkout');
      let co;
      try {
        co = await api.checkout(name);
      } catch (err) {
        // The confirm of an earlier run may have succeeded with the record save lost: the lease is already ours.
        if (rec !== null && isApi(err, 'CHECKED_OUT')) {
          const lease = (await api.lease(name)).lease;
          if (lease.deviceId === id.id && lease.state === 'checked-out' && lease.generation === rec.generation && rec.overlay !== null) {
            rec.state = 'checked-out';
            await this.records.save(rec);
            await this.heartbeat();
            return this.#checkoutResult((await this.records.load(name)) ?? rec, true, null);
          }
        }
        throw err;
      }
      const top = co.chain.at(-1);
      if (top === undefined) throw new DeviceError('DEVICE_ERR_CHAIN_INVALID', 'the server sent an empty chain', { desktop: name });
      storeLock = await this.#lockStore(`check-out ${name}`);
      const store = await this.store();
      if (rec !== null && rec.generation !== co.lease.generation) {
        // A check-out from an earlier generation that never completed: its overlay holds nothing of value
        // (the VM never ran on it), so start over.
        if (rec.overlay !== null) await store.discardOverlay(rec.overlay).catch(() => undefined);
        rec = null;
      }
      if (rec === null) {
        const d = await this.#desktopInfo(api, name);
        rec = {
          version: 1, name, desktopId: d.id, server: id.server, deviceId: id.id, state: 'checking-out', generation: co.lease.generation,
          operation: co.operation, checkedOutAt: co.lease.since, chain: co.chain, replicatedTop: top.id, replicatedAt: co.lease.replicatedAt,
          lastReplication: null, overlay: null, grant: null, lastContact: null,
          config: { memoryMiB: d.memoryMiB, cpus: d.cpus, kernel: d.kernel, initrd: d.initrd, append: d.append },
          garbage: [], lostReason: null, maxChainLength: co.maxChainLength ?? null, layersOperation: null,
        };
      } else {
        rec.operation = co.operation;
        rec.chain = co.chain;
        rec.replicatedTop = top.id;
        rec.maxChainLength = co.maxChainLength ?? rec.maxChainLength;
      }
      await this.#contact(rec, id, undefined, undefined, co);
      await this.records.save(rec);

      const reporter = this.#operationReporter(api, co.operation);
      let report: TransferReport;
      try {
        const { downloadObjects } = await transfer;
        report = await downloadObjects({
          store, remote: { apiBase: api.apiBase, token: id.credential }, objects: co.chain,
          ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
          onProgress: (p) => {
            step('download', p, co.chain);
            reporter.update('download', p);
          },
        });
      } finally {
        await reporter.flush();
      }
      step('verify');
      const local = await store.chain(top.id);
      if (local.length !== co.chain.length || local.some((o, i) => o.id !== co.chain[i]?.id)) {
        throw new DeviceError('DEVICE_ERR_CHAIN_INVALID', `the local chain of ${top.id} is not the one the server described`, { desktop: name });
      }
      step('overlay');
      if (rec.overlay === null || !(await exists(rec.overlay.path)) || rec.overlay.parent !== top.id) {
        rec.overlay = await store.createOverlay(top.id, { label: 'local' });
        await this.records.save(rec);
      }
      await storeLock.release();
      step('confirm');
      const confirmed = await api.confirmCheckout(name, rec.generation);
      rec.state = 'checked-out';
      rec.replicatedAt = confirmed.lease.replicatedAt;
      await this.#contact(rec, id, confirmed.grant, undefined, confirmed);
      await this.records.save(rec);
      return this.#checkoutResult(rec, false, report);
    } finally {
      await storeLock?.release();
      await lock.release();
    }
  }

  async #desktopInfo(api: LeaseApi, name: string) {
    try {
      return await api.desktop(name);
    } catch (err) {
      if (!(err instanceof ApiError) || (err.status !== 401 && err.status !== 403) || this.#opts.session == null) throw err;
      return this.#userApi().desktop(name);
    }
  }

  async #checkoutResult(rec: LocalDesktop, already: boolean, download: TransferReport | null): Promise<CheckoutResult> {
    const g = await this.grantCheck(rec);
    return {
      desktop: rec.name, generation: rec.generation, already, chain: rec.chain.map((o) => o.id), overlay: rec.overlay?.path ?? '',
      download, grantExpiresAt: g?.expiresAt ?? null,
    };
  }

  /** The progress of `operation` (null: none to report to) goes to the server while it runs (operation-reporter.ts). */
  #operationReporter(api: LeaseApi, operation: string | null): OperationReporter {
    const post = (p: OperationProgress): Promise<void> => (operation === null ? Promise.resolve() : api.operationProgress(operation, p));
    return operationReporter(post, { everyMs: PROGRESS_POST_MS, keepaliveMs: PROGRESS_KEEPALIVE_MS });
  }

  /** Give the lease back before the check-out completed (`roamdesk checkout --cancel`). */
  async cancelCheckout(name: string): Promise<{ desktop: string; generation: number }> {
    const id = await this.identity.require();
    const lock = await lockDesktop(this.home, name, 'cancel');
    try {
      const rec = await this.records.load(name);
      const api = this.#api(id);
      let generation = rec?.generation;
      if (rec !== null && rec.state !== 'checking-out') {
        throw new DeviceError('DEVICE_ERR_LEASE_STATE', `desktop ${name} is ${rec.state} here, not checking out`, {
          desktop: name, hint: rec.state === 'checked-out' ? `check it in (roamdesk checkin ${name}) or roll it back (roamdesk rollback ${name})` : undefined,
        });
      }
      if (generation === undefined) {
        const lease = (await api.lease(name)).lease;
        if (lease.deviceId !== id.id || lease.state !== 'checking-out') {
          throw new DeviceError('DEVICE_ERR_NOT_CHECKED_OUT', `desktop ${name} is not being checked out to this device`, { desktop: name });
        }
        generation = lease.generation;
      }
      const r = await api.cancelCheckout(name, generation);
      if (rec !== null) {
        if (rec.overlay !== null) {
          const sl = await this.#lockStore(`cancel ${name}`);
          try {
            await (await this.store()).discardOverlay(rec.overlay).catch(() => undefined);
          } finally {
            await sl.release();
          }
        }
        await this.records.remove(name);
      }
      return { desktop: name, generation: r.lease.generation };
    } finally {
      await lock.release();
    }
  }

  // --- the local VM

  /** The local record of a desktop, or null when it is not checked out here. */
  async local(name: string): Promise<LocalDesktop | null> {
    return this.records.load(name);
  }

  /** Starts the local VM, or resumes it when a disk error (or a request) paused it (`resumed`: why it was paused). */
  async start(name: string, opts: StartLocalOptions & { offline?: boolean } = {}): Promise<LocalVmInfo & { grant: GrantCheck | null; online: boolean; resumed?: LocalVmPause }> {
    let rec = await this.records.require(name);
    let online = false;
    if (opts.offline !== true) {
      const hb = await this.heartbeat();
      online = hb.online;
      rec = await this.records.require(name);
      if (hb.invalid.includes(name) && rec.state === 'checking-in') {
        throw new DeviceError('DEVICE_ERR_LEASE_STATE', `the check-in of ${name} may have been committed already`, { desktop: name, hint: `finish it: roamdesk checkin ${name}` });
      }
    }
    if (rec.state === 'lost') {
      await this.#quarantineIfStopped(rec);
      throw this.#lostError(rec);
    }
    if (rec.state === 'checking-out') {
      throw new DeviceError('DEVICE_ERR_LEASE_STATE', `the check-out of ${name} is not finished`, { desktop: name, hint: `run roamdesk checkout ${name} again to finish it` });
    }
    const grant = await this.grantCheck(rec);
    if (grant === null || !grant.ok) {
      throw new DeviceError('DEVICE_ERR_GRANT_EXPIRED', `the offline lease of ${name} does not allow a start: ${grant?.reason ?? 'no grant'}`, {
        desktop: name, expiresAt: grant?.expiresAt ?? null,
        hint: 'connect to the server (any roamdesk command renews the grant while it is reachable)',
      });
    }
    // Already running: a VM paused by a full disk (or by request) is resumed; one that runs on is an error.
    const current = await localVm(this.home, rec.desktopId);
    if (current.running) {
      const pause = await localVmPause(name, current, this.#objectsDir);
      if (pause === null) {
        throw new DeviceError('DEVICE_ERR_VM_RUNNING', `the local VM of ${name} is already running (pid ${String(current.pid)})`, {
          desktop: name, pid: current.pid, hint: `roamdesk console ${name} opens its screen`,
        });
      }
      await resumeLocalVm(name, current, pause);
      return { ...current, resumed: pause, grant, online };
    }
    const sl = await this.#lockStore(`start ${name}`);
    let store: Store;
    try {
      store = await this.store();
      await this.#recover(rec, store);
      await this.#collectGarbage(rec, store);
      if (rec.state === 'checking-in' || rec.overlay === null) {
        // A check-in that sealed the overlay but did not commit: keep working on a fresh overlay.
        rec.overlay = await store.createOverlay(sealedTop(rec), { label: 'local' });
        rec.state = 'checked-out';
        await this.records.save(rec);
      }
    } finally {
      await sl.release();
    }
    const vm = await startLocalVm(this.home, store, rec, opts);
    return { ...vm, grant, online };
  }

  async stop(name: string, opts: { timeoutMs?: number; force?: boolean } = {}): Promise<StopResult> {
    const rec = await this.records.require(name);
    if (opts.timeoutMs !== 0) await refuseDiskPause(name, await localVm(this.home, rec.desktopId), this.#objectsDir, 'stop it gracefully');
    const r = await stopLocalVm(this.home, rec.desktopId, opts);
    if (rec.state === 'lost') await this.#quarantineIfStopped(rec);
    return r;
  }

  async vm(name: string): Promise<LocalVmInfo> {
    const rec = await this.records.require(name);
    return localVm(this.home, rec.desktopId);
  }

  // --- replicate and check-in

  /**
   * Seal the local writes into a layer now (live when the VM runs) without sending it: a local restore point.
   * The layer is sent by the next replicate or check-in (compacted with the others past maxChainLength).
   */
  async seal(name: string): Promise<{ desktop: string; layer: string | null; pending: number }> {
    const lock = await this.#lockForUser(name, 'seal');
    try {
      const rec = await this.records.require(name);
      if (rec.state !== 'checked-out') throw new DeviceError('DEVICE_ERR_LEASE_STATE', `desktop ${name} is ${rec.state} here`, { desktop: name });
      const sl = await this.#lockStore(`seal ${name}`);
      const before = rec.chain.length;
      try {
        const store = await this.store();
        await this.#recover(rec, store);
        if ((await localVm(this.home, rec.desktopId)).running) {
          await withLocalQmp(this.home, rec.desktopId, (qmp, activeNode) => this.#sealLive(rec, store, qmp, activeNode));
        } else {
          await this.#sealStopped(rec, store, true);
        }
      } finally {
        await sl.release();
      }
      return { desktop: name, layer: rec.chain.length > before ? sealedTop(rec) : null, pending: pendingLayers(rec).length };
    } finally {
      await lock.release();
    }
  }

  /**
   * Seal the local writes into a layer (live when the VM runs), compact the unsent layers if there are more than
   * maxChainLength, upload them, and record them on the server as the replicated state. The lease stays here.
   */
  async replicate(name: string, opts: { onProgress?: AgentProgressFn; signal?: AbortSignal; scheduled?: boolean } = {}): Promise<SendResult> {
    const id = await this.identity.require();
    // The keeper's rounds say so in the lock, and a user's command waits for one instead of failing.
    const lock = opts.scheduled === true ? await lockDesktop(this.home, name, SCHEDULED_REPLICATION) : await this.#lockForUser(name, 'replication', opts);
    try {
      const step = (s: AgentStep, transfer?: TransferProgress, objects?: readonly StoredObject[]): void =>
        opts.onProgress?.({ step: s, desktop: name, ...(transfer !== undefined ? { transfer } : {}), ...(objects !== undefined ? { objects } : {}) });
      step('heartbeat');
      const hb = await this.heartbeat({ timeoutMs: ONLINE_HEARTBEAT_MS });
      if (!hb.online) throw new ClientError('CLIENT_ERR_UNREACHABLE', `cannot reach the server ${id.server}: ${hb.error ?? ''}`, { server: id.server, hint: 'replication needs the server; the local VM keeps working offline' });
      const rec = await this.records.require(name);
      if (rec.state === 'lost') {
        await this.#quarantineIfStopped(rec);
        throw this.#lostError(rec);
      }
      if (rec.state !== 'checked-out') {
        throw new DeviceError('DEVICE_ERR_LEASE_STATE', `desktop ${name} is ${rec.state} here`, { desktop: name, hint: rec.state === 'checking-out' ? `finish the check-out: roamdesk checkout ${name}` : `finish the check-in: roamdesk checkin ${name}` });
      }
      const vm = await localVm(this.home, rec.desktopId);
      const running = vm.running;
      // A live seal writes a new overlay: on a disk so full that it paused the guest, say so rather than fail inside.
      if (running) await refuseDiskPause(name, vm, this.#objectsDir, 'replicate', { only: 'no-space' });
      step('seal');
      let compacted = false;
      const sl = await this.#lockStore(`replicate ${name}`);
      try {
        const store = await this.store();
        await this.#recover(rec, store);
        if (running) {
          await withLocalQmp(this.home, rec.desktopId, async (qmp, activeNode) => {
            await this.#sealLive(rec, store, qmp, activeNode);
            step('compact');
            compacted = await this.#compact(rec, store, { qmp });
          });
        } else {
          await this.#collectGarbage(rec, store);
          await this.#sealStopped(rec, store, true);
          step('compact');
          compacted = await this.#compact(rec, store, null);
        }
      } finally {
        await sl.release();
      }
      const pending = pendingLayers(rec);
      if (pending.length === 0) {
        return { desktop: name, generation: rec.generation, top: rec.replicatedTop, layersSent: [], compacted, upload: null };
      }
      const operation = await this.#layersOperation(id, rec, 'replicate');
      const report = await this.#upload(id, rec, pending, operation, step, opts.signal);
      step('commit');
      const top = pending.at(-1)!.id;
      let lr: LeaseResponse;
      try {
        lr = await this.#api(id).replicate(name, { generation: rec.generation, top, ...(operation !== null ? { operation } : {}) });
      } catch (err) {
        if (isApi(err, 'LEASE_STALE') || isApi(err, 'DEVICE_REVOKED')) {
          await this.#markLost(rec, `the server refused the replication: ${err.message}`);
          await this.#quarantineIfStopped(rec);
        }
        throw err;
      }
      rec.replicatedTop = top;
      rec.layersOperation = null;
      rec.replicatedAt = lr.lease.replicatedAt ?? new Date().toISOString();
      rec.lastReplication = { at: rec.replicatedAt, top, layers: pending.length, bytes: report.bytesTotal, bytesOnWire: report.bytesOnWire };
      await this.#contact(rec, id, lr.grant, undefined, lr);
      await this.records.save(rec);
      return { desktop: name, generation: rec.generation, top, layersSent: pending.map((o) => o.id), compacted, upload: report };
    } finally {
      await lock.release();
    }
  }

  /**
   * Stop (with `stop`) or refuse a running local VM, seal the last writes, send what the server lacks and move
   * the lease back. Afterwards the local overlay and record are gone (the objects stay in the store as seeds).
   * A stale lease (rolled back meanwhile) sends the unsent work to quarantine.
   */
  async checkin(name: string, opts: { stop?: boolean; stopTimeoutMs?: number; onProgress?: AgentProgressFn; signal?: AbortSignal } = {}): Promise<CheckinResult> {
    const id = await this.identity.require();
    const lock = await this.#lockForUser(name, 'check-in', opts);
    try {
      const step = (s: AgentStep, transfer?: TransferProgress, objects?: readonly StoredObject[]): void =>
        opts.onProgress?.({ step: s, desktop: name, ...(transfer !== undefined ? { transfer } : {}), ...(objects !== undefined ? { objects } : {}) });
      let rec = await this.records.require(name);
      const vm = await localVm(this.home, rec.desktopId);
      if (vm.running && opts.stop !== true) {
        throw new DeviceError('DEVICE_ERR_VM_RUNNING', `the local VM of ${name} is running`, {
          desktop: name, pid: vm.pid, hint: `shut it down first, or let check-in do it: roamdesk checkin ${name} --stop`,
        });
      }
      if (vm.running) await refuseDiskPause(name, vm, this.#objectsDir, 'check in');
      step('heartbeat');
      const hb = await this.heartbeat({ timeoutMs: ONLINE_HEARTBEAT_MS });
      if (!hb.online) throw new ClientError('CLIENT_ERR_UNREACHABLE', `cannot reach the server ${id.server}: ${hb.error ?? ''}`, { server: id.server, hint: 'check-in needs the server; the desktop stays checked out here' });
      rec = await this.records.require(name);
      let stopped: StopResult | null = null;
      if (vm.running) {
        step('stop');
        stopped = await stopLocalVm(this.home, rec.desktopId, { timeoutMs: opts.stopTimeoutMs ?? 120_000 });
      }
      if (rec.state === 'lost') {
        await this.#quarantineIfStopped(rec);
        throw this.#lostError(rec);
      }
      if (rec.state === 'checking-out') {
        throw new DeviceError('DEVICE_ERR_LEASE_STATE', `the check-out of ${name} is not finished`, { desktop: name, hint: `finish it (roamdesk checkout ${name}) or cancel it (roamdesk checkout --cancel ${name})` });
      }
      const sl = await this.#lockStore(`check-in ${name}`);
      let compacted: boolean;
      try {
        const store = await this.store();
        await this.#recover(rec, store);
        await this.#collectGarbage(rec, store);
        step('seal');
        if (rec.state === 'checked-out') {
          await this.#sealStopped(rec, store, false);
          rec.state = 'checking-in';
          await this.records.save(rec);
        }
        step('compact');
        compacted = await this.#compact(rec, store, null);
      } finally {
        await sl.release();
      }
      const pending = pendingLayers(rec);
      const top = sealedTop(rec);
      let operation: string | null = null;
      let report: TransferReport | null = null;
      if (pending.length > 0) {
        operation = await this.#layersOperation(id, rec, 'checkin').catch((err: unknown) => {
          // A committed check-in (lost answer) has no lease left to start an operation on: let the call below tell.
          if (isApi(err, 'LEASE_STALE') || isApi(err, 'CONFLICT')) return null;
          throw err;
        });
        report = await this.#upload(id, rec, pending, operation, step, opts.signal);
      }
      step('commit');
      let alreadyCommitted = false;
      let lr: LeaseResponse | null = null;
      try {
        lr = await this.#api(id).checkin(name, { generation: rec.generation, top, ...(operation !== null ? { operation } : {}) });
      } catch (err) {
        if (!isApi(err, 'LEASE_STALE') && !isApi(err, 'DEVICE_REVOKED')) throw err;
        // An earlier run may have committed this very check-in before it was interrupted: then the server's
        // chain ends at our top and nothing is lost. Otherwise the lease moved away: quarantine.
        if (!(await this.#serverIsAt(id, name, top).catch(() => false))) {
          await this.#markLost(rec, `the server refused the check-in: ${err.message}`);
          await this.#quarantineIfStopped(rec);
          throw err;
        }
        alreadyCommitted = true;
      }
      step('cleanup');
      await this.#forget(rec);
      return {
        desktop: name, generation: lr?.lease.generation ?? rec.generation, top, layersSent: pending.map((o) => o.id), compacted, upload: report,
        stopped, alreadyCommitted,
      };
    } finally {
      await lock.release();
    }
  }

  /** Does the server hold the lease on `top`, or on a compaction of it (StoredObject.derivedFrom)? */
  async #serverIsAt(id: DeviceIdentity, name: string, top: string): Promise<boolean> {
    const lease = (await this.#api(id, QUICK_TIMEOUT_MS).lease(name)).lease;
    if (lease.state !== 'server') return false;
    const chain = await this.#api(id, QUICK_TIMEOUT_MS).chain(name).catch(() => null);
    const last = chain?.objects.at(-1);
    if (last === undefined) return lease.replicatedTopObjectId === top;
    return last.id === top || last.derivedFrom === top;
  }

  /**
   * Rollback (the user's own, if policy allows, or an admin's): the server discards the device's unreplicated
   * work and takes the lease back at the replicated state. Here, the local VM is stopped and the unsent work
   * goes to quarantine.
   */
  async rollback(name: string, opts: { stopTimeoutMs?: number } = {}): Promise<{ desktop: string; generation: number; quarantine: QuarantineEntry | null }> {
    const s = this.#opts.session;
    const id = s == null ? await this.identity.require() : null;
    const api = id !== null ? this.#api(id) : this.#userApi();
    const lr = await api.rollback(name);
    const rec = await this.records.load(name);
    let entry: QuarantineEntry | null = null;
    if (rec !== null) {
      const lock = await this.#lockForUser(name, 'rollback');
      try {
        await stopLocalVm(this.home, rec.desktopId, { timeoutMs: opts.stopTimeoutMs ?? 60_000 });
        await this.#markLost(rec, `rolled back to ${lr.lease.replicatedTopObjectId} (generation ${lr.lease.generation})`);
        entry = await this.#quarantineIfStopped(rec);
      } finally {
        await lock.release();
      }
    }
    return { desktop: name, generation: lr.lease.generation, quarantine: entry };
  }

  // --- the steps

  /**
   * A crash between a seal and the record's save leaves the record naming an overlay that is gone: the seal made
   * it a layer (whose parent is the old overlay's parent) and, for a live seal, a new overlay rests on that layer
   * (or on the old overlay's name). Find them and write them into the record, so no sealed work is forgotten. No
   * such layer: the overlay was discarded as empty. Several candidates: refuse rather than guess.
   */
  async #recover(rec: LocalDesktop, store: Store): Promise<void> {
    const ov = rec.overlay;
    if (ov === null) return;
    if (await exists(ov.path)) {
      await this.#adoptInterruptedLiveSeal(rec, store, ov);
      return;
    }
    const known = new Set([...rec.chain.map((o) => o.id), ...rec.garbage]);
    for (const other of await this.records.list()) if (other.name !== rec.name) for (const o of other.chain) known.add(o.id);
    const candidates = (await store.list()).filter((o) => o.parent === ov.parent && !known.has(o.id));
    if (candidates.length > 1) {
      throw new DeviceError('DEVICE_ERR_STATE_INVALID', `the overlay of ${rec.name} is gone and ${candidates.length} layers could be its seal`, {
        desktop: rec.name, candidates: candidates.map((c) => c.id), hint: 'see roamdesk status --json; nothing was deleted',
      });
    }
    const layer = candidates[0];
    if (layer === undefined) {
      rec.overlay = null;
      await this.records.save(rec);
      return;
    }
    rec.chain.push(describe(layer));
    rec.overlay = null;
    const names = new Set([`${layer.id}.qcow2`, basename(ov.path)]);
    for (const f of await readdir(store.objectsDir)) {
      if (!/^overlay-.*\.qcow2$/.test(f)) continue;
      const backing = await readHeader(join(store.objectsDir, f)).then((h) => h.backing?.name ?? null, () => null);
      if (backing !== null && names.has(backing)) rec.overlay = { path: join(store.objectsDir, f), parent: layer.id };
    }
    await this.records.save(rec);
  }

  /**
   * A live seal interrupted after blockdev-snapshot (the VM stopped under it, or this process died, before the
   * record was saved) left the VM's newer writes in an overlay whose backing file is the recorded one: by its name,
   * or by the layer id it was already published as (the same file). With the VM stopped, seal the recorded overlay
   * and go on with that newer one, so nothing written after the seal began is left out of the chain.
   */
  async #adoptInterruptedLiveSeal(rec: LocalDesktop, store: Store, ov: { path: string; parent: string }): Promise<void> {
    if ((await localVm(this.home, rec.desktopId)).running) return;
    const mine = await stat(ov.path);
    let child: string | null = null;
    for (const f of await readdir(store.objectsDir)) {
      if (!/^overlay-.*\.qcow2$/.test(f) || f === basename(ov.path)) continue;
      const backing = await readHeader(join(store.objectsDir, f)).then((h) => h.backing?.name ?? null, () => null);
      if (backing === null || backing.includes('/')) continue;
      const same = backing === basename(ov.path) ||
        (await stat(join(store.objectsDir, backing)).then((b) => b.ino === mine.ino && b.dev === mine.dev, () => false));
      if (same) child = join(store.objectsDir, f);
    }
    if (child === null) return;
    if (await store.overlayHasData(ov)) {
      const layer = await this.#withManifest((o) => store.seal(ov, o), (l) => l);
      rec.chain.push(describe(layer));
    } else {
      await store.discardOverlay(ov);
    }
    const top = sealedTop(rec);
    await this.#img.rebase(child, { backing: { name: `${top}.qcow2`, format: 'qcow2' }, unsafe: true });
    rec.overlay = { path: child, parent: top };
    await this.records.save(rec);
  }

  async #sealStopped(rec: LocalDesktop, store: Store, keepOverlay: boolean): Promise<void> {
    const ov = rec.overlay;
    if (ov === null || !(await exists(ov.path))) {
      rec.overlay = null;
      if (keepOverlay) {
        rec.overlay = await store.createOverlay(sealedTop(rec), { label: 'local' });
        await this.records.save(rec);
      }
      return;
    }
    if (!(await store.overlayHasData(ov))) {
      // Nothing written since the last seal: no layer to make.
      if (!keepOverlay) {
        await store.discardOverlay(ov);
        rec.overlay = null;
        await this.records.save(rec);
      }
      return;
    }
    const layer = await this.#withManifest((o) => store.seal(ov, o), (l) => l);
    rec.chain.push(describe(layer));
    rec.overlay = null;
    await this.records.save(rec);
    if (keepOverlay) {
      rec.overlay = await store.createOverlay(layer.id, { label: 'local' });
      await this.records.save(rec);
    }
  }

  /**
   * Seals with the layer's upload manifest built in the seal's own read pass (BLAKE3 per piece beside its
   * SHA-256), so the replicate or check-in that follows does not read the layer again.
   */
  async #withManifest<T>(seal: (opts: SealOptions) => Promise<T>, layerOf: (r: T) => ObjectInfo): Promise<T> {
    const { ManifestCache, sealWithManifest } = await import('@roamdesk/transfer');
    this.#manifests ??= new ManifestCache(null);
    return sealWithManifest(this.#manifests, seal, layerOf);
  }

  async #sealLive(rec: LocalDesktop, store: Store, qmp: Parameters<Store['sealLive']>[1]['qmp'], activeNode: string): Promise<void> {
    if (rec.overlay === null) throw new DeviceError('DEVICE_ERR_STATE_INVALID', `the record of ${rec.name} has no overlay while its VM runs`, {});
    const record = async (r: LiveSealResult): Promise<void> => {
      rec.chain.push(describe(r.layer));
      rec.overlay = r.overlay;
      rec.retired = [...(rec.retired ?? []), basename(r.retired)];
      await this.records.save(rec);
    };
    // A seal interrupted after its blockdev-snapshot (this process died) left the guest writing into a newer overlay
    // than the record names: finish that one first (#adoptInterruptedLiveSeal does it once the VM has stopped).
    const resumed = await store.resumeLiveSeal(rec.overlay, { qmp, device: DISK_DEVICE, activeNode });
    if (resumed !== null) await record(resumed);
    const overlay = resumed?.overlay ?? rec.overlay;
    const live = { qmp, device: DISK_DEVICE, activeNode: resumed?.activeNode ?? activeNode };
    await record(await this.#withManifest((o) => store.sealLive(overlay, live, { label: 'local', ...o }), (x) => x.layer));
  }

  /**
   * Compaction (issue 5 item 6): more than maxChainLength unsent layers become ONE layer over the replicated top
   * (store.importDifference: qemu-img rebase in safe mode, checked with qemu-img compare). The overlay's header
   * then names the new layer (rebase -u when stopped; change-backing-file over QMP when the VM runs — its open
   * nodes keep reading the old, identical layers until it stops). Objects the server holds are never touched;
   * the replaced local layers are removed once no VM has them open.
   */
  async #compact(rec: LocalDesktop, store: Store, live: { qmp: Parameters<Store['sealLive']>[1]['qmp'] } | null): Promise<boolean> {
    const pending = pendingLayers(rec);
    if (pending.length <= this.maxChainLength(rec)) return false;
    const top = pending.at(-1)!.id;
    const squashed = await store.importDifference(rec.replicatedTop, top);
    const base = rec.chain.slice(0, rec.chain.length - pending.length);
    const newTop = squashed?.id ?? rec.replicatedTop;
    if (rec.overlay !== null) {
      const backing = `${newTop}.qcow2`;
      if (live !== null) {
        const node = await this.#activeNode(live.qmp);
        await live.qmp.execute('change-backing-file', { device: node, 'image-node-name': node, 'backing-file': backing });
      } else {
        await this.#img.rebase(rec.overlay.path, { backing: { name: backing, format: 'qcow2' }, unsafe: true });
      }
      rec.overlay = { path: rec.overlay.path, parent: newTop };
    }
    rec.chain = squashed === null ? base : [...base, describe(squashed)];
    rec.garbage.push(...pending.map((o) => o.id).filter((x) => x !== newTop));
    await this.records.save(rec);
    if (live === null) await this.#collectGarbage(rec, store);
    return true;
  }

  async #activeNode(qmp: Parameters<Store['sealLive']>[1]['qmp']): Promise<string> {
    const blocks = await qmp.execute('query-block');
    const disk = blocks.find((b) => b.qdev?.includes(`/peripheral/${DISK_DEVICE}/`) === true || b.qdev === DISK_DEVICE);
    const node = disk?.inserted?.['node-name'];
    if (node === undefined) throw new DeviceError('DEVICE_ERR_VM_CONFIG', 'the local VM has no disk0', {});
    return node;
  }

  /** Remove layers replaced by compaction, top first, once no local VM has them open. */
  async #collectGarbage(rec: LocalDesktop, store: Store): Promise<void> {
    const retired = rec.retired ?? [];
    if (rec.garbage.length === 0 && retired.length === 0) return;
    if ((await localVm(this.home, rec.desktopId)).running) return;
    // A name that is no longer a second link (a crash between seal steps left it the overlay's only name) stays.
    for (const name of retired) await store.removeRetired(join(store.objectsDir, name)).catch(() => false);
    rec.retired = [];
    const keep = new Set(rec.chain.map((o) => o.id));
    const left: string[] = [];
    for (const g of [...rec.garbage].reverse()) {
      if (keep.has(g)) continue;
      try {
        await store.remove(g);
      } catch (err) {
        if ((err as { code?: string }).code !== 'STORE_ERR_OBJECT_NOT_FOUND') left.unshift(g);
      }
    }
    rec.garbage = left;
    await this.records.save(rec);
  }

  async #upload(
    id: DeviceIdentity, rec: LocalDesktop, pending: StoredObject[], operation: string | null,
    step: (s: AgentStep, t?: TransferProgress, objects?: readonly StoredObject[]) => void, signal?: AbortSignal,
  ): Promise<TransferReport> {
    const api = this.#api(id);
    const reporter = this.#operationReporter(api, operation);
    try {
      const { uploadObjects } = await import('@roamdesk/transfer');
      return await uploadObjects({
        store: await this.store(), remote: { apiBase: api.apiBase, token: id.credential }, objects: pending,
        ...(this.#manifests !== undefined ? { manifests: this.#manifests } : {}),
        ...(signal !== undefined ? { signal } : {}),
        onProgress: (p) => {
          step('upload', p, pending);
          reporter.update('upload', p);
        },
      });
    } finally {
      await reporter.flush();
    }
  }

  /**
   * The replicate or check-in operation to report the upload on: the one a killed earlier run announced (kept in
   * the record) if the server still runs it, else a new one. An operation of ours that a crash left running
   * would hold the desktop (LEASE_BUSY) for 15 minutes: it is finished as cancelled and a new one started.
   * Old servers without the route: null (the replicate/check-in call then makes its own).
   */
  async #layersOperation(id: DeviceIdentity, rec: LocalDesktop, kind: 'replicate' | 'checkin'): Promise<string | null> {
    const api = this.#api(id);
    const prev = rec.layersOperation;
    if (prev !== null) {
      const op = await api.operation(prev.id).catch(() => null);
      if (op !== null && op.state === 'running' && op.kind === kind) return prev.id;
      if (op !== null && op.state === 'running') await api.finishOperation(prev.id, { state: 'cancelled' }).catch(() => undefined);
    }
    let op;
    try {
      op = await api.startOperation(rec.name, kind, rec.generation);
    } catch (err) {
      if (err instanceof ApiError && err.isUnknownRoute) return null;
      const busy = isApi(err, 'LEASE_BUSY') && typeof err.data?.['operation'] === 'string' ? err.data['operation'] : null;
      if (busy === null) throw err;
      const other = await api.operation(busy).catch(() => null);
      if (other === null || other.deviceId !== id.id) throw err;
      await api.finishOperation(busy, { state: 'cancelled' }).catch(() => undefined);
      op = await api.startOperation(rec.name, kind, rec.generation);
    }
    rec.layersOperation = { id: op.id, kind };
    await this.records.save(rec);
    return op.id;
  }

  /** After a committed check-in: drop the overlay, the run dir and the record; the objects stay as seeds. */
  async #forget(rec: LocalDesktop): Promise<void> {
    if (rec.overlay !== null) {
      const sl = await this.#lockStore(`clean up ${rec.name}`);
      try {
        await (await this.store()).discardOverlay(rec.overlay).catch(() => undefined);
      } finally {
        await sl.release();
      }
    }
    await removeRunDir(this.home, rec.desktopId).catch(() => undefined);
    await this.records.remove(rec.name);
  }

  async #quarantineIfStopped(rec: LocalDesktop): Promise<QuarantineEntry | null> {
    if ((await localVm(this.home, rec.desktopId)).running) return null;
    const sl = await this.#lockStore(`quarantine ${rec.name}`);
    let entry: QuarantineEntry;
    try {
      const store = await this.store();
      await this.#recover(rec, store).catch(() => undefined);
      entry = await quarantineDesktop(this.home, store, rec, rec.lostReason ?? 'the lease moved away');
      rec.overlay = null;
      await this.#collectGarbage(rec, store).catch(() => undefined);
    } finally {
      await sl.release();
    }
    await removeRunDir(this.home, rec.desktopId).catch(() => undefined);
    await this.records.remove(rec.name);
    return entry;
  }

  #lostError(rec: LocalDesktop): ApiError {
    return new ApiError(409, 'LEASE_STALE', `the lease of ${rec.name} moved away from this device: ${rec.lostReason ?? 'rolled back'}`, {
      desktop: rec.name, generation: rec.generation,
      hint: 'the local work was moved to quarantine (roamdesk quarantine list); check the desktop out again to continue',
    });
  }

  // --- status

  /** Every desktop checked out here. */
  async statusAll(): Promise<CheckoutStatus[]> {
    const out: CheckoutStatus[] = [];
    for (const r of await this.records.list()) {
      const s = await this.status(r.name);
      if (s !== null) out.push(s);
    }
    return out;
  }

  /** Purely local (works offline); `heartbeat()` first to refresh the grant and learn of lost leases. */
  async status(name: string): Promise<CheckoutStatus | null> {
    const rec = await this.records.load(name);
    if (rec === null) return null;
    const vm = await localVm(this.home, rec.desktopId);
    const pending = pendingLayers(rec);
    // An overlay nobody wrote to (a fresh check-out) sends nothing: only its metadata is in the file.
    const overlay = rec.overlay;
    const written = overlay !== null && (vm.running || (await hasOwnClusters(overlay.path).catch(() => true)));
    const overlayBytes = written ? await stat(overlay.path).then((s) => s.size, () => 0) : 0;
    // Paths only: the store is not opened (a writer may be busy in it), and the record's ids are validated.
    const objectPath = (id: string): string => join(this.#objectsDir, `${id}.qcow2`);
    const onServer = rec.chain.findIndex((o) => o.id === rec.replicatedTop) + 1;
    const id = await this.identity.load().catch(() => null);
    return {
      desktop: rec.name, desktopId: rec.desktopId, location: 'this-device', device: id === null ? null : { id: id.id, name: id.name },
      state: rec.state, generation: rec.generation, lostReason: rec.lostReason, checkedOutAt: rec.checkedOutAt,
      image: objectPath(rec.chain[0]?.id ?? rec.replicatedTop),
      layers: rec.chain.slice(1).map((o) => objectPath(o.id)),
      overlay: rec.overlay?.path ?? null,
      vm: { running: vm.running, pid: vm.pid, vncSocket: vm.running ? vm.paths.vnc : null, serialLog: vm.paths.serial, paused: await localVmPause(name, vm, this.#objectsDir) },
      layerCounts: { local: rec.chain.length, onServer, pending: pending.length },
      bytesPendingUpload: pending.reduce((n, o) => n + o.size, 0) + overlayBytes,
      replicatedTop: rec.replicatedTop, replicatedAt: rec.replicatedAt, lastReplication: rec.lastReplication,
      lastContact: rec.lastContact?.at ?? null,
      offlineLease: await this.grantCheck(rec),
      scheduledReplication: await this.#scheduledReplication(rec),
    };
  }

  async #scheduledReplication(rec: LocalDesktop): Promise<CheckoutStatus['scheduledReplication']> {
    const every = rec.replicateEverySeconds ?? 0;
    if (every === 0) return null;
    const since = Date.parse(rec.lastReplication?.at ?? rec.checkedOutAt);
    const dueAt = new Date(Number.isFinite(since) ? since + every * 1000 : Date.now()).toISOString();
    return { everySeconds: every, dueAt, keeperPid: await keeperPid(this.home, rec.name) };
  }

  runDir(rec: LocalDesktop): string {
    return localRunDir(this.home, rec.desktopId);
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

