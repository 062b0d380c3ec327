// Chains stay short on the server too (issue 5 item 6). Every check-out adds the server's sealed layer and
// every check-in the device's layers, so a desktop's chain grows by at least two layers a round trip. When
// the server holds the lease and no overlay rests on the chain yet, the layers above the desktop's image version
// are compacted into ONE layer (Store.importDifference: qemu-img rebase in safe mode, checked
// with qemu-img compare), and the desktop's top moves to it with a compare-and-set that also requires the
// lease, its generation, the old top and "no overlay" to be unchanged. So:
//  - the image and its versions stay shared (only the desktop's own layers are rewritten);
//  - a device holding the old chain does not download the new layer: its sidecar records `derivedFrom` (the
//    old top), and the device computes the same bytes from its own copies (transfer/download.ts derive),
//    accepted only if they hash to the layer's id; it needs none of the server's old objects for that;
//  - then the old chain's objects that nothing refers to any more are removed, top first: not in the chain of
//    any desktop's top or replicated top, nor of any image version, nor the backing of another file (the store
//    refuses those). Without this every compaction would leave its whole old chain on the server's disk. A
//    device still downloading one of them (a prefetch that started before) gets 404 and its next run fetches
//    the new chain;
//  - a failure or a crash half-way changes nothing (the store removes its temp file; the row is unchanged).
//
// It runs when the server VM next starts, before the start creates its overlay (the one moment the chain is at
// rest and about to grow), not right after a check-in: a device whose check-in answer was lost retries and must
// still find its top (see also derivedFrom in services/leases.ts #retriedCheckin). The start waits for it; a
// failure leaves the chain as it was and the start goes on.

import type { AppContext } from '../context.ts';
import { findDesktopById, listDesktops, replaceTopAtRest } from '../db/repositories/desktops.ts';
import { listImages, versionTopObjects } from '../db/repositories/images.ts';

export interface CompactionResult {
  desktopId: string;
  /** The top before and after; `to` is the desktop's base (an image version) when the layers changed nothing. */
  from: string;
  to: string;
  /** Layers above the image version before (after: one, or none). */
  layers: number;
  /** Objects of the old chain removed because nothing refers to them any more. */
  removed: string[];
}

type Ctx = Pick<AppContext, 'db' | 'store' | 'transfer' | 'config' | 'audit' | 'nowIso' | 'logger'>;

export class ChainCompactor {
  constructor(private readonly ctx: Ctx) {}

  /**
   * Compact the desktop's chain if it is longer than the policy and no overlay rests on it. Null when there was
   * nothing to do, the desktop moved meanwhile, or it failed: a failure is logged (and recorded in the event log),
   * and the chain just stays longer until the next start. Never throws: the start goes on either way.
   */
  async compact(desktopId: string): Promise<CompactionResult | null> {
    try {
      return await this.#compact(desktopId);
    } catch (err) {
      this.ctx.logger.error({ err, desktopId }, 'chain compaction failed; the chain stays as it was');
      return null;
    }
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
      // The row moved meanwhile (its lease, generation or top): the new layer stays in the store, unused.
      if (!moved) return null;
      // The compaction stands whatever happens to the clean-up: a failure there only leaves objects behind.
      const removed = await this.#removeUnreferenced(chain.slice(base + 1).reverse()).catch((err: unknown) => {
        this.ctx.logger.error({ err, desktopId }, 'could not remove the old chain after compaction; its objects stay');
        return [];
      });
      return { desktopId, from, to, layers, removed };
    }, (r) => ({ detail: { from, layers, to: r?.to ?? null, removed: r?.removed.length ?? 0 } }));
  }

  /**
   * Removes those of `candidates` (top first) that no desktop's chain (top or replicated top) and no image
   * version's chain contains; the ids removed. (Candidates lie above an image version, so no version chain can
   * hold one today; the check is there so that deleting stays safe if that ever changes.)
   */
  async #removeUnreferenced(candidates: readonly string[]): Promise<string[]> {
    const tops = new Set<string>();
    for (const d of await listDesktops(this.ctx.db)) {
      tops.add(d.top_object_id);
      if (d.replicated_top_object_id !== null) tops.add(d.replicated_top_object_id);
    }
    for (const image of await listImages(this.ctx.db)) {
      for (const v of await versionTopObjects(this.ctx.db, image.id)) tops.add(v);
    }
    const referenced = new Set<string>();
    for (const top of tops) {
      // A chain that cannot be read throws: nothing is deleted on a guess.
      for (const o of await this.ctx.transfer.chain(top)) referenced.add(o.id);
    }
    const removed: string[] = [];
    for (const id of candidates) {
      if (referenced.has(id)) continue;
      try {
        await this.ctx.store.remove(id);
        removed.push(id);
      } catch (err) {
        // Another file is built on it (an upload that was never committed, a lost race's layer): it stays.
        this.ctx.logger.info({ err, id }, 'an old chain object stays in the store');
      }
    }
    return removed;
  }
}
