/**
 * Adopting a file that was received elsewhere (the transfer engine assembles objects piece by piece in
 * `<root>/incoming/`). Same guarantees as import.ts, without a second copy of the bytes:
 *  1. the file must lie under incoming/ (same filesystem as objects/, so publishing is link(2), not a copy);
 *  2. the qcow2 header is checked in TypeScript before any QEMU tool opens the file (image or layer policy);
 *  3. the bytes must hash to the expected id — re-hashed here unless the caller already hashed exactly these
 *     bytes (the transfer engine re-reads the file it wrote while the pieces arrive);
 *  4. `qemu-img check` under resource limits unless the bytes are identical to an object the sender's store
 *     already checked (a download from our own server: the id proves it);
 *  5. fsync, publish (no-clobber), fsync dir. The received file is consumed on success and left alone on failure
 *     (the caller decides whether to retry or discard).
 */
import { open } from 'node:fs/promises';
import { resolve, sep } from 'node:path';

import { checkImageHeader, checkUntrustedLayer } from '@roamdesk/qcow2';
import type { QemuImg } from '@roamdesk/qemu';

import { discard } from './durable.ts';
import { HashMismatchError, ImportFailedError, ParentMissingError, UnsupportedSourceError } from './errors.ts';
import { copyAndHash } from './hash-copy.ts';
import { detectFormat, parseHeader, readLeadingBytes } from './header-io.ts';
import { assertObjectId, objectFileName, type ObjectId } from './ids.ts';
import type { Layout } from './layout.ts';
import { publishObject } from './publish.ts';
import type { ObjectInfo, ObjectKind } from './sidecar.ts';

export interface AdoptExpectation {
  readonly id: ObjectId;
  readonly kind: ObjectKind;
  /** Required for a layer, null for an image. */
  readonly parent: ObjectId | null;
}

export interface AdoptOptions {
  /** The caller hashed exactly these bytes (SHA-256) and they matched `id`: skip re-hashing. */
  readonly hashVerified?: boolean;
  /** Skip `qemu-img check`: the bytes equal an object another Roamdesk store already checked. */
  readonly checkedBySource?: boolean;
}

interface Ctx {
  readonly layout: Layout;
  readonly img: QemuImg;
}

export async function adopt(ctx: Ctx, path: string, expected: AdoptExpectation, opts: AdoptOptions = {}): Promise<ObjectInfo> {
  assertObjectId(expected.id);
  if (!resolve(path).startsWith(ctx.layout.incomingDir + sep)) {
    throw new UnsupportedSourceError(`${path} is not in the store's incoming directory`, { path });
  }
  const existing = await ctx.layout.info(expected.id);
  if (existing !== null) {
    await discard(path);
    return existing;
  }
  let parentName: string | null = null;
  let parentVirtualSize: bigint | null = null;
  if (expected.kind === 'layer') {
    if (expected.parent === null) throw new UnsupportedSourceError('a layer needs a parent', { id: expected.id });
    const parent = await ctx.layout.info(expected.parent);
    if (parent === null) throw new ParentMissingError(expected.parent, expected.id);
    parentName = objectFileName(expected.parent);
    parentVirtualSize = BigInt(parent.virtualSize);
  }

  const fh = await open(path, 'r');
  let virtualSize: number;
  let size: number;
  try {
    const lead = await readLeadingBytes(fh);
    if (detectFormat(lead) !== 'qcow2') throw new UnsupportedSourceError(`${path} is not qcow2`, { path });
    const header = parseHeader(lead);
    if (parentName === null) checkImageHeader(header);
    else checkUntrustedLayer(header, parentName, { expectedVirtualSize: parentVirtualSize ?? 0n });
    virtualSize = Number(header.virtualSize);
    size = lead.fileSize;
    if (opts.hashVerified !== true) {
      const { sha256 } = await copyAndHash(fh, null);
      if (sha256 !== expected.id) throw new HashMismatchError(expected.id, sha256);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  if (opts.checkedBySource !== true) {
    const r = await ctx.img.check(path, { noBacking: true, untrusted: true });
    if (r.status !== 'ok') {
      throw new ImportFailedError(`qemu-img check reports the received object ${r.status} (exit ${r.exitCode})`, { status: r.status, report: r.report });
    }
  }
  const r = await publishObject(ctx.layout, path, { id: expected.id, kind: expected.kind, parent: expected.parent, size, virtualSize });
  if (!r.created) await discard(path);
  return r.info;
}
