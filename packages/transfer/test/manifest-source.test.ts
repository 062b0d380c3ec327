// Manifests made from a file (computeManifest), from bytes streaming by (ManifestBuilder), and the cache.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import { pieceHash } from '../src/hash.ts';
import { computeManifest, ManifestBuilder, ManifestCache } from '../src/manifest-source.ts';

describe('ManifestBuilder', () => {
  it('builds the manifest computeManifest reads from the file, however the bytes are split; a cache hands it out', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'roamdesk-manifest-'));
    try {
      const pieceSize = 64 * 1024;
      await fc.assert(fc.asyncProperty(
        fc.integer({ min: 1, max: 5 * pieceSize + 3 }), fc.array(fc.integer({ min: 1, max: 3 * pieceSize }), { minLength: 1, maxLength: 8 }),
        async (size, cuts) => {
          const bytes = randomBytes(size);
          const path = join(dir, 'object');
          await writeFile(path, bytes);
          const meta = { id: 'a'.repeat(64), kind: 'layer' as const, parent: 'b'.repeat(64), virtualSize: 1 << 30 };
          const builder = new ManifestBuilder(pieceSize);
          for (let pos = 0, k = 0; pos < size; k++) {
            const n = Math.min(cuts[k % cuts.length]!, size - pos);
            builder.update(bytes.subarray(pos, pos + n));
            pos += n;
          }
          const built = builder.finish(meta);
          assert.deepEqual(built, await computeManifest(path, meta, pieceSize));
          // Both against the piece hash a receiver checks, one piece at a time.
          assert.deepEqual(built.pieces, Array.from({ length: Math.ceil(size / pieceSize) }, (_, i) => pieceHash(bytes.subarray(i * pieceSize, (i + 1) * pieceSize))));
        },
      ), { numRuns: 40 });
      const m = new ManifestBuilder(pieceSize);
      m.update(randomBytes(3 * pieceSize));
      const manifest = m.finish({ id: 'c'.repeat(64), kind: 'layer', parent: 'b'.repeat(64), virtualSize: 1 << 30 });
      const cache = new ManifestCache(null);
      await cache.put(manifest);
      // The path does not exist: a hit never reads the object.
      assert.deepEqual(await cache.get(join(dir, 'missing'), { ...manifest }, pieceSize), manifest);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
