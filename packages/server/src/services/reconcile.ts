// At server start: make the database agree with what is really running. The runtime finds VMs left by a
// previous process (and kills those no desktop should run); here every desktop whose recorded state differs
// from the observed one is corrected, and each correction is written to the event log.

import type { AppContext } from '../context.ts';
import { findDesktopById, listDesktops, setState, transitionState } from '../db/repositories/desktops.ts';
import type { RuntimeStatus } from '../ports.ts';
import type { DesktopStateColumn } from '../db/schema.ts';
import { toRuntimeDesktop } from './paths.ts';

type Ctx = Pick<AppContext, 'db' | 'runtime' | 'paths' | 'audit' | 'nowIso'>;

export interface ReconcileChange {
  desktop: string;
  from: DesktopStateColumn;
  to: DesktopStateColumn;
}

export async function reconcileDesktops(ctx: Ctx): Promise<ReconcileChange[]> {
  const desktops = (await listDesktops(ctx.db)).filter((d) => d.location === 'server');
  const observed = await ctx.runtime.reconcile(desktops.map((d) => toRuntimeDesktop(ctx.paths, d)));
  const changes: ReconcileChange[] = [];
  for (const d of desktops) {
    // Not reported = no VM found: whatever the database said, nothing runs.
    const seen = observed.get(d.id) ?? { state: 'stopped' as const };
    // An 'error' desktop with no VM stays 'error' so the failure stays visible until someone acts on it.
    const to: DesktopStateColumn = seen.state === 'stopped' && d.state === 'error' ? 'error' : seen.state;
    if (to === d.state) continue;
    await setState(ctx.db, d.id, to, ctx.nowIso());
    changes.push({ desktop: d.name, from: d.state, to });
    await ctx.audit.record(
      { actor: null, action: 'desktop.reconcile', desktopId: d.id, target: d.name },
      'ok',
      seen.detail === undefined ? { from: d.state, to } : { from: d.state, to, reason: seen.detail },
    );
  }
  return changes;
}

/**
 * While the server runs: a VM that ends without a stop request (the guest powered off, QEMU crashed or was
 * killed by someone else) moves its desktop from running to stopped (or error, for a crash). Compare-and-set
 * from 'running' only, so a stop or start in progress keeps its own transition. Also sweeps once, for VMs
 * that ended between reconcile and the subscription. Returns the unsubscribe function.
 */
export async function followRuntimeExits(ctx: Ctx, onChange: (c: ReconcileChange) => void = () => {}): Promise<() => void> {
  const follow = async (id: string, seen: RuntimeStatus): Promise<void> => {
    const to: DesktopStateColumn = seen.state === 'error' ? 'error' : 'stopped';
    if (seen.state === 'running' || !(await transitionState(ctx.db, id, ['running'], to, ctx.nowIso()))) return;
    const d = await findDesktopById(ctx.db, id);
    const change = { desktop: d?.name ?? id, from: 'running' as const, to };
    onChange(change);
    await ctx.audit.record(
      { actor: null, action: 'desktop.reconcile', desktopId: id, target: change.desktop },
      'ok',
      seen.detail === undefined ? { from: 'running', to, reason: 'vm-exited' } : { from: 'running', to, reason: seen.detail },
    );
  };
  let active = true;
  const pending = new Set<Promise<void>>();
  const unsubscribe = ctx.runtime.onExit?.((id, seen) => {
    if (!active) return;
    // Errors here have no caller to go to; the next reconcile corrects the state anyway.
    const p = follow(id, seen).catch(() => {}).finally(() => pending.delete(p));
    pending.add(p);
  });
  for (const d of await listDesktops(ctx.db)) {
    if (d.state !== 'running' || d.location !== 'server') continue;
    await follow(d.id, await ctx.runtime.status(toRuntimeDesktop(ctx.paths, d)));
  }
  return () => {
    active = false;
    unsubscribe?.();
  };
}
