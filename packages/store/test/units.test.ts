import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { publishNoClobber, writeFileDurable } from '../src/durable.ts';
import { InvalidObjectIdError, InvalidOverlayError } from '../src/errors.ts';
import { copyAndHash, hashFile } from '../src/hash-copy.ts';
import { isObjectId, newOverlayFileName, isOverlayFileName } from '../src/ids.ts';
import { Layout } from '../src/layout.ts';
import { ProgressMeter, type Progress } from '../src/progress.ts';
import { decodeSidecar, encodeSidecar } from '../src/sidecar.ts';
import { tempDir } from './helpers.ts';

const ID = 'a'.repeat(64);

describe('ids and layout', () => {
  it('accepts only 64 lowercase hex ids and never builds a path from anything else', () => {
    assert.ok(isObjectId(ID));
    const layout = new Layout('/srv/store');
    assert.equal(layout.objectPath(ID), `/srv/store/objects/${ID}.qcow2`);
    for (const bad of ['', 'A'.repeat(64), 'a'.repeat(63), 'a'.repeat(65), `../${'a'.repeat(61)}`, `${'a'.repeat(63)}/`,
      '%2e%2e%2f', `${'a'.repeat(64)}\0`, '..', '/etc/passwd', 'a'.repeat(10_000_000)]) {
      assert.equal(isObjectId(bad), false);
      assert.throws(() => layout.objectPath(bad), InvalidObjectIdError);
    }
    assert.throws(() => layout.objectPath(42 as unknown as string), InvalidObjectIdError);
  });

  it('overlay names and paths', () => {
    const layout = new Layout('/srv/store');
    const name = newOverlayFileName('desk-1');
    assert.match(name, /^overlay-desk-1-[0-9a-f]{16}\.qcow2$/);
    assert.ok(isOverlayFileName(newOverlayFileName()));
    assert.throws(() => newOverlayFileName('../x'), RangeError);
    assert.equal(layout.overlayPath({ path: `/srv/store/objects/${name}`, parent: ID }), `/srv/store/objects/${name}`);
    for (const path of [`/srv/other/objects/${name}`, `/srv/store/objects/${ID}.qcow2`, `/srv/store/objects/../objects/x/${name}`, '/etc/passwd']) {
      assert.throws(() => layout.overlayPath({ path, parent: ID }), InvalidOverlayError, path);
    }
    assert.throws(() => layout.overlayPath({ path: `/srv/store/objects/${name}`, parent: 'nope' }), InvalidObjectIdError);
  });

  it('sidecar round trip and rejection of foreign content', () => {
    const info = { id: ID, kind: 'layer' as const, parent: 'b'.repeat(64), size: 10, virtualSize: 1 << 20, createdAt: '2026-01-01T00:00:00.000Z' };
    assert.deepEqual(decodeSidecar(encodeSidecar(info), ID), info);
    assert.equal(decodeSidecar(encodeSidecar(info), 'c'.repeat(64)), null);
    assert.equal(decodeSidecar('{', ID), null);
    assert.equal(decodeSidecar(encodeSidecar({ ...info, kind: 'image' }), ID), null, 'an image has no parent');
    assert.equal(decodeSidecar(JSON.stringify({ ...info, parent: '../x' }), ID), null);
    const derived = { ...info, derivedFrom: 'c'.repeat(64) };
    assert.deepEqual(decodeSidecar(encodeSidecar(derived), ID), derived);
    assert.equal(decodeSidecar(JSON.stringify({ ...derived, derivedFrom: '../x' }), ID), null);
    assert.equal(decodeSidecar(JSON.stringify({ ...derived, kind: 'image', parent: null }), ID), null, 'only a layer is derived');
  });
});

describe('durable writes and hashing', () => {
  let dir = '';
  before(async () => { dir = await tempDir('store-units-'); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  it('writeFileDurable leaves no temp file and sets the mode', async () => {
    await writeFileDurable(dir, 'x.json', '{"a":1}');
    assert.equal(await readFile(join(dir, 'x.json'), 'utf8'), '{"a":1}');
    assert.equal((await stat(join(dir, 'x.json'))).mode & 0o777, 0o444);
    await writeFileDurable(dir, 'x.json', '{"a":2}');
    assert.equal(await readFile(join(dir, 'x.json'), 'utf8'), '{"a":2}');
    assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('.tmp-')), []);
  });

  it('publishNoClobber never replaces an existing name', async () => {
    await writeFile(join(dir, 'a'), 'first');
    await writeFile(join(dir, 'b'), 'second');
    assert.equal(await publishNoClobber(join(dir, 'b'), join(dir, 'a')), 'exists');
    assert.equal(await readFile(join(dir, 'a'), 'utf8'), 'first');
    assert.equal(await publishNoClobber(join(dir, 'b'), join(dir, 'c')), 'published');
    assert.equal(await readFile(join(dir, 'c'), 'utf8'), 'second');
    await assert.rejects(stat(join(dir, 'b')));
  });

  it('copyAndHash copies exactly and hashes what it wrote, at every size around the 1 MiB chunk', async () => {
    const MiB = 1024 * 1024;
    for (const size of [0, 1, MiB - 1, MiB, MiB + 1, 4 * MiB, 9 * MiB + 12345]) {
      const data = Buffer.alloc(size);
      for (let i = 0; i < size; i += 4096) data[i] = (i / 4096) & 0xff;
      const src = join(dir, `src-${size}`);
      const dst = join(dir, `dst-${size}`);
      await writeFile(src, data);
      const s = await open(src, 'r');
      const d = await open(dst, 'w');
      const seen: Progress[] = [];
      try {
        const r = await copyAndHash(s, d, { onProgress: (p) => seen.push(p) });
        assert.equal(r.bytes, size);
        assert.equal(r.sha256, createHash('sha256').update(data).digest('hex'));
      } finally {
        await s.close();
        await d.close();
      }
      assert.ok((await readFile(dst)).equals(data), `copy of ${size} bytes`);
      assert.equal(seen.at(-1)?.bytesDone, size);
      assert.equal((await hashFile(src)).sha256, createHash('sha256').update(data).digest('hex'));
    }
  });

  it('copyAndHash stops on abort', async () => {
    const src = join(dir, 'abort-src');
    await writeFile(src, Buffer.alloc(3 * 1024 * 1024));
    await assert.rejects(hashFile(src, { signal: AbortSignal.abort() }), (e: unknown) => (e as { code?: string }).code === 'STORE_ERR_ABORTED');
  });

  it('ProgressMeter computes rate and ETA and throttles', () => {
    let t = 0;
    const calls: Progress[] = [];
    const m = new ProgressMeter(1000, (p) => calls.push(p), () => t);
    t = 1000;
    const p = m.update(250);
    assert.equal(p.rateBytesPerSec, 250);
    assert.equal(p.etaSeconds, 3);
    t = 1050;
    m.update(300);
    assert.equal(calls.length, 1, 'throttled to one call per 100 ms');
    m.update(1000, true);
    assert.equal(calls.length, 2);
    assert.equal(calls[1]!.etaSeconds, 0);
    assert.equal(new ProgressMeter(10, undefined, () => 0).update(0).etaSeconds, null);
  });
});
