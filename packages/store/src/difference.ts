/**
 * importDifference: a new version of an image published as ONE layer over the previous version's top object.
 * The difference is computed at the guest level, never by comparing file offsets (a qcow2 file's layout
 * shifts between versions: notes/performance.md "Base update v1 → v2"):
 *
 *  1. `qemu-img create -f qcow2 -b <target>.qcow2 -F qcow2 T` — an empty overlay T whose guest view is `target`;
 *  2. `qemu-img rebase -f qcow2 -b <parent>.qcow2 -F qcow2 T` in SAFE mode — qemu-img reads both backings and
 *     copies into T exactly the ranges whose contents differ, then makes `parent` T's backing. T's guest view is
 *     still `target`, and T holds only the difference;
 *  3. `qemu-img compare T <target>` — the chain parent…T must show the guest exactly `target` (a double check of
 *     qemu-img's own work before anything is published);
 *  4. importLayer(T, parent) — the same checks as any untrusted layer (header in TypeScript, backing name exactly
 *     `<parent>.qcow2`, qemu-img check), then published under its hash, its sidecar recording `derivedFrom:
 *     target`. Steps 1–2 are deterministic for one QEMU version (one thread walks the clusters in order; qcow2
 *     has no timestamps), so a receiver holding parent and target derives the same bytes instead of downloading
 *     them — checked by the id (`expectedId`), never assumed.
 *
 * T is a temp file (`.tmp-…`) in objects/: the relative backing names resolve against objects/ (QEMU resolves
 * a relative backing name against the directory of the image that names it), and Store.open removes T if the
 * process dies half-way. T is always removed; a failure publishes nothing.
 */
import { join } from 'node:path';

import type { QemuImg } from '@roamdesk/qemu';

import { discard, fsyncPath } from './durable.ts';
import { ImportFailedError, ObjectNotFoundError, ParentMissingError, StoreAbortedError, UnsupportedSourceError } from './errors.ts';
import { assertObjectId, newTempFileName, objectFileName, type ObjectId } from './ids.ts';
import { importLayer, type ImportOptions } from './import.ts';
import type { Layout } from './layout.ts';
import { asImportError } from './qemu-errors.ts';
import type { ObjectInfo } from './sidecar.ts';

interface Ctx {
  readonly layout: Layout;
  readonly img: QemuImg;
}

export interface DifferenceOptions {
  readonly signal?: AbortSignal;
  /**
   * The id the result must have (HashMismatchError otherwise, and nothing is published): a receiver deriving a
   * layer the other side computed (ObjectInfo.derivedFrom) instead of downloading it.
   */
  readonly expectedId?: ObjectId;
}

/**
 * Publishes, as a layer over `parent`, what the guest sees differently in the object `target` than in the chain
 * ending at `parent`. Returns null (and publishes nothing) when there is no difference. Both must be in the
 * store and have the same virtual size. `target` is only read: the caller decides whether to keep it.
 */
export async function importDifference(ctx: Ctx, parent: ObjectId, target: ObjectId, opts: DifferenceOptions = {}): Promise<ObjectInfo | null> {
  assertObjectId(parent);
  assertObjectId(target);
  const parentInfo = await ctx.layout.info(parent);
  if (parentInfo === null) throw new ParentMissingError(parent);
  const targetInfo = await ctx.layout.info(target);
  if (targetInfo === null) throw new ObjectNotFoundError(target);
  if (parentInfo.virtualSize !== targetInfo.virtualSize) {
    throw new UnsupportedSourceError(
      `object ${target} is ${targetInfo.virtualSize} bytes virtual, its new parent ${parent} ${parentInfo.virtualSize}: a layer cannot resize the disk`,
      { parent, target, parentVirtualSize: parentInfo.virtualSize, targetVirtualSize: targetInfo.virtualSize },
    );
  }
  const signal = opts.signal !== undefined ? { signal: opts.signal } : {};
  const temp = join(ctx.layout.objectsDir, newTempFileName());
  try {
    await ctx.img.create(temp, { backing: { name: objectFileName(target), format: 'qcow2' }, ...signal });
    await ctx.img.rebase(temp, { backing: { name: objectFileName(parent), format: 'qcow2' }, ...signal });
    await fsyncPath(temp);
    // Deriving a known id: its hash (checked by importLayer) proves the bytes are the object its publisher
    // checked with qemu-img compare, so the two whole-disk reads below (seconds for a few GiB) are skipped.
    if (opts.expectedId === undefined) {
      // Trusted files only (ours and the store's), so the whole chain may be opened. Depth 0 = allocated in T.
      const changed = (await ctx.img.map(temp, signal)).some((e) => e.depth === 0 && e.present);
      if (!changed) return null;
      if (!(await ctx.img.compare(temp, ctx.layout.objectPath(target), signal))) {
        throw new ImportFailedError(`the layer computed over ${parent} does not show the guest what ${target} shows`, { parent, target });
      }
    }
    if (opts.signal?.aborted === true) throw new StoreAbortedError('difference aborted', {}, { cause: opts.signal.reason });
    const layerOpts: ImportOptions = {
      ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
      ...(opts.expectedId !== undefined ? { expectedId: opts.expectedId } : {}),
    };
    return await importLayer(ctx, temp, parent, layerOpts, target);
  } catch (e) {
    throw asImportError(e, `difference of ${target} over ${parent}`);
  } finally {
    await discard(temp);
  }
}
