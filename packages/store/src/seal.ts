/**
 * Offline sealing: the VM is stopped; the overlay's bytes become a layer under their hash, without being
 * rewritten or copied (link, then unlink the overlay name). Crash safety:
 *  - before the link: the overlay is untouched (only fsynced, maybe leak-repaired); sealing again is safe;
 *  - after the link, before the unlink: the overlay name and `<id>.qcow2` are two names of one 0444 inode.
 *    Sealing again finds the id already published and just drops the overlay name.
 */
import { open } from 'node:fs/promises';

import { checkUntrustedLayer } from '@roamdesk/qcow2';
import { QemuImgLockedError, type QemuImg } from '@roamdesk/qemu';

import { discard, fsyncDir } from './durable.ts';
import { asDiskError, OverlayInUseError, ParentMissingError, SealFailedError } from './errors.ts';
import { sealHash, type Sha256Offload } from './hash-copy.ts';
import { readHeader } from './header-io.ts';
import { objectFileName } from './ids.ts';
import type { Layout, Overlay } from './layout.ts';
import { publishObject } from './publish.ts';
import type { ObjectInfo } from './sidecar.ts';

interface Ctx {
  readonly layout: Layout;
  readonly img: QemuImg;
}

/** `qemu-img check`, with a lock conflict (a VM has the overlay open) reported as OverlayInUseError. */
async function firstCheck(ctx: Ctx, path: string): Promise<Awaited<ReturnType<QemuImg['check']>>> {
  try {
    return await ctx.img.check(path, { noBacking: true });
  } catch (e) {
    if (e instanceof QemuImgLockedError) {
      throw new OverlayInUseError(`overlay ${path} is in use (a VM has it open); stop the VM or use sealLive`, { path }, { cause: e });
    }
    throw new SealFailedError(`cannot check overlay ${path}: ${(e as Error).message}`, { step: 'precondition', path }, { cause: e });
  }
}

export interface SealOptions {
  /**
   * Sees the layer's bytes in order while the seal hashes them (a view, valid during the call): a device
   * builds its upload manifest in the same read pass instead of reading the layer again.
   */
  readonly onData?: (data: Buffer) => void;
  /** Computes the layer's SHA-256 off this thread, in parallel with the pass for onData (hash-copy.ts sealHash). */
  readonly sha256Offload?: Sha256Offload;
}

export async function seal(ctx: Ctx, overlay: Overlay, opts: SealOptions = {}): Promise<ObjectInfo> {
  const path = ctx.layout.overlayPath(overlay);
  if (!(await ctx.layout.exists(ctx.layout.objectPath(overlay.parent)))) throw new ParentMissingError(overlay.parent, path);

  // Consistency first: `qemu-img check` takes QEMU's image lock, which a running VM holds (notes/guest.md §7),
  // so it is also the in-use test.
  let check = await firstCheck(ctx, path);

  // Cheap sanity check of our own overlay: v3, backing exactly "<parent>.qcow2" with format qcow2, clean bits.
  const header = await readHeader(path);
  checkUntrustedLayer(header, objectFileName(overlay.parent));

  // Leaked clusters (exit 3) happen after a QEMU crash; they are harmless and repaired here, before the bytes are
  // frozen, so the layer passes `qemu-img check` everywhere it goes (reliability.md §3c).
  if (check.status === 'leaks') {
    await ctx.img.check(path, { noBacking: true, repair: 'leaks' });
    check = await ctx.img.check(path, { noBacking: true });
  }
  if (check.status !== 'ok') {
    throw new SealFailedError(`qemu-img check reports the overlay ${check.status}`, { step: 'check', path, report: check.report });
  }

  const r = await (async () => {
    const fh = await open(path, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    const { sha256, bytes } = await sealHash(path, { onData: opts.onData, offload: opts.sha256Offload });
    return publishObject(ctx.layout, path, {
      id: sha256, kind: 'layer', parent: overlay.parent, size: bytes, virtualSize: Number(header.virtualSize),
    });
  })().catch((e: unknown) => {
    throw asDiskError(e, `seal of ${path}`);
  });
  if (!r.created) {
    // An identical layer exists: the overlay's bytes are redundant.
    await discard(path);
    await fsyncDir(ctx.layout.objectsDir);
  }
  return r.info;
}
