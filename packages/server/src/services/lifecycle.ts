// Start, stop and restart a desktop on the server. The database state is the source of truth and is
// moved with compare-and-set transitions (db/repositories/desktops.ts), so concurrent requests cannot both
// start one VM: the loser gets DESKTOP_RUNNING / DESKTOP_BUSY.
//
//   stopped|error --start--> starting --ok--> running          (runtime failure -> error)
//   running|error --stop---> stopping --ok--> stopped          (runtime failure -> error)

import { ApiError, statusForCode } from '@roamdesk/api';
import type { AppContext } from '../context.ts';
import { type DesktopView, findDesktopById, setOverlayPath, setState, transitionState } from '../db/repositories/desktops.ts';
import type { DesktopStateColumn } from '../db/schema.ts';
import { checkedOut } from './checked-out.ts';
import { relativeOverlayPath, toRuntimeDesktop } from './paths.ts';

type Ctx = Pick<AppContext, 'db' | 'store' | 'runtime' | 'paths' | 'config' | 'nowIso' | 'compactor'>;

/** Why a transition from `desktop`'s current state was refused. */
function refusal(desktop: DesktopView, wanted: 'start' | 'stop'): ApiError {
  if (desktop.location !== 'server') return checkedOut(desktop);
  const s = desktop.state;
  if (s === 'starting' || s === 'stopping') {
    return new ApiError('DESKTOP_BUSY', `desktop "${desktop.name}" is ${s}`, { state: s });
  }
  return wanted === 'start'
    ? new ApiError('DESKTOP_RUNNING', `desktop "${desktop.name}" is already running`, { state: s })
    : new ApiError('DESKTOP_NOT_RUNNING', `desktop "${desktop.name}" is not running`, { state: s });
}

/** Errors with an engine code pass through (their status comes from the api catalog); others are wrapped. */
export function runtimeFailure(err: unknown, desktop: DesktopView, verb: string): unknown {
  if (err instanceof ApiError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && statusForCode(code) !== undefined) return err;
  return new ApiError('RUNTIME_FAILED', `desktop "${desktop.name}" failed to ${verb}`, undefined, { cause: err });
}

async function reload(ctx: Ctx, id: string): Promise<DesktopView> {
  const d = await findDesktopById(ctx.db, id);
  if (d === undefined) throw new ApiError('NOT_FOUND', 'desktop disappeared');
  return d;
}

async function claim(ctx: Ctx, d: DesktopView, from: DesktopStateColumn[], to: DesktopStateColumn, wanted: 'start' | 'stop') {
  if (!(await transitionState(ctx.db, d.id, from, to, ctx.nowIso()))) throw refusal(await reload(ctx, d.id), wanted);
}

/**
 * A desktop without an overlay (never started, or back from a device) gets one on its top object, recorded
 * BEFORE any VM writes to it, so no VM ever runs on an overlay the database does not know. A crash between
 * create and record leaves an empty, unreferenced overlay file: harmless. A chain past the policy length is
 * compacted first (services/compaction.ts): this is the last moment it can be.
 */
async function ensureOverlay(ctx: Ctx, d: DesktopView): Promise<DesktopView> {
  if (d.overlay_path !== null) return d;
  await ctx.compactor.compact(d.id);
  d = await reload(ctx, d.id);
  const overlay = await ctx.store.createOverlay(d.top_object_id, { label: `desktop-${d.id.slice(0, 8)}` });
  const rel = relativeOverlayPath(ctx.paths, overlay.path);
  await setOverlayPath(ctx.db, d.id, rel, ctx.nowIso());
  return { ...d, overlay_path: rel };
}

/**
 * A desktop whose VM a disk error paused cannot be stopped gracefully (the paused guest never sees the power
 * button, and the writes it waits on would be lost when the timeout kills it): refused unless forced.
 */
export function refuseDiskPause(ctx: Pick<Ctx, 'runtime'>, d: DesktopView, verb: string): void {
  const pause = ctx.runtime.paused?.(d.id) ?? null;
  if (pause === null || pause.reason === 'paused') return;
  throw new ApiError('DESKTOP_PAUSED', `cannot ${verb} desktop "${d.name}": its VM is paused because ${pause.reason === 'no-space' ? "the server's disk is full" : 'its disk reported an I/O error'}, and its last writes are waiting`, {
    reason: pause.reason, since: pause.since,
    hint: pause.reason === 'no-space'
      ? 'free space on the server: the desktop resumes by itself (or start it to resume now); or stop it with force, losing those writes as a power cut would'
      : 'fix the disk, then start the desktop to retry the write; or stop it with force, losing those writes as a power cut would',
  });
}

/** Start a stopped desktop; a running one that is paused (a disk error, or a request) is resumed. */
export async function startDesktop(ctx: Ctx, d: DesktopView): Promise<DesktopView> {
  if (d.state === 'running' && d.location === 'server' && ctx.runtime.resume !== undefined && (ctx.runtime.paused?.(d.id) ?? null) !== null) {
    try {
      await ctx.runtime.resume(toRuntimeDesktop(ctx.paths, d));
    } catch (err) {
      throw runtimeFailure(err, d, 'resume');
    }
    return reload(ctx, d.id);
  }
  await claim(ctx, d, ['stopped', 'error'], 'starting', 'start');
  try {
    d = await ensureOverlay(ctx, d);
    await ctx.runtime.start(toRuntimeDesktop(ctx.paths, d));
  } catch (err) {
    await setState(ctx.db, d.id, 'error', ctx.nowIso());
    throw runtimeFailure(err, d, 'start');
  }
  await setState(ctx.db, d.id, 'running', ctx.nowIso());
  return reload(ctx, d.id);
}

/** How long the guest gets to power off before QEMU is killed (default stopTimeoutMs; 0: QEMU quits at once). */
export interface StopOptions {
  timeoutMs?: number;
}

/** Graceful ACPI power-down, the VM killed after the timeout. */
export async function stopDesktop(ctx: Ctx, d: DesktopView, opts: StopOptions = {}): Promise<DesktopView> {
  if (opts.timeoutMs !== 0) refuseDiskPause(ctx, d, 'stop');
  // From 'error' too: a failed start may have left a process behind, and stop is how it is cleaned up.
  await claim(ctx, d, ['running', 'error'], 'stopping', 'stop');
  try {
    await ctx.runtime.stop(toRuntimeDesktop(ctx.paths, d), { timeoutMs: opts.timeoutMs ?? ctx.config.stopTimeoutMs });
  } catch (err) {
    await setState(ctx.db, d.id, 'error', ctx.nowIso());
    throw runtimeFailure(err, d, 'stop');
  }
  await setState(ctx.db, d.id, 'stopped', ctx.nowIso());
  return reload(ctx, d.id);
}

/** Stop then start. Only a running desktop restarts; a stopped one is started with start. */
export async function restartDesktop(ctx: Ctx, d: DesktopView, opts: StopOptions = {}): Promise<DesktopView> {
  if (d.state !== 'running') throw refusal(d, 'stop');
  const stopped = await stopDesktop(ctx, d, opts);
  return startDesktop(ctx, stopped);
}
