/**
 * Manifests: an object (image or layer: an immutable file named by its SHA-256) cut into fixed ranges
 * ("pieces"), each with a BLAKE3 hash, so pieces can be verified one by one, resumed and fetched many at a
 * time. Pieces are file ranges, not guest clusters: an object never changes, so its file offsets are stable;
 * differences between image versions are carried by layers, never by diffing files (notes/performance.md).
 * A manifest from a peer is untrusted: parseManifest checks every field and the arithmetic between them.
 */
import { TransferError } from './errors.ts';

export const MANIFEST_VERSION = 1;
export const MIN_PIECE_SIZE = 64 * 1024;
export const MAX_PIECE_SIZE = 16 * 1024 * 1024;
/** 4 MiB: big enough that per-piece overhead vanishes, small enough that an interruption loses little. */
export const DEFAULT_PIECE_SIZE = 4 * 1024 * 1024;
/** 1 PiB: far above any disk, far below Number.MAX_SAFE_INTEGER. */
export const MAX_OBJECT_SIZE = 2 ** 50;

export type ObjectKind = 'image' | 'layer';

export interface Manifest {
  readonly version: 1;
  /** SHA-256 of the whole file (the store's object id). */
  readonly id: string;
  readonly kind: ObjectKind;
  readonly parent: string | null;
  /** File size in bytes. */
  readonly size: number;
  readonly virtualSize: number;
  readonly pieceSize: number;
  readonly hash: 'blake3';
  /** BLAKE3 of each piece, hex; pieces.length === pieceCount(size, pieceSize). */
  readonly pieces: readonly string[];
}

const HEX64 = /^[0-9a-f]{64}$/;

export function pieceCount(size: number, pieceSize: number): number {
  return Math.ceil(size / pieceSize);
}

export interface PieceRange {
  readonly index: number;
  readonly offset: number;
  readonly length: number;
}

export function pieceRange(m: Pick<Manifest, 'size' | 'pieceSize'>, index: number): PieceRange {
  const offset = index * m.pieceSize;
  return { index, offset, length: Math.min(m.pieceSize, m.size - offset) };
}

export function isValidPieceSize(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= MIN_PIECE_SIZE && n <= MAX_PIECE_SIZE && (n & (n - 1)) === 0;
}

function bad(message: string, data: Record<string, unknown> = {}): TransferError {
  return new TransferError('XFER_ERR_MANIFEST', `invalid manifest: ${message}`, data);
}

function safeSize(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > MAX_OBJECT_SIZE) throw bad(`${what} must be an integer in 0…2^50`);
  return v;
}

/** Validates an untrusted manifest. `expect` pins fields the caller already knows (id, kind, parent, size). */
export function parseManifest(value: unknown, expect: Partial<Pick<Manifest, 'id' | 'kind' | 'parent' | 'size'>> = {}): Manifest {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('not an object');
  const o = value as Record<string, unknown>;
  if (o['version'] !== MANIFEST_VERSION) throw bad(`version must be ${MANIFEST_VERSION}`);
  const { id, kind, parent, pieces, hash } = o;
  if (typeof id !== 'string' || !HEX64.test(id)) throw bad('id must be 64 lowercase hex digits');
  if (kind !== 'image' && kind !== 'layer') throw bad('kind must be "image" or "layer"');
  if (!(parent === null || (typeof parent === 'string' && HEX64.test(parent)))) throw bad('parent must be null or an object id');
  if ((kind === 'image') !== (parent === null)) throw bad('an image has no parent and a layer has one');
  if (hash !== 'blake3') throw bad('hash must be "blake3"');
  const size = safeSize(o['size'], 'size');
  if (size === 0) throw bad('size must not be 0');
  const virtualSize = safeSize(o['virtualSize'], 'virtualSize');
  const pieceSize = o['pieceSize'];
  if (!isValidPieceSize(pieceSize)) throw bad(`pieceSize must be a power of two in ${MIN_PIECE_SIZE}…${MAX_PIECE_SIZE}`);
  if (!Array.isArray(pieces)) throw bad('pieces must be an array');
  const n = pieceCount(size, pieceSize);
  if (pieces.length !== n) throw bad(`${pieces.length} piece hashes for ${n} pieces of ${pieceSize} bytes in ${size} bytes`, { size, pieceSize, pieces: pieces.length });
  for (const p of pieces) if (typeof p !== 'string' || !HEX64.test(p)) throw bad('every piece hash must be 64 lowercase hex digits');
  const m: Manifest = { version: 1, id, kind, parent, size, virtualSize, pieceSize, hash: 'blake3', pieces: pieces as string[] };
  for (const key of ['id', 'kind', 'parent', 'size'] as const) {
    if (expect[key] !== undefined && expect[key] !== m[key]) {
      throw bad(`${key} is ${JSON.stringify(m[key])}, expected ${JSON.stringify(expect[key])}`, { field: key });
    }
  }
  return m;
}
