// partialProgress: counts what an interrupted download verified, from the journal alone, and changes nothing.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { pieceHash } from '../src/hash.ts';
import { type Manifest, parseManifest } from '../src/manifest.ts';
import { PartialObject } from '../src/partial-object.ts';
import { downloadDir, partialProgress } from '../src/partial-progress.ts';

const PIECE = 65536;

describe('partialProgress', () => {
  let root = '';
  const store = { get incomingDir() { return join(root, 'incoming'); } };
  const data = randomBytes(PIECE * 4 + 100);
  const piece = (i: number) => data.subarray(i * PIECE, Math.min(data.length, (i + 1) * PIECE));
  const id = 'a'.repeat(64);
  const manifest: Manifest = parseManifest({
    version: 1, id, kind: 'image', parent: null, size: data.length, virtualSize: data.length, pieceSize: PIECE, hash: 'blake3',
    pieces: Array.from({ length: 5 }, (_, i) => pieceHash(piece(i))),
  });

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'roamdesk-partial-progress-'));
    await mkdir(store.incomingDir);
  });
  after(async () => { await rm(root, { recursive: true, force: true }); });

  it('is null when nothing was started, and for an id that is not an object id', async () => {
    assert.equal(await partialProgress(store, id), null);
    assert.equal(downloadDir(store, '../x'), null);
    assert.equal(await partialProgress(store, '../../etc'), null);
    assert.equal(downloadDir(store, id), join(store.incomingDir, `dl-${id}`));
  });

  it('counts distinct journal entries and the exact bytes, without writing anything', async () => {
    const dir = downloadDir(store, id)!;
    const p = await PartialObject.open(dir, manifest);
    for (const i of [0, 4, 2]) await p.accept(i, Buffer.from(piece(i)));
    await p.close();
    // A duplicate and a torn entry, as a crash may leave them.
    const dup = Buffer.alloc(4);
    dup.writeUInt32LE(4);
    await appendFile(join(dir, 'journal'), Buffer.concat([dup, Buffer.from([1, 0])]));
    const before = await snapshot(dir);
    const r = await partialProgress(store, id);
    assert.deepEqual(r, { id, size: data.length, pieceSize: PIECE, piecesTotal: 5, piecesVerified: 3, bytesVerified: 2 * PIECE + 100 });
    assert.deepEqual(await snapshot(dir), before, 'nothing in the directory changed');
  });

  it('counts nothing for a data file of the wrong size or a manifest about another object', async () => {
    const other = 'b'.repeat(64);
    const dir = downloadDir(store, other)!;
    await mkdir(dir);
    await writeFile(join(dir, 'manifest.json'), JSON.stringify({ ...manifest, id: other }));
    await writeFile(join(dir, 'object.qcow2'), Buffer.alloc(10));
    await writeFile(join(dir, 'journal'), Buffer.alloc(8));
    assert.equal((await partialProgress(store, other))?.piecesVerified, 0);
    await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
    assert.equal(await partialProgress(store, other), null);
  });
});

async function snapshot(dir: string): Promise<Array<[string, number, string]>> {
  const out: Array<[string, number, string]> = [];
  for (const name of (await readdir(dir)).sort()) {
    const st = await stat(join(dir, name));
    out.push([name, st.mtimeMs, (await readFile(join(dir, name))).toString('base64')]);
  }
  return out;
}
