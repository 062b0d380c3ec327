/**
 * Piece hashing: BLAKE3 via @napi-rs/blake-hash (native, 2.6–4 GB/s here; notes/performance.md), fast enough
 * to verify every piece on the critical path. The object id stays SHA-256 (the store's naming); it is
 * re-computed off the main thread by ObjectHasher.
 */
import { blake3, Blake3Hasher } from '@napi-rs/blake-hash';

export function pieceHash(data: Buffer): string {
  return blake3(data).toString('hex');
}

/** The same hash fed piece bytes as they stream in. */
export function pieceHasher(): { update(data: Buffer): void; digest(): string } {
  const h = new Blake3Hasher();
  return { update: (data) => void h.update(data), digest: () => h.digest('hex') };
}
