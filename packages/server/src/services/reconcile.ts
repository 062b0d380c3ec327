// At server start: make the database agree with what is really running. The runtime finds VMs left by a
// previous process (and kills those no desktop should run); here every desktop whose recorded state differs
// from the observed one is corrected, and each correction is written to the event log.

import type { AppContext } from '../context.ts';
import { listDesktops, setState } from '../db/repositories/desktops.ts';
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
