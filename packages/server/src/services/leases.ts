// The lease state machine (DESIGN.md "The lease state machine"; contract: @roamdesk/api schemas/leases.ts).
// The database row is the only source of truth, and every lease move is ONE compare-and-set UPDATE on
// (desktop id, generation, lease state, holder …) (db/repositories/desktops.ts moveLease), so of two racing
// moves exactly one wins and a stale generation changes nothing.
//
//   server ──checkout──▶ checking-out (gen+1) ──confirm──▶ checked-out ──replicate──▶ checked-out
//     ▲   ◀──cancel (gen+1)──┘                                 │
//     └──────────────── checkin: chain = device's top (gen+1) ◀─┘
//     └──────────────── rollback (admin / owner by policy): chain = replicated top (gen+1)
//
// Check-out prepares the server side after the claim (stop the VM, seal its overlay), so a second device
// loses at the claim, before anything was stopped. The preparation is idempotent: a check-out interrupted by
// a server crash is finished by the same device's next check-out call (resume).
//
// Replicate and check-in name a top the device uploaded (routes/objects.ts: every layer was parsed in
// TypeScript, its parent checked and `qemu-img check`ed before it was published). Here the linkage is
// checked again against the desktop's replicated top (checkTop):
//  - the new chain contains the replicated top: the device added layers (the normal case);
//  - or the device compacted its chain (issue 5 item 6): the new chain shares a prefix (at least the image)
//    with the replicated chain and the new top is not an ancestor of the replicated top. The server keeps
//    every object of the old chain in its store (nothing is removed here), so what either side still
//    needs stays valid; the device is the lease holder and owns the content above the shared prefix.
// Anything else is 422 CHAIN_MISMATCH; a top the owner cannot read (another user's layer) is 404.
//
// Back at the server, a chain past the policy length is compacted when the server VM next starts
// (services/compaction.ts); the claim of a check-out is conditional on the top it read.

import { ApiError, type GrantBody, type HeartbeatRequest, type HeartbeatResponse, type Lease, type LeaseResponse, type CheckoutResponse, type Operation } from '@roamdesk/api';
import type { Caller } from '../auth/authenticate.ts';
import type { AppContext } from '../context.ts';
import { findDeviceById, toApiDevice, touchDevice } from '../db/repositories/devices.ts';
import { type DesktopView, findDesktopById, findDesktopByName, moveLease, recordSealedOverlay, setState, toApiLease } from '../db/repositories/desktops.ts';
import {
  failRunningOperations,
  findOperation,
  finishOperation,
  insertOperation,
  latestOperation,
  type OperationRow,
  runningOperations,
  toApiOperation,
} from '../db/repositories/operations.ts';
import type { OperationKindColumn } from '../db/schema.ts';
import { notFound } from '../errors.ts';
import { visibleDesktop } from './access.ts';
import { describeError } from './audit.ts';
import { checkedOut } from './checked-out.ts';
import { refuseDiskPause, runtimeFailure } from './lifecycle.ts';
import { readableObject } from './object-access.ts';
import { absoluteOverlayPath, toRuntimeDesktop } from './paths.ts';

/** A replicate or check-in operation not heard of for this long no longer blocks a new one (the device died). */
export const OPERATION_STALE_MS = 15 * 60_000;

type LayersKind = 'replicate' | 'checkin';

function deviceOf(caller: Caller): string {
  if (caller.deviceId === undefined) throw new ApiError('FORBIDDEN', 'This call is made by a registered device: use the device credential.');
  return caller.deviceId;
}

export class LeaseService {
  /** Check-out preparations running in this process, by desktop id (single flight). */
  readonly #preparing = new Map<string, Promise<void>>();

  constructor(private readonly ctx: AppContext) {}

  // --- answers

  leaseResponse(d: DesktopView, grant?: string): LeaseResponse {
    const r: LeaseResponse = { lease: toApiLease(d), ...this.policy() };
    if (grant !== undefined) r.grant = grant;
    return r;
  }

  /** The lease policy every answer to the lease holder carries (it may change while the desktop is away). */
  policy(): { maxChainLength: number; replicateEverySeconds: number } {
    const { maxChainLength, replicateEverySeconds } = this.ctx.config.lease;
    return { maxChainLength, replicateEverySeconds };
  }

  async grantFor(d: DesktopView, deviceId: string): Promise<string> {
    const now = this.ctx.clock.now();
    const maxOfflineSeconds = this.ctx.config.lease.maxOfflineSeconds;
    const body: GrantBody = {
      desktop: d.name,
      desktopId: d.id,
      deviceId,
      generation: Number(d.lease_generation),
      issuedAt: new Date(now).toISOString(),
      expiresAt: new Date(now + maxOfflineSeconds * 1000).toISOString(),
      maxOfflineSeconds,
    };
    return this.ctx.grants.sign(body);
  }

  // --- checks

  async #reload(id: string): Promise<DesktopView> {
    const d = await findDesktopById(this.ctx.db, id);
    if (d === undefined) throw new ApiError('NOT_FOUND', 'desktop disappeared');
    return d;
  }

  /** A device call names the generation it believes in; any other is stale and changes nothing. */
  #requireGeneration(d: DesktopView, generation: number): void {
    const current = Number(d.lease_generation);
    if (generation === current) return;
    const where = d.lease_state === 'server' ? 'the server holds the lease' : `the lease is ${d.lease_state} to device "${d.lease_device_name ?? '?'}"`;
    throw new ApiError('LEASE_STALE', `lease generation ${generation} of desktop "${d.name}" is stale: it is at generation ${current} (${where})`, { current });
  }

  /** The caller's device must hold the lease, in one of `states`. */
  #requireHolder(d: DesktopView, deviceId: string, states: readonly Lease['state'][]): void {
    if (d.lease_state === 'server') throw new ApiError('CONFLICT', `desktop "${d.name}" is not checked out`, { lease: 'server' });
    if (d.lease_device_id !== deviceId) throw checkedOut(d);
    if (!states.includes(d.lease_state)) {
      const hint = d.lease_state === 'checking-out' ? 'confirm the check-out first' : 'it is already checked out: check in or roll back instead';
      throw new ApiError('CONFLICT', `desktop "${d.name}" is ${d.lease_state}: ${hint}`, { lease: d.lease_state });
    }
  }

  /** Why a compare-and-set lost: the row moved between our read and our write. */
  async #explainLoss(id: string, generation: number, deviceId: string | null): Promise<ApiError> {
    const d = await this.#reload(id);
    if (Number(d.lease_generation) !== generation) {
      try {
        this.#requireGeneration(d, generation);
      } catch (err) {
        return err as ApiError;
      }
    }
    if (deviceId !== null && d.lease_device_id !== null && d.lease_device_id !== deviceId) return checkedOut(d);
    return new ApiError('LEASE_BUSY', `desktop "${d.name}": another lease operation changed it meanwhile; retry`, { current: Number(d.lease_generation) });
  }

  #busyIfPreparing(d: DesktopView): void {
    if (this.#preparing.has(d.id)) {
      throw new ApiError('LEASE_BUSY', `desktop "${d.name}": the check-out is still stopping and sealing the server VM; retry`, { current: Number(d.lease_generation) });
    }
  }

  // --- check-out

  async checkout(caller: Caller, name: string): Promise<CheckoutResponse> {
    const deviceId = deviceOf(caller);
    let d = await visibleDesktop(this.ctx.db, caller, name);
    const generation = Number(d.lease_generation);
    const resume = d.lease_state !== 'server' && d.lease_device_id === deviceId;
    return this.#audited(caller, 'lease.checkout', d, resume ? { resume: true, generation } : { from: generation, to: generation + 1 }, async () => {
      if (d.lease_state !== 'server') {
        if (!resume) throw checkedOut(d);
        // The same device again: finish the preparation if a crash interrupted it, and answer the same.
        if (d.lease_state === 'checking-out') await this.#prepare(d.id);
        const after = await this.#reload(d.id);
        const op = (await latestOperation(this.ctx.db, d.id, { kind: 'checkout', deviceId }))
          ?? (await this.#newOperation('checkout', after, caller, after.lease_state === 'checked-out' ? 'succeeded' : 'running'));
        return this.#checkoutResponse(after, op.id);
      }
      if (d.state === 'starting' || d.state === 'stopping') {
        throw new ApiError('DESKTOP_BUSY', `desktop "${d.name}" is ${d.state}; retry when it settles`, { state: d.state });
      }
      refuseDiskPause(this.ctx, d, 'check out');
      const now = this.ctx.nowIso();
      const claimed = await moveLease(
        this.ctx.db,
        d.id,
        { generation, state: 'server', desktopStates: ['stopped', 'running', 'error'], top: d.top_object_id },
        {
          lease_state: 'checking-out',
          location: 'device',
          lease_device_id: deviceId,
          lease_generation: generation + 1,
          lease_since: now,
          replicated_top_object_id: d.top_object_id,
          replicated_at: null,
          updated_at: now,
        },
      );
      if (!claimed) {
        const now2 = await this.#reload(d.id);
        if (now2.lease_state !== 'server') throw checkedOut(now2);
        if (now2.state === 'starting' || now2.state === 'stopping') throw new ApiError('DESKTOP_BUSY', `desktop "${d.name}" is ${now2.state}; retry when it settles`, { state: now2.state });
        throw new ApiError('LEASE_BUSY', `desktop "${d.name}": another lease operation changed it meanwhile; retry`, { current: Number(now2.lease_generation) });
      }
      d = await this.#reload(d.id);
      const op = await this.#newOperation('checkout', d, caller);
      try {
        await this.#prepare(d.id);
        return await this.#checkoutResponse(await this.#reload(d.id), op.id);
      } catch (err) {
        // The server keeps the desktop: lease back (gen+1 again, so nothing the device got counts).
        const at = this.ctx.nowIso();
        await moveLease(this.ctx.db, d.id, { generation: generation + 1, state: 'checking-out', deviceId }, {
          lease_state: 'server', location: 'server', lease_device_id: null, lease_generation: generation + 2, lease_since: at,
          replicated_top_object_id: null, replicated_at: null, updated_at: at,
        });
        await finishOperation(this.ctx.db, op.id, 'failed', at, { error: describeError(err) });
        throw err;
      }
    });
  }

  async #checkoutResponse(d: DesktopView, operation: string): Promise<CheckoutResponse> {
    const chain = await this.ctx.transfer.chain(d.replicated_top_object_id ?? d.top_object_id);
    return { operation, lease: toApiLease(d), chain, ...this.policy() };
  }

  /** Stop the server VM (graceful, forced after stopTimeoutMs) and seal its overlay. Idempotent, single flight. */
  async #prepare(id: string): Promise<void> {
    const running = this.#preparing.get(id);
    if (running !== undefined) return running;
    const p = (async () => {
      const d = await this.#reload(id);
      if (d.state !== 'stopped') {
        // The lease is the device's now, so nothing else moves this state (transitionState needs the server).
        await setState(this.ctx.db, id, 'stopping', this.ctx.nowIso());
        try {
          await this.ctx.runtime.stop(toRuntimeDesktop(this.ctx.paths, d), { timeoutMs: this.ctx.config.stopTimeoutMs });
        } catch (err) {
          await setState(this.ctx.db, id, 'error', this.ctx.nowIso());
          throw runtimeFailure(err, d, 'stop');
        }
        await setState(this.ctx.db, id, 'stopped', this.ctx.nowIso());
      }
      if (d.overlay_path !== null) {
        const layer = await this.ctx.store.seal({ path: absoluteOverlayPath(this.ctx.paths, d.overlay_path), parent: d.top_object_id });
        await recordSealedOverlay(this.ctx.db, id, d.overlay_path, layer.id, this.ctx.nowIso());
      }
    })().finally(() => this.#preparing.delete(id));
    this.#preparing.set(id, p);
    return p;
  }

  async confirm(caller: Caller, name: string, generation: number): Promise<LeaseResponse> {
    const deviceId = deviceOf(caller);
    const d = await visibleDesktop(this.ctx.db, caller, name);
    return this.#audited(caller, 'lease.confirm', d, { generation }, async () => {
      this.#requireGeneration(d, generation);
      this.#requireHolder(d, deviceId, ['checking-out', 'checked-out']);
      if (d.lease_state === 'checking-out') {
        this.#busyIfPreparing(d);
        if (d.overlay_path !== null || d.state !== 'stopped') {
          throw new ApiError('LEASE_BUSY', `desktop "${d.name}": the check-out was interrupted before the server VM was sealed; call checkout again to resume`, { current: generation });
        }
        const at = this.ctx.nowIso();
        if (!(await moveLease(this.ctx.db, d.id, { generation, state: 'checking-out', deviceId, noOverlay: true }, { lease_state: 'checked-out', updated_at: at }))) {
          throw await this.#explainLoss(d.id, generation, deviceId);
        }
        for (const op of await runningOperations(this.ctx.db, d.id, ['checkout'])) {
          await finishOperation(this.ctx.db, op.id, 'succeeded', at, { result: { generation, top: d.replicated_top_object_id ?? d.top_object_id } });
        }
      }
      // Confirming twice (a lost answer) answers the same, with a fresh grant.
      const after = await this.#reload(d.id);
      return this.leaseResponse(after, await this.grantFor(after, deviceId));
    });
  }

  async cancel(caller: Caller, name: string, generation: number): Promise<LeaseResponse> {
    const deviceId = deviceOf(caller);
    const d = await visibleDesktop(this.ctx.db, caller, name);
    return this.#audited(caller, 'lease.cancel', d, { from: generation, to: generation + 1 }, async () => {
      this.#requireGeneration(d, generation);
      this.#requireHolder(d, deviceId, ['checking-out']);
      this.#busyIfPreparing(d);
      const at = this.ctx.nowIso();
      const moved = await moveLease(this.ctx.db, d.id, { generation, state: 'checking-out', deviceId }, {
        lease_state: 'server', location: 'server', lease_device_id: null, lease_generation: generation + 1, lease_since: at,
        replicated_top_object_id: null, replicated_at: null, updated_at: at,
      });
      if (!moved) throw await this.#explainLoss(d.id, generation, deviceId);
      for (const op of await runningOperations(this.ctx.db, d.id, ['checkout'])) {
        await finishOperation(this.ctx.db, op.id, 'cancelled', at, { result: { generation: generation + 1 } });
      }
      return this.leaseResponse(await this.#reload(d.id));
    });
  }

  // --- replicate and check-in

  /** POST /desktops/:name/operations: a replicate or check-in operation announced before its uploads. */
  async startOperation(caller: Caller, name: string, kind: LayersKind, generation: number): Promise<Operation> {
    const deviceId = deviceOf(caller);
    const d = await visibleDesktop(this.ctx.db, caller, name);
    return this.#audited(caller, 'operation.start', d, { kind, generation }, async () => {
      this.#requireGeneration(d, generation);
      this.#requireHolder(d, deviceId, ['checked-out']);
      await this.#refuseIfBusy(d, undefined);
      const op = await this.#newOperation(kind, d, caller);
      const view = await findOperation(this.ctx.db, op.id);
      if (view === undefined) throw new Error('operation vanished after insert');
      return toApiOperation(view);
    });
  }

  /** One replication (or check-in) at a time per desktop; one silent for OPERATION_STALE_MS is abandoned. */
  async #refuseIfBusy(d: DesktopView, except: string | undefined): Promise<void> {
    const now = this.ctx.clock.now();
    for (const op of await runningOperations(this.ctx.db, d.id, ['replicate', 'checkin'])) {
      if (op.id === except) continue;
      if (now - Date.parse(op.updated_at) >= OPERATION_STALE_MS) {
        await finishOperation(this.ctx.db, op.id, 'failed', this.ctx.nowIso(), { error: { code: 'ABANDONED', message: 'no progress from the device for 15 minutes' } });
        continue;
      }
      throw new ApiError('LEASE_BUSY', `desktop "${d.name}": a ${op.kind} (operation ${op.id}) is still running; wait for it or finish it`, { operation: op.id, current: Number(d.lease_generation) });
    }
  }

  async #namedOperation(d: DesktopView, deviceId: string, kind: LayersKind, id: string): Promise<OperationRow> {
    const op = await findOperation(this.ctx.db, id);
    if (op === undefined || op.desktop_id !== d.id) throw notFound('operation', id);
    if (op.device_id !== deviceId || op.kind !== kind || op.state !== 'running') {
      throw new ApiError('CONFLICT', `operation ${id} is not a running ${kind} of this device on desktop "${d.name}"`, { operation: id, kind: op.kind, state: op.state });
    }
    return op;
  }

  /**
   * Is `top` a valid next state of the chain ending at `replicated`? 'same' = nothing new. Throws 404 for a
   * top the caller may not read (missing, or someone else's), 422 CHAIN_MISMATCH for a chain that does not
   * continue the replicated one (see the header of this file).
   */
  async checkTop(caller: Caller, d: DesktopView, replicated: string, top: string): Promise<'same' | 'extends' | 'compacted'> {
    if (top === replicated) return 'same';
    await readableObject(this.ctx, caller, top);
    const newChain = (await this.ctx.transfer.chain(top)).map((o) => o.id);
    const oldChain = (await this.ctx.transfer.chain(replicated)).map((o) => o.id);
    if (newChain.includes(replicated)) return 'extends';
    if (oldChain.includes(top)) {
      throw new ApiError('CHAIN_MISMATCH', `layer ${top} is an ancestor of the replicated state ${replicated} of desktop "${d.name}": it would discard replicated work`, { top, replicated });
    }
    const old = new Set(oldChain);
    if (newChain.some((id) => old.has(id))) return 'compacted';
    throw new ApiError('CHAIN_MISMATCH', `the chain of ${top} shares nothing with the replicated chain of desktop "${d.name}" (a different image)`, { top, replicated, image: oldChain[0] ?? null });
  }

  async layers(caller: Caller, name: string, kind: LayersKind, body: { generation: number; top: string; operation?: string }): Promise<LeaseResponse> {
    const deviceId = deviceOf(caller);
    const d = await visibleDesktop(this.ctx.db, caller, name);
    const { generation, top } = body;
    const detail: Record<string, unknown> = kind === 'checkin' ? { from: generation, to: generation + 1, top } : { generation, top };
    return this.#audited(caller, kind === 'checkin' ? 'lease.checkin' : 'lease.replicate', d, detail, async () => {
      const retried = kind === 'checkin' ? await this.#retriedCheckin(d, deviceId, generation, top) : undefined;
      if (retried !== undefined) return retried;
      this.#requireGeneration(d, generation);
      this.#requireHolder(d, deviceId, ['checked-out']);
      const op = body.operation === undefined
        ? (await this.#refuseIfBusy(d, undefined), await this.#newOperation(kind, d, caller))
        : (await this.#refuseIfBusy(d, body.operation), await this.#namedOperation(d, deviceId, kind, body.operation));
      try {
        const replicated = d.replicated_top_object_id ?? d.top_object_id;
        const how = await this.checkTop(caller, d, replicated, top);
        const at = this.ctx.nowIso();
        const expect = { generation, state: 'checked-out', deviceId, replicatedTop: d.replicated_top_object_id } as const;
        const result = { top, previous: replicated, chain: how, generation: kind === 'checkin' ? generation + 1 : generation };
        const moved = await this.ctx.db.transaction().execute(async (trx) => {
          const ok = kind === 'checkin'
            ? await moveLease(trx, d.id, expect, {
              top_object_id: top, overlay_path: null, state: 'stopped', lease_state: 'server', location: 'server', lease_device_id: null,
              lease_generation: generation + 1, lease_since: at, replicated_top_object_id: null, replicated_at: null, updated_at: at,
            })
            : how === 'same' || (await moveLease(trx, d.id, expect, { replicated_top_object_id: top, replicated_at: at, updated_at: at }));
          if (ok) await finishOperation(trx, op.id, 'succeeded', at, { result });
          return ok;
        });
        if (!moved) throw await this.#explainLoss(d.id, generation, deviceId);
      } catch (err) {
        await finishOperation(this.ctx.db, op.id, 'failed', this.ctx.nowIso(), { error: describeError(err) });
        throw err;
      }
      const after = await this.#reload(d.id);
      return kind === 'checkin' ? this.leaseResponse(after) : this.leaseResponse(after, await this.grantFor(after, deviceId));
    });
  }

  /**
   * A check-in retried after its answer was lost: the lease is back at the server one generation later, on
   * exactly this top (or a compaction of it), by this device's last check-in. Answer as the first time instead of
   * LEASE_STALE.
   */
  async #retriedCheckin(d: DesktopView, deviceId: string, generation: number, top: string): Promise<LeaseResponse | undefined> {
    if (d.lease_state !== 'server' || Number(d.lease_generation) !== generation + 1) return undefined;
    // The server may have compacted the chain since (services/compaction.ts): its top then derives from ours.
    if (d.top_object_id !== top && (await this.ctx.transfer.describe(d.top_object_id))?.derivedFrom !== top) return undefined;
    const last = await latestOperation(this.ctx.db, d.id, { finished: true });
    if (last === undefined || last.kind !== 'checkin' || last.state !== 'succeeded' || last.device_id !== deviceId) return undefined;
    return this.leaseResponse(d);
  }

  // --- rollback

  async rollback(caller: Caller, name: string): Promise<LeaseResponse> {
    const d = await visibleDesktop(this.ctx.db, caller, name);
    const generation = Number(d.lease_generation);
    return this.#audited(caller, 'lease.rollback', d, { from: generation, to: generation + 1, device: d.lease_device_id }, async () => {
      if (caller.role !== 'admin' && !this.ctx.config.lease.allowUserRollback) {
        throw new ApiError('FORBIDDEN', 'On this server only administrators roll back a check-out.');
      }
      if (d.lease_state === 'server') throw new ApiError('CONFLICT', `desktop "${d.name}" is not checked out`, { lease: 'server' });
      this.#busyIfPreparing(d);
      const replicated = d.replicated_top_object_id ?? d.top_object_id;
      const at = this.ctx.nowIso();
      // The overlay is left as it is: null once sealed at check-out; still recorded (and still on top of
      // top_object_id = replicated) when a crash interrupted the check-out before the seal.
      const moved = await moveLease(this.ctx.db, d.id, { generation, state: d.lease_state, deviceId: d.lease_device_id }, {
        top_object_id: replicated, lease_state: 'server', location: 'server', lease_device_id: null, lease_generation: generation + 1,
        lease_since: at, replicated_top_object_id: null, replicated_at: null, updated_at: at,
      });
      if (!moved) throw await this.#explainLoss(d.id, generation, null);
      await failRunningOperations(this.ctx.db, d.id, at, { code: 'LEASE_STALE', message: `rolled back by ${caller.name}` });
      await this.#newOperation('rollback', d, caller, 'succeeded', { top: replicated, generation: generation + 1, device: d.lease_device_id, discardedFrom: generation });
      return this.leaseResponse(await this.#reload(d.id));
    });
  }

  // --- heartbeat

  async heartbeat(caller: Caller, body: HeartbeatRequest): Promise<HeartbeatResponse> {
    const deviceId = deviceOf(caller);
    await touchDevice(this.ctx.db, deviceId, this.ctx.nowIso());
    const device = await findDeviceById(this.ctx.db, deviceId);
    if (device === undefined) throw new ApiError('AUTH_INVALID');
    const leases: HeartbeatResponse['leases'] = [];
    for (const l of body.leases) {
      const d = await findDesktopByName(this.ctx.db, l.desktop);
      // Someone else's desktop answers like a missing one: not valid, and nothing about it.
      if (d === undefined || d.owner_id !== caller.userId) {
        leases.push({ desktop: l.desktop, valid: false, generation: l.generation });
        continue;
      }
      const generation = Number(d.lease_generation);
      const valid = d.lease_state !== 'server' && d.lease_device_id === deviceId && generation === l.generation;
      const entry: HeartbeatResponse['leases'][number] = { desktop: l.desktop, valid, generation };
      if (valid && d.lease_state === 'checked-out') Object.assign(entry, { grant: await this.grantFor(d, deviceId), ...this.policy() });
      leases.push(entry);
    }
    return { device: toApiDevice(device), leases };
  }

  // --- helpers

  async #newOperation(
    kind: OperationKindColumn,
    d: DesktopView,
    caller: Caller,
    state: 'running' | 'succeeded' = 'running',
    result?: Record<string, unknown>,
  ): Promise<{ id: string }> {
    const id = this.ctx.ids.uuid();
    await insertOperation(this.ctx.db, {
      id, kind, desktopId: d.id, deviceId: caller.deviceId ?? d.lease_device_id, userId: caller.userId, at: this.ctx.nowIso(), state,
      ...(result === undefined ? {} : { result }),
    });
    return { id };
  }

  #audited<T>(caller: Caller, action: Parameters<AppContext['audit']['run']>[0]['action'], d: DesktopView, detail: Record<string, unknown>, fn: () => Promise<T>): Promise<T> {
    const device = caller.deviceId === undefined ? {} : { device: caller.deviceId };
    return this.ctx.audit.run({ actor: caller, action, desktopId: d.id, target: d.name, detail: { ...device, ...detail } }, fn);
  }
}
