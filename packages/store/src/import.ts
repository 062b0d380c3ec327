/**
 * importImage / importLayer. The order is the security argument (notes/reliability.md §2.1–2.2):
 *  1. read the leading bytes of the source and check the qcow2 header in TypeScript (policy from @roamdesk/qcow2)
 *     before any QEMU tool opens anything;
 *  2. copy into a temp file in objects/ while hashing (the id is the hash of the bytes we wrote);
 *  3. check the header again ON THE COPY — the source may have changed between 1 and 2;
 *  4. `qemu-img check` on the copy, under prlimit, opened with `"backing": null` so no backing file is opened;
 *  5. fsync, publish (no-clobber), fsync dir. Any failure discards the temp file: nothing is left in the store.
 */
import { type FileHandle, open } from 'node:fs/promises';

import { checkImageHeader, checkUntrustedLayer } from '@roamdesk/qcow2';
import type { QemuImg } from '@roamdesk/qemu';

import { createTemp, discard, formatMB, freeSpace } from './durable.ts';
import { HashMismatchError, ImportFailedError, NoSpaceError, ParentMissingError, StoreAbortedError, UnsupportedSourceError } from './errors.ts';
import { copyAndHash, hashFile } from './hash-copy.ts';
import { detectFormat, parseHeader, readLeadingBytes, readLeadingBytesOf } from './header-io.ts';
import { assertObjectId, objectFileName, type ObjectId } from './ids.ts';
import type { Layout } from './layout.ts';
import type { ProgressCallback } from './progress.ts';
import { ProgressMeter } from './progress.ts';
import { publishObject } from './publish.ts';
import { asImportError } from './qemu-errors.ts';
import type { ObjectInfo } from './sidecar.ts';

export interface ImportOptions {
  readonly onProgress?: ProgressCallback;
  readonly signal?: AbortSignal;
  /** When given, the imported bytes must hash to this id (HashMismatchError otherwise). */
  readonly expectedId?: ObjectId;
}

export interface ImportImageOptions extends ImportOptions {
  /** Skip detection (detection refuses VMDK, VHDX, QED, LUKS … via detectImageFormat). */
  readonly format?: 'qcow2' | 'raw';
}

interface Ctx {
  readonly layout: Layout;
  readonly img: QemuImg;
}

async function openSource(source: string): Promise<{ fh: FileHandle; size: number }> {
  let fh: FileHandle;
  try {
    fh = await open(source, 'r');
  } catch (e) {
    throw new UnsupportedSourceError(`cannot open ${source}: ${(e as Error).message}`, { source }, { cause: e });
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw new UnsupportedSourceError(`${source} is not a regular file`, { source });
  }
  if (st.size === 0) {
    await fh.close();
    throw new UnsupportedSourceError(`${source} is empty`, { source });
  }
  return { fh, size: st.size };
}

/** qemu-img check on our temp copy: untrusted limits, backing not opened, must be clean (exit 0). */
async function checkCopy(ctx: Ctx, path: string, signal: AbortSignal | undefined): Promise<void> {
  const r = await ctx.img.check(path, { noBacking: true, untrusted: true, ...(signal !== undefined ? { signal } : {}) });
  if (r.status !== 'ok') {
    throw new ImportFailedError(`qemu-img check reports the image ${r.status} (exit ${r.exitCode})`, { status: r.status, report: r.report });
  }
}

/**
 * Steps 2–3: copy the source into a temp file in objects/ while hashing, then re-check the header ON THE COPY
 * (the source may have changed since the first check). Sets `into.path` as soon as the temp exists, so the
 * caller can discard it on any failure.
 */
async function copyChecked(
  ctx: Ctx, fh: FileHandle, size: number, check: (header: ReturnType<typeof parseHeader>) => void,
  opts: ImportOptions, into: { path: string | null },
): Promise<{ sha256: string; bytes: number; virtualSize: number }> {
  await ensureSpace(ctx.layout.objectsDir, size);
  const tmp = await createTemp(ctx.layout.objectsDir);
  into.path = tmp.path;
  try {
    const { sha256, bytes } = await copyAndHash(fh, tmp.handle, { onProgress: opts.onProgress, signal: opts.signal, expectedBytes: size });
    const header = parseHeader(await readLeadingBytes(tmp.handle));
    check(header);
    await tmp.handle.sync();
    return { sha256, bytes, virtualSize: Number(header.virtualSize) };
  } catch (e) {
    const errno = (e as { code?: unknown } | null)?.code;
    if (errno === 'ENOSPC' || errno === 'EDQUOT') {
      throw new NoSpaceError(`the store's disk filled up while copying (${errno}): ${ctx.layout.objectsDir}`, { path: ctx.layout.objectsDir, errno, hint: SPACE_HINT }, { cause: e });
    }
    throw e;
  } finally {
    await tmp.handle.close();
  }
}

const SPACE_HINT = "free space on the store's disk (or move its data directory to a larger disk), then import again";

/** Refuses a copy of `bytes` the store's file system cannot hold, before anything is written. */
async function ensureSpace(dir: string, bytes: number): Promise<void> {
  const free = await freeSpace(dir);
  if (free === null || bytes <= free) return;
  throw new NoSpaceError(`the object needs ${formatMB(bytes)} in ${dir}, which has ${formatMB(free)} free`, { path: dir, needed: bytes, free, hint: SPACE_HINT });
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new StoreAbortedError('import aborted', {}, { cause: signal.reason });
}

export async function importImage(ctx: Ctx, source: string, opts: ImportImageOptions = {}): Promise<ObjectInfo> {
  if (opts.expectedId !== undefined) assertObjectId(opts.expectedId);
  const { fh, size } = await openSource(source);
  const temp: { path: string | null } = { path: null };
  try {
    const lead = await readLeadingBytes(fh);
    const format = opts.format ?? detectFormat(lead);
    if (format === 'qcow2') {
      checkImageHeader(parseHeader(lead));
      const { sha256, bytes, virtualSize } = await copyChecked(ctx, fh, size, (h) => checkImageHeader(h), opts, temp);
      return await finish(ctx, temp.path as string, { id: sha256, kind: 'image', parent: null, size: bytes, virtualSize }, opts);
    }
    // raw: the bytes are guest data with no metadata, so qemu-img may read them; the qcow2 it writes is ours.
    await fh.close();
    const tmp = await createTemp(ctx.layout.objectsDir);
    temp.path = tmp.path;
    await tmp.handle.close();
    const meter = new ProgressMeter(size, opts.onProgress);
    await ctx.img.convert(source, tmp.path, {
      sourceFormat: 'raw',
      onProgress: (p) => meter.update(Math.round((p.percent / 100) * size * 0.9)),
      ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
    });
    const header = parseHeader(await readLeadingBytesOf(tmp.path));
    checkImageHeader(header);
    const { sha256, bytes } = await hashFile(tmp.path, { signal: opts.signal });
    meter.update(size, true);
    return await finish(ctx, tmp.path, { id: sha256, kind: 'image', parent: null, size: bytes, virtualSize: Number(header.virtualSize) }, opts);
  } catch (e) {
    if (temp.path !== null) await discard(temp.path);
    throw asImportError(e, `import of ${source}`);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Check the temp copy with qemu-img, fsync it, publish it (or drop it when the id already exists). */
async function finish(ctx: Ctx, tempPath: string, info: Omit<ObjectInfo, 'createdAt'>, opts: ImportOptions): Promise<ObjectInfo> {
  if (opts.expectedId !== undefined && opts.expectedId !== info.id) throw new HashMismatchError(opts.expectedId, info.id);
  throwIfAborted(opts.signal);
  const existing = await ctx.layout.info(info.id);
  if (existing !== null) {
    await discard(tempPath);
    return existing;
  }
  await checkCopy(ctx, tempPath, opts.signal);
  throwIfAborted(opts.signal);
  const r = await publishObject(ctx.layout, tempPath, info);
  if (!r.created) await discard(tempPath);
  return r.info;
}

/**
 * An untrusted layer (e.g. from a device at check-in) whose parent must be `expectedParent`. `derivedFrom` is
 * for importDifference only: the object whose guest view this layer reproduces (recorded in the sidecar).
 */
export async function importLayer(ctx: Ctx, source: string, expectedParent: ObjectId, opts: ImportOptions = {}, derivedFrom?: ObjectId): Promise<ObjectInfo> {
  assertObjectId(expectedParent);
  if (opts.expectedId !== undefined) assertObjectId(opts.expectedId);
  const parent = await ctx.layout.info(expectedParent);
  if (parent === null) throw new ParentMissingError(expectedParent);
  const parentName = objectFileName(expectedParent);
  // A layer has exactly its chain's virtual size: a different size would change the guest's disk.
  const policy = { expectedVirtualSize: BigInt(parent.virtualSize) };

  const { fh, size } = await openSource(source);
  const temp: { path: string | null } = { path: null };
  try {
    const lead = await readLeadingBytes(fh);
    if (detectFormat(lead) !== 'qcow2') throw new UnsupportedSourceError(`${source} is not qcow2: a layer must be a qcow2 overlay`, { source });
    // Before any QEMU tool opens it (DESIGN.md, "Data path rules").
    checkUntrustedLayer(parseHeader(lead), parentName, policy);
    const { sha256, bytes, virtualSize } = await copyChecked(ctx, fh, size, (h) => checkUntrustedLayer(h, parentName, policy), opts, temp);
    const info = { id: sha256, kind: 'layer', parent: expectedParent, size: bytes, virtualSize, ...(derivedFrom !== undefined ? { derivedFrom } : {}) } as const;
    return await finish(ctx, temp.path as string, info, opts);
  } catch (e) {
    if (temp.path !== null) await discard(temp.path);
    throw asImportError(e, `import of layer ${source}`);
  } finally {
    await fh.close().catch(() => undefined);
  }
}
