// The keeper: a small process beside a running local VM (`roamdesk start` launches it, as `roamdesk device keep
// NAME`, when the server's policy schedules replication). While the VM runs it heartbeats, which renews the
// offline grant and learns of a lease that moved away, and it replicates every `replicateEverySeconds` while the
// server is reachable: from the start of one replication to the start of the next, a late one starting as soon
// as it can (View's "target replication frequency"). A replication it cannot do now (offline, the user's own
// command holds the desktop, a full disk) is tried again after `retrySeconds`.
//
// It ends by itself when the VM stops, the lease leaves this device, or the policy turns scheduled replication
// off. One keeper per desktop (lock.ts `lockKeeper`). Like the rest of the agent it never logs: it reports
// events to its caller.

import type { DeviceAgent, SendResult } from './agent.ts';
import { lockKeeper } from './lock.ts';

export interface KeeperPlanInput {
  now: number;
  /** The policy; 0 = no scheduled replication. */
  replicateEverySeconds: number;
  /** When the last replication started (or, if none since the check-out, when the desktop was checked out). */
  lastReplicationMs: number;
  lastHeartbeatMs: number | null;
  heartbeatEverySeconds: number;
  /** When the last replication attempt failed, if it did after the last success. */
  lastFailureMs: number | null;
  retrySeconds: number;
}

export interface KeeperPlan {
  heartbeat: boolean;
  replicate: boolean;
}

/** What is due now (pure). A replication heartbeats itself, so the two are never both due. */
export function keeperPlan(i: KeeperPlanInput): KeeperPlan {
  const due = (since: number, seconds: number): boolean => i.now >= since + seconds * 1000;
  // A failed one is retried after retrySeconds, or sooner when the policy itself is more frequent.
  const replicate = i.replicateEverySeconds > 0 && due(i.lastReplicationMs, i.replicateEverySeconds) &&
    (i.lastFailureMs === null || due(i.lastFailureMs, Math.min(i.retrySeconds, i.replicateEverySeconds)));
  const heartbeat = !replicate && (i.lastHeartbeatMs === null || due(i.lastHeartbeatMs, i.heartbeatEverySeconds));
  return { heartbeat, replicate };
}

export type KeeperExit = 'vm-stopped' | 'not-checked-out' | 'lease-lost' | 'replication-off' | 'aborted';

export type KeeperEvent =
  | { type: 'started'; desktop: string; replicateEverySeconds: number; nextReplicationAt: string }
  | { type: 'heartbeat'; online: boolean; error: string | null }
  | { type: 'replicated'; result: SendResult; nextReplicationAt: string }
  | { type: 'replication-failed'; code: string; message: string; retryAt: string }
  | { type: 'stopped'; reason: KeeperExit };

export interface KeeperOptions {
  /** Default 300 (5 minutes). */
  heartbeatEverySeconds?: number;
  /** After a failed replication (or the policy's interval, if shorter); default 60. */
  retrySeconds?: number;
  /** How often it looks at the VM; default 2000 ms. */
  pollMs?: number;
  signal?: AbortSignal;
  onEvent?: (e: KeeperEvent) => void;
}

const iso = (ms: number): string => new Date(ms).toISOString();

/**
 * Keep `name` until its local VM stops (or another exit). DEVICE_ERR_BUSY when a keeper already runs for it.
 * Errors of a replication are events, never thrown: the keeper goes on.
 */
export async function runKeeper(agent: DeviceAgent, name: string, opts: KeeperOptions = {}): Promise<KeeperExit> {
  const now = Date.now;
  const heartbeatEverySeconds = opts.heartbeatEverySeconds ?? 300;
  const retrySeconds = opts.retrySeconds ?? 60;
  const pollMs = opts.pollMs ?? 2000;
  const emit = (e: KeeperEvent): void => opts.onEvent?.(e);
  const lock = await lockKeeper(agent.home, name);
  const startMs = now();
  let reason: KeeperExit = 'aborted';
  try {
    let lastHeartbeatMs: number | null = null;
    let lastStartMs = Number.NEGATIVE_INFINITY;
    let lastFailureMs: number | null = null;
    let announced = false;
    while (opts.signal?.aborted !== true) {
      const rec = await agent.records.load(name);
      if (rec === null || rec.state === 'checking-out' || rec.state === 'checking-in') {
        reason = 'not-checked-out';
        break;
      }
      if (rec.state === 'lost') {
        reason = 'lease-lost';
        break;
      }
      if (!(await agent.vm(name)).running) {
        reason = 'vm-stopped';
        break;
      }
      const every = rec.replicateEverySeconds ?? 0;
      if (every === 0) {
        reason = 'replication-off';
        break;
      }
      const recorded = Date.parse(rec.lastReplication?.at ?? rec.checkedOutAt);
      const since = Math.max(lastStartMs, Number.isFinite(recorded) ? recorded : startMs);
      const next = (): string => iso(Math.max(now(), since + every * 1000));
      if (!announced) {
        announced = true;
        emit({ type: 'started', desktop: name, replicateEverySeconds: every, nextReplicationAt: next() });
      }
      const plan = keeperPlan({ now: now(), replicateEverySeconds: every, lastReplicationMs: since, lastHeartbeatMs, heartbeatEverySeconds, lastFailureMs, retrySeconds });
      if (plan.replicate) {
        const startedMs = now();
        try {
          const result = await agent.replicate(name, { scheduled: true, ...(opts.signal !== undefined ? { signal: opts.signal } : {}) });
          lastStartMs = startedMs;
          lastFailureMs = null;
          lastHeartbeatMs = now();
          emit({ type: 'replicated', result, nextReplicationAt: iso(startedMs + every * 1000) });
        } catch (err) {
          lastFailureMs = now();
          const e = err as Error & { code?: unknown };
          const retryAt = iso(lastFailureMs + Math.min(retrySeconds, every) * 1000);
          emit({ type: 'replication-failed', code: typeof e.code === 'string' ? e.code : 'ERROR', message: e.message, retryAt });
        }
        continue;
      }
      if (plan.heartbeat) {
        const hb = await agent.heartbeat().catch((err: unknown) => ({ online: false, error: (err as Error).message }));
        lastHeartbeatMs = now();
        emit({ type: 'heartbeat', online: hb.online, error: hb.error });
        continue;
      }
      await sleep(pollMs, opts.signal);
    }
  } finally {
    await lock.release();
  }
  emit({ type: 'stopped', reason });
  return reason;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
