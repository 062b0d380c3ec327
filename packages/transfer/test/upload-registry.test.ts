// UploadRegistry.expire: uploads a device abandoned are removed with their pieces, unless they are receiving
// right now or were touched after the cutoff; the registry need not have them open (after a restart).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, mock } from 'node:test';

import { Store } from '@roamdesk/store';

import { TransferError } from '../src/errors.ts';
import { encodeFrameHeader } from '../src/frames.ts';
import { ManifestBuilder } from '../src/manifest-source.ts';
import { UploadRegistry } from '../src/upload-registry.ts';

const PIECE = 64 * 1024;
const LIMITS = { maxBytes: 1 << 30 };

function upload(): { manifest: ReturnType<ManifestBuilder['finish']>; bytes: Buffer } {
  const bytes = randomBytes(3 * PIECE);
  const b = new ManifestBuilder(PIECE);
  b.update(bytes);
  return { manifest: b.finish({ id: randomBytes(32).toString('hex'), kind: 'image', parent: null, virtualSize: 1 << 20 }), bytes };
}

const frame0 = (bytes: Buffer): Buffer => Buffer.concat([encodeFrameHeader({ index: 0, encoding: 0, payloadLength: PIECE, rawLength: PIECE }), bytes.subarray(0, PIECE)]);

describe('UploadRegistry.expire', () => {
  let root = '';
  before(async () => { root = await mkdtemp(join(tmpdir(), 'roamdesk-uploads-')); });
  after(() => rm(root, { recursive: true, force: true }));

  it('removes uploads untouched since the cutoff, not one receiving or touched later; also those only on disk', async () => {
    const store = await Store.open(join(root, 'store'));
    const registry = new UploadRegistry(store);
    const a = upload();
    const begun = await registry.begin('uma', a.manifest, LIMITS);
    const id = begun.uploadId!;
    const sink = await registry.sink('uma', id);
    await sink.push(frame0(a.bytes));
    assert.equal((await registry.state('uma', id)).piecesVerified, 1);

    assert.deepEqual(await registry.expire(Date.now() + 60_000), [], 'a stream is being received into it');
    sink.dispose();
    assert.deepEqual(await registry.expire(Date.now() - 60_000), [], 'touched after the cutoff');
    const gone = await registry.expire(Date.now() + 60_000);
    assert.equal(gone.length, 1);
    assert.equal(gone[0]?.uploadId, id);
    assert.equal(gone[0]?.owner, 'uma');
    assert.ok((gone[0]?.bytes ?? 0) >= PIECE, `it held the piece (${gone[0]?.bytes} bytes)`);
    await assert.rejects(registry.state('uma', id), (e: unknown) => e instanceof TransferError && e.data['notFound'] === true);
    assert.deepEqual(await readdir(store.incomingDir), []);

    // After a restart the upload exists only on disk.
    const b = upload();
    const other = (await registry.begin('ole', b.manifest, LIMITS)).uploadId!;
    await registry.close();
    const restarted = new UploadRegistry(store);
    const removed = await restarted.expire(Date.now() + 60_000);
    assert.deepEqual(removed.map((u) => [u.uploadId, u.owner]), [[other, 'ole']]);
    await assert.rejects(restarted.state('ole', other));
    // A new begin of the same object starts from nothing.
    assert.equal((await restarted.begin('ole', b.manifest, LIMITS)).piecesVerified, 0);
    await restarted.close();
  });
});

describe('UploadRegistry.begin: uploads in progress per owner', () => {
  it('refuses a new upload beyond the limit, still resumes one in progress, and counts per owner', async () => {
    const root = await mkdtemp(join(tmpdir(), 'roamdesk-uploads-cap-'));
    try {
      const registry = new UploadRegistry(await Store.open(join(root, 'store')));
      const limits = { ...LIMITS, maxOpenPerOwner: 2 };
      const [a, b, c] = [upload(), upload(), upload()];
      const first = (await registry.begin('uma', a.manifest, limits)).uploadId;
      await registry.begin('uma', b.manifest, limits);
      await assert.rejects(registry.begin('uma', c.manifest, limits), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_UPLOAD' && e.data['max'] === 2);
      assert.equal((await registry.begin('uma', a.manifest, limits)).uploadId, first, 'resuming is not a new upload');
      assert.ok((await registry.begin('ole', c.manifest, limits)).uploadId !== null, 'another owner has their own count');
      await registry.abandon('uma', first!);
      assert.ok((await registry.begin('uma', c.manifest, limits)).uploadId !== null, 'room again after abandoning one');
      await registry.close();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('UploadRegistry on a failing disk (reliability.md R7)', () => {
  /** Pushes the first piece of `bytes` while every write fails with EIO: the registry answers XFER_ERR_DISK. */
  async function pushOnFailingDisk(registry: UploadRegistry, uploadId: string, bytes: Buffer): Promise<void> {
    mock.method(fs, 'writeSync', () => { throw Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' }); });
    syncBuiltinESMExports();
    try {
      const sink = await registry.sink('uma', uploadId);
      assert.throws(() => sink.push(frame0(bytes)), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_DISK');
      sink.dispose();
    } finally {
      mock.restoreAll();
      syncBuiltinESMExports();
    }
  }

  it('an EIO while receiving discards the upload; the device begins it again and completes it', async () => {
    const root = await mkdtemp(join(tmpdir(), 'roamdesk-uploads-eio-'));
    try {
      const store = await Store.open(join(root, 'store'));
      const registry = new UploadRegistry(store);
      const a = upload();
      const id = (await registry.begin('uma', a.manifest, LIMITS)).uploadId!;
      await pushOnFailingDisk(registry, id, a.bytes);
      // The device's retry begins the upload again: it starts from nothing.
      const again = await registry.begin('uma', a.manifest, LIMITS);
      assert.deepEqual([again.uploadId, again.piecesVerified], [id, 0]);
      const sink = await registry.sink('uma', id);
      for (let i = 0; i < 3; i++) {
        await sink.push(Buffer.concat([encodeFrameHeader({ index: i, encoding: 0, payloadLength: PIECE, rawLength: PIECE }), a.bytes.subarray(i * PIECE, (i + 1) * PIECE)]));
      }
      assert.equal(sink.end().complete, true);
      sink.dispose();

      // Any other call on a condemned upload discards it and says so.
      const b = upload();
      const other = (await registry.begin('uma', b.manifest, LIMITS)).uploadId!;
      await pushOnFailingDisk(registry, other, b.bytes);
      await assert.rejects(registry.state('uma', other), (e: unknown) => e instanceof TransferError && e.data['discarded'] === true);
      assert.deepEqual((await readdir(store.incomingDir)).filter((n) => n.includes(other)), [], 'nothing it received is kept');
      await registry.close();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
