// A desktop's VM paused by a disk error (or resumed) is news for the operator and for the desktop's history: each
// change goes to the event log (desktop.pause / desktop.resume) and to the caller's log function.

import type { DesktopPause } from '@roamdesk/api';
import type { AppContext } from '../context.ts';
import { findDesktopById } from '../db/repositories/desktops.ts';

type Ctx = Pick<AppContext, 'db' | 'runtime' | 'audit'>;

export interface PauseChange {
  desktop: string;
  /** null: the VM runs again. */
  paused: DesktopPause | null;
  /** The server resumed it itself (a full disk that has room again). */
  auto: boolean;
  /** Free bytes on the store's disk when it changed (null: statfs cannot tell). */
  freeBytes: number | null;
}

/** Follows the runtime's pauses until the returned function is called. */
export function followRuntimePauses(ctx: Ctx, onChange: (c: PauseChange) => void = () => {}): () => void {
  let active = true;
  const unsubscribe = ctx.runtime.onPause?.((id, paused, info) => {
    if (!active) return;
    // Errors here have no caller to go to: the desktop's API view shows the pause anyway.
    void (async () => {
      const d = await findDesktopById(ctx.db, id);
      const change: PauseChange = { desktop: d?.name ?? id, paused, ...info };
      onChange(change);
      await ctx.audit.record(
        { actor: null, action: paused === null ? 'desktop.resume' : 'desktop.pause', desktopId: id, target: change.desktop },
        'ok',
        paused === null ? { auto: info.auto, freeBytes: info.freeBytes } : { reason: paused.reason, freeBytes: info.freeBytes },
      );
    })().catch(() => {});
  });
  return () => {
    active = false;
    unsubscribe?.();
  };
}
