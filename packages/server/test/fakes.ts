// In-memory fakes of the server's ports, for tests that must run without QEMU or the real store.
/* eslint-disable @typescript-eslint/require-await -- the ports are async; these fakes answer at once */

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { DesktopPause, ImageFormat } from '@roamdesk/api';
import type { Clock, DesktopRuntime, Ids, ImportedLayer, ImportedObject, ObjectStore, RuntimeDesktop, RuntimeStatus } from '../src/ports.ts';

export class FakeClock implements Clock {
  constructor(public t = Date.parse('2025-01-01T00:00:00.000Z')) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

/** Predictable UUIDs: 00000000-0000-4000-8000-000000000001, …02 … */
export class SeqIds implements Ids {
  n = 0;
  uuid(): string {
    this.n += 1;
    return `00000000-0000-4000-8000-${this.n.toString(16).padStart(12, '0')}`;
  }
}

/** An error shaped like the engine packages' errors: stable code, JSON-safe data. */
export class EngineError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly data: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/**
 * Content-addressed like the real store (id = SHA-256 of the bytes). Bytes starting with "BAD" are refused
 * the way the qcow2 policy refuses a bad header.
 */
export class FakeStore implements ObjectStore {
  readonly objects = new Map<string, { size: number; format: ImageFormat }>();
  readonly calls: string[] = [];
  failNext: Error | undefined;
  /** Overlays are named like the real store's, in `<root>/objects/` (the server checks where they are). */
  root = '/nonexistent/store';
  #overlays = 0;

  async createOverlay(parentId: string, options: { label?: string }): Promise<{ path: string }> {
    this.calls.push(`overlay ${parentId}`);
    this.#overlays += 1;
    const label = options.label === undefined ? '' : `${options.label}-`;
    return { path: `${this.root}/objects/overlay-${label}${this.#overlays.toString(16).padStart(16, '0')}.qcow2` };
  }

  async importImage(sourcePath: string, options: { format?: ImageFormat }): Promise<ImportedObject> {
    this.calls.push(`import ${sourcePath}`);
    if (this.failNext !== undefined) {
      const e = this.failNext;
      this.failNext = undefined;
      throw e;
    }
    const bytes = await readFile(sourcePath);
    if (bytes.subarray(0, 3).toString() === 'BAD') {
      throw new EngineError('QCOW2_ERR_BAD_MAGIC', 'not a qcow2 image', { found: '0x42414400' });
    }
    const id = createHash('sha256').update(bytes).digest('hex');
    const format = options.format ?? 'raw';
    this.objects.set(id, { size: bytes.length, format });
    return { id, size: bytes.length, virtualSize: bytes.length * 2, format };
  }

  /** Set by tests that need real objects (chain compaction), e.g. the real Store's importDifference. */
  differenceWith: ((parentId: string, targetId: string) => Promise<ImportedLayer | null>) | undefined;

  /** A fake difference: none when the target is the parent itself, else a small layer named by both ids. */
  async importDifference(parentId: string, targetId: string): Promise<ImportedLayer | null> {
    this.calls.push(`difference ${parentId} ${targetId}`);
    if (this.differenceWith !== undefined) return this.differenceWith(parentId, targetId);
    if (targetId === parentId) return null;
    const id = createHash('sha256').update(`layer ${parentId} ${targetId}`).digest('hex');
    this.objects.set(id, { size: 100, format: 'qcow2' });
    return { id, parent: parentId, size: 100, virtualSize: (this.objects.get(targetId)?.size ?? 0) * 2 };
  }

  /**
   * Seal an overlay. By default a fake layer named by the overlay path; a test that needs real objects (the
   * transfer engine over the real store describes the chain) sets `sealWith`, e.g. the real Store's seal.
   */
  sealWith: ((overlay: { path: string; parent: string }) => Promise<ImportedLayer>) | undefined;

  async seal(overlay: { path: string; parent: string }): Promise<ImportedLayer> {
    this.calls.push(`seal ${overlay.path.slice(overlay.path.lastIndexOf('/') + 1)} ${overlay.parent}`);
    if (this.sealWith !== undefined) return this.sealWith(overlay);
    const id = createHash('sha256').update(`sealed ${overlay.path}`).digest('hex');
    this.objects.set(id, { size: 100, format: 'qcow2' });
    return { id, parent: overlay.parent, size: 100, virtualSize: 200 };
  }

  /** Set by tests whose objects are real (chain compaction removes the old chain), e.g. the real Store's remove. */
  removeWith: ((id: string) => Promise<void>) | undefined;

  async remove(id: string): Promise<void> {
    this.calls.push(`remove ${id}`);
    this.objects.delete(id);
    if (this.removeWith !== undefined) await this.removeWith(id);
  }

  async has(id: string): Promise<boolean> {
    return this.objects.has(id);
  }
}

/** A runtime whose VMs are entries in a map. Set `failStart`/`failStop` to make the next call fail. */
export class FakeRuntime implements DesktopRuntime {
  readonly running = new Map<string, RuntimeDesktop>();
  readonly calls: string[] = [];
  readonly removed: string[] = [];
  failStart: Error | undefined;
  failStop: Error | undefined;
  /** What reconcile() reports; default: what `running` says. */
  reconcileReport: Map<string, RuntimeStatus> | undefined;
  /** Console (VNC) socket path per desktop id, set by tests; consoleSocket() reports it while running. */
  readonly consoleSockets = new Map<string, string>();
  /** Pauses of running VMs, set by tests (a disk error); resume() ends one, unless `failResume` is set. */
  readonly pauses = new Map<string, DesktopPause>();
  failResume: Error | undefined;

  paused(id: string): DesktopPause | null {
    return this.running.has(id) ? (this.pauses.get(id) ?? null) : null;
  }

  async resume(d: RuntimeDesktop): Promise<void> {
    this.calls.push(`resume ${d.name}`);
    if (this.failResume !== undefined) throw this.failResume;
    this.pauses.delete(d.id);
  }

  async start(d: RuntimeDesktop): Promise<void> {
    this.calls.push(`start ${d.name}`);
    if (this.failStart !== undefined) {
      const e = this.failStart;
      this.failStart = undefined;
      throw e;
    }
    this.running.set(d.id, d);
  }

  async stop(d: RuntimeDesktop, options: { timeoutMs: number }): Promise<void> {
    this.calls.push(`stop ${d.name} ${options.timeoutMs}`);
    if (this.failStop !== undefined) {
      const e = this.failStop;
      this.failStop = undefined;
      throw e;
    }
    this.running.delete(d.id);
  }

  async status(d: RuntimeDesktop): Promise<RuntimeStatus> {
    return { state: this.running.has(d.id) ? 'running' : 'stopped' };
  }

  async serialLog(d: RuntimeDesktop, tailBytes: number): Promise<string> {
    const log = `boot ${d.name}\nlogin: `;
    return log.slice(Math.max(0, log.length - tailBytes));
  }

  async export(d: RuntimeDesktop): Promise<Readable> {
    this.calls.push(`export ${d.name}`);
    return Readable.from([Buffer.from(`QFI\xfbchain of ${d.name}`, 'latin1')]);
  }

  async remove(d: RuntimeDesktop): Promise<void> {
    this.removed.push(d.id);
  }

  async consoleSocket(d: RuntimeDesktop): Promise<string | null> {
    if (!this.running.has(d.id)) return null;
    return this.consoleSockets.get(d.id) ?? null;
  }

  async reconcile(desktops: readonly RuntimeDesktop[]): Promise<ReadonlyMap<string, RuntimeStatus>> {
    this.calls.push(`reconcile ${desktops.length}`);
    if (this.reconcileReport !== undefined) return this.reconcileReport;
    return new Map(desktops.map((d) => [d.id, { state: this.running.has(d.id) ? ('running' as const) : ('stopped' as const) }]));
  }
}
