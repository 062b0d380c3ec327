/**
 * The JSON sidecar `<root>/meta/<id>.json`: metadata that is cheap to list. It is written durably BEFORE the
 * object is published, so every published object has one (objects copied in by hand may not; get() then derives
 * the same fields from the header). The qcow2 header stays the source of truth for the parent: chain() and
 * verify() compare the two.
 */
import { isObjectId, type ObjectId } from './ids.ts';

export type ObjectKind = 'image' | 'layer';

export interface ObjectInfo {
  id: ObjectId;
  kind: ObjectKind;
  parent: ObjectId | null;
  /** File size in bytes. */
  size: number;
  /** Guest-visible disk size in bytes (qcow2 header "size"). */
  virtualSize: number;
  createdAt: string;
  /**
   * Set on a layer computed by importDifference(parent, target): the guest view of parent + this layer is exactly
   * `target`'s. Anyone holding `parent` and `target` can compute the same bytes again (qemu-img rebase is
   * deterministic for one QEMU version), so a receiver may derive the layer instead of downloading it; the id
   * still decides whether what it derived is this object.
   */
  derivedFrom?: ObjectId;
}

export function encodeSidecar(info: ObjectInfo): string {
  const { id, kind, parent, size, virtualSize, createdAt, derivedFrom } = info;
  return `${JSON.stringify({ version: 1, id, kind, parent, size, virtualSize, createdAt, ...(derivedFrom !== undefined ? { derivedFrom } : {}) }, null, 2)}\n`;
}

/** Parses a sidecar; null when it is not one of ours (treated as missing, and reported by verify()). */
export function decodeSidecar(text: string, expectedId: ObjectId): ObjectInfo | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  const { id, kind, parent, size, virtualSize, createdAt, derivedFrom } = o;
  if (id !== expectedId || (kind !== 'image' && kind !== 'layer')) return null;
  if (!(parent === null || isObjectId(parent)) || (kind === 'image') !== (parent === null)) return null;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return null;
  if (typeof virtualSize !== 'number' || !Number.isSafeInteger(virtualSize) || virtualSize < 0) return null;
  if (typeof createdAt !== 'string') return null;
  if (derivedFrom !== undefined && (kind !== 'layer' || !isObjectId(derivedFrom))) return null;
  return { id, kind, parent, size, virtualSize, createdAt, ...(derivedFrom !== undefined ? { derivedFrom } : {}) };
}
