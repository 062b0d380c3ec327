import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { isTransferError } from '../src/errors.ts';
import { ObjectHasher, objectHasherWorkers, prewarmObjectHasher } from '../src/object-hasher.ts';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('ObjectHasher (a bounded pool of workers, kept between objects)', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rd-hasher-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('hashes objects one after another, following the verified prefix, on reused workers', async () => {
    prewarmObjectHasher();
    for (let i = 0; i < 4; i++) {
      const bytes = randomBytes(3 * 1024 * 1024 + i * 4099);
      const path = join(dir, `o${i}`);
      await writeFile(path, bytes);
      const h = new ObjectHasher(path);
      h.advance(1024 * 1024);
      h.advance(512); // behind the prefix already sent: ignored
      h.advance(2 * 1024 * 1024);
      assert.equal(await h.digest(bytes.length), sha256(bytes), `object ${i}`);
    }
  });

  it('a failed object (file shorter than its size) rejects, and the next object still hashes', async () => {
    const short = join(dir, 'short');
    await writeFile(short, Buffer.alloc(1000));
    const h = new ObjectHasher(short);
    await assert.rejects(h.digest(5000), (e: unknown) => isTransferError(e, 'XFER_ERR_OBJECT_HASH') && /file ended at 1000/.test(e.message));
    const missing = new ObjectHasher(join(dir, 'does-not-exist'));
    await assert.rejects(missing.digest(10), (e: unknown) => isTransferError(e, 'XFER_ERR_OBJECT_HASH'));
    const ok = Buffer.from('after the failures');
    await writeFile(join(dir, 'ok'), ok);
    assert.equal(await new ObjectHasher(join(dir, 'ok')).digest(ok.length), sha256(ok));
  });

  it('a cancelled object is dropped; the worker goes on with the next', async () => {
    const bytes = randomBytes(8 * 1024 * 1024);
    await writeFile(join(dir, 'big'), bytes);
    const h = new ObjectHasher(join(dir, 'big'));
    h.advance(bytes.length);
    await h.cancel();
    await assert.rejects(h.digest(bytes.length), (e: unknown) => isTransferError(e, 'XFER_ERR_OBJECT_HASH'));
    assert.equal(await new ObjectHasher(join(dir, 'big')).digest(bytes.length), sha256(bytes));
  });

  it('twenty objects at once share a few workers (never more than the cores), each digest its own', async () => {
    const objects = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      const bytes = randomBytes(1024 * 1024 + i * 4099);
      const path = join(dir, `many-${i}`);
      await writeFile(path, bytes);
      return { bytes, h: new ObjectHasher(path) };
    }));
    const limit = Math.max(1, Math.min(4, availableParallelism()));
    assert.ok(objectHasherWorkers() <= limit, `${objectHasherWorkers()} workers for 20 objects (at most ${limit})`);
    // Interleaved: every object advances in two steps, in another order than it finishes.
    for (const o of objects) o.h.advance(512 * 1024);
    const digests = await Promise.all(objects.reverse().map((o) => o.h.digest(o.bytes.length)));
    assert.deepEqual(digests, objects.map((o) => sha256(o.bytes)));
    assert.ok(objectHasherWorkers() <= 2, 'idle workers beyond two end');
  });

  it('an idle worker does not keep a process alive', async () => {
    const script = join(dir, 'exits.mts');
    const file = join(dir, 'o0');
    await writeFile(script, [
      `import { ObjectHasher, prewarmObjectHasher } from ${JSON.stringify(join(import.meta.dirname, '..', 'src', 'object-hasher.ts'))};`,
      `const h = new ObjectHasher(${JSON.stringify(file)});`,
      `const { size } = await import('node:fs').then((fs) => fs.statSync(${JSON.stringify(file)}));`,
      'console.log(await h.digest(size));',
      'prewarmObjectHasher();',
    ].join('\n'));
    // The process must end on its own with its workers idle; the timeout only bounds a failure.
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script], { timeout: 60_000 });
    assert.match(stdout, /^[0-9a-f]{64}\n$/);
  });
});
