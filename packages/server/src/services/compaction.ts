// Chains stay short on the server too (issue 5 item 6). Every check-out adds the server's sealed layer and
// every check-in the device's layers, so a desktop's chain grows by at least two layers a round trip. When
// the server holds the lease and the desktop is at rest (stopped, no overlay), the layers above the desktop's
// image version are compacted into ONE layer (Store.importDifference: qemu-img rebase in safe mode, checked
// with qemu-img compare), and the desktop's top moves to it with a compare-and-set that also requires the
// lease, its generation, the old top and "no overlay" to be unchanged. So:
//  - the image and its versions stay shared (only the desktop's own layers are rewritten);
//  - every object of the old chain stays in the store: nothing a device holds or uploads becomes invalid;
//  - a device holding the old chain does not download the new layer: its sidecar records `derivedFrom` (the
//    old top), and the device computes the same bytes from its own copies (transfer/download.ts derive),
//    accepted only if they hash to the layer's id;
//  - a failure or a crash half-way changes nothing (the store removes its temp file; the row is unchanged).
//
// It runs in the background after a check-in or rollback returns the lease, and a start of the desktop
// waits for it (or runs it, e.g. after a restart) before it creates the overlay. A check-out waits for a
// running one; it does not start one (the device would download what it might already hold).

import type { AppContext } from '../context.ts';
import { findDesktopById, replaceTopAtRest } from '../db/repositories/desktops.ts';
import { versionTopObjects } from '../db/repositories/images.ts';

export interface CompactionResult {
  desktopId: string;
  /** The top before and after; `to` is the desktop's base (an image version) when the layers changed nothing. */
  from: string;
  to: string;
  /** Layers above the image version before (after: one, or none). */
  layers: number;
}

type Ctx = Pick<AppContext, 'db' | 'store' | 'transfer' | 'config' | 'audit' | 'nowIso' | 'logger'>;

export class ChainCompactor {
  readonly #running = new Map<string, Promise<CompactionResult | null>>();

  constructor(private readonly ctx: Ctx) {}

  /**
   * Compact the desktop's chain if it is longer than the policy and the desktop is at rest on the server;
   * joins a compaction of it already running. Null when there was nothing to do or the desktop moved meanwhile.
   */
  compact(desktopId: string): Promise<CompactionResult | null> {
    const running = this.#running.get(desktopId);
    if (running !== undefined) return running;
    const p = this.#compact(desktopId).finally(() => this.#running.delete(desktopId));
    this.#running.set(desktopId, p);
    return p;
  }

  /**
   * compact(), for callers that go on either way (a check-in's background work, a start): a failure is logged
   * (and recorded in the event log) and answers null; the chain just stays longer until the next try.
   */
  async tryCompact(desktopId: string): Promise<CompactionResult | null> {
    try {
      return await this.compact(desktopId);
    } catch (err) {
      this.ctx.logger.error({ err, desktopId }, 'chain compaction failed; the chain stays as it was');
      return null;
    }
  }

  /** Waits for a running compaction of the desktop, if any (its outcome does not matter here). */
  async settled(desktopId: string): Promise<void> {
    await this.#running.get(desktopId)?.catch(() => undefined);
  }

  /** Waits for every running compaction (server shutdown). */
  async close(): Promise<void> {
    await Promise.all([...this.#running.values()].map((p) => p.catch(() => undefined)));
  }

  async #compact(desktopId: string): Promise<CompactionResult | null> {
    const d = await findDesktopById(this.ctx.db, desktopId);
    if (d === undefined || d.lease_state !== 'server' || d.overlay_path !== null) return null;
    const chain = (await this.ctx.transfer.chain(d.top_object_id)).map((o) => o.id);
    const versions = new Set(await versionTopObjects(this.ctx.db, d.image_id));
    // The desktop's base: the newest image version in its chain (the image itself when none is listed).
    let base = 0;
    chain.forEach((id, i) => {
      if (versions.has(id)) base = i;
    });
    const layers = chain.length - 1 - base;
    if (layers <= this.ctx.config.lease.maxChainLength) return null;
    const from = d.top_object_id;
    const baseId = chain[base] as string;
    const generation = Number(d.lease_generation);
    return this.ctx.audit.run({ actor: null, action: 'desktop.compact', desktopId, target: d.name, detail: { from, layers } }, async () => {
      const layer = await this.ctx.store.importDifference(baseId, from);
      const to = layer?.id ?? baseId;
      const moved = await replaceTopAtRest(this.ctx.db, desktopId, { top: from, generation }, to, this.ctx.nowIso());
      // Moved meanwhile (a check-out or start won the row): the new layer stays in the store, unused.
      return moved ? { desktopId, from, to, layers } : null;
    }, (r) => ({ detail: { from, layers, to: r?.to ?? null } }));
  }
}
