/**
 * exportChain: one standalone qcow2 holding the guest view of a chain (`qemu-img convert -f qcow2 -O qcow2`,
 * which reads through the backing files named in the headers — relative names, resolved in objects/).
 * Errors: qemu-img failures propagate as QemuImgError (QEMU_ERR_IMG_*); the temp file is removed first.
 * Durable: written to a temp file next to `dest`, fsynced, renamed over `dest`, directory fsynced.
 */
import { rename } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

import type { QemuImg } from '@roamdesk/qemu';

import { discard, fsyncDir, fsyncPath } from './durable.ts';
import { ObjectNotFoundError } from './errors.ts';
import { readHeader } from './header-io.ts';
import { newTempFileName, type ObjectId } from './ids.ts';
import type { Layout, Overlay } from './layout.ts';
import { ProgressMeter, type ProgressCallback } from './progress.ts';

interface Ctx {
  readonly layout: Layout;
  readonly img: QemuImg;
}

export interface ExportOptions {
  readonly onProgress?: ProgressCallback;
  readonly signal?: AbortSignal;
}

export async function exportChain(ctx: Ctx, top: ObjectId | Overlay, dest: string, opts: ExportOptions = {}): Promise<void> {
  let source: string;
  let live = false;
  if (typeof top === 'string') {
    source = ctx.layout.objectPath(top); // validates the id
    if (!(await ctx.layout.exists(source))) throw new ObjectNotFoundError(top);
  } else {
    source = ctx.layout.overlayPath(top);
    // The overlay may belong to a running VM: read with force-share (-U). The result is the guest view at
    // some instant per cluster, as consistent as a crash; stop or freeze the guest for an exact copy.
    live = true;
  }
  const total = Number((await readHeader(source)).virtualSize);
  const meter = new ProgressMeter(total, opts.onProgress);
  const target = resolve(dest);
  const dir = dirname(target);
  const tmp = join(dir, newTempFileName());
  try {
    await ctx.img.convert(source, tmp, {
      sourceFormat: 'qcow2',
      forceShare: live,
      onProgress: (p) => meter.update(Math.round((p.percent / 100) * total)),
      ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
    });
    await fsyncPath(tmp);
    await rename(tmp, target);
  } catch (e) {
    // qemu-img failures propagate as the wrapper's typed QemuImgError (QEMU_ERR_IMG_*).
    await discard(tmp);
    throw e;
  }
  await fsyncDir(dir);
  meter.update(total, true);
}
