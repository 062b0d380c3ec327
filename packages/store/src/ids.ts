/** Object ids and the file names built from them. Only names produced here are ever joined to a directory. */
import { randomBytes } from 'node:crypto';

import { InvalidObjectIdError } from './errors.ts';

/** SHA-256 of the object's bytes, 64 lowercase hex digits. */
export type ObjectId = string;

const OBJECT_ID_RE = /^[0-9a-f]{64}$/;
const OBJECT_FILE_RE = /^([0-9a-f]{64})\.qcow2$/;
const SIDECAR_FILE_RE = /^([0-9a-f]{64})\.json$/;
const LABEL_RE = /^[a-z0-9][a-z0-9-]{0,31}$/;
/** overlay-[<label>-]<16 hex>.qcow2 */
const OVERLAY_FILE_RE = /^overlay-(?:[a-z0-9][a-z0-9-]{0,31}-)?[0-9a-f]{16}\.qcow2$/;
export const TEMP_PREFIX = '.tmp-';

export function isObjectId(value: unknown): value is ObjectId {
  return typeof value === 'string' && OBJECT_ID_RE.test(value);
}

export function assertObjectId(value: unknown): asserts value is ObjectId {
  if (!isObjectId(value)) throw new InvalidObjectIdError(value);
}

/** `<id>.qcow2`: an object's file name, and the backing name its children record (relative, qcow2 spec). */
export function objectFileName(id: ObjectId): string {
  assertObjectId(id);
  return `${id}.qcow2`;
}

export function sidecarFileName(id: ObjectId): string {
  assertObjectId(id);
  return `${id}.json`;
}

/** The id in an object file name, or null. */
export function idFromObjectFileName(name: string): ObjectId | null {
  return OBJECT_FILE_RE.exec(name)?.[1] ?? null;
}

export function idFromSidecarFileName(name: string): ObjectId | null {
  return SIDECAR_FILE_RE.exec(name)?.[1] ?? null;
}

export function isOverlayFileName(name: string): boolean {
  return OVERLAY_FILE_RE.test(name);
}

/** A fresh overlay file name. Labels are advisory (for humans listing the directory), so they are restricted. */
export function newOverlayFileName(label?: string): string {
  const rand = randomBytes(8).toString('hex');
  if (label === undefined || label === '') return `overlay-${rand}.qcow2`;
  if (!LABEL_RE.test(label)) throw new RangeError(`overlay label must match ${String(LABEL_RE)}, got ${JSON.stringify(label.slice(0, 40))}`);
  return `overlay-${label}-${rand}.qcow2`;
}

export function newTempFileName(): string {
  return `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`;
}

export function isTempFileName(name: string): boolean {
  return name.startsWith(TEMP_PREFIX);
}
