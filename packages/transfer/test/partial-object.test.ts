// PartialObject: pieces verified before they count, resume re-verifies from disk, a torn journal is harmless.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp, { access, appendFile, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, mock } from 'node:test';

import { isTransferError, TransferError } from '../src/errors.ts';
import { pieceHash } from '../src/hash.ts';
import { type Manifest, parseManifest } from '../src/manifest.ts';
import { ENCODING_RAW, ENCODING_ZSTD } from '../src/frames.ts';
import { PartialObject, streamPiecesInto } from '../src/partial-object.ts';

const PIECE = 65536;

describe('PartialObject', () => {
  let root = '';
  const data = randomBytes(PIECE * 5 + 123);
  const piece = (i: number) => data.subarray(i * PIECE, Math.min(data.length, (i + 1) * PIECE));
  const manifest: Manifest = parseManifest({
    version: 1, id: 'e'.repeat(64), kind: 'image', parent: null, size: data.length, virtualSize: data.length, pieceSize: PIECE, hash: 'blake3',
    pieces: Array.from({ length: 6 }, (_, i) => pieceHash(piece(i))),
  });

  before(async () => { root = await mkdtemp(join(tmpdir(), 'roamdesk-partial-')); });
  after(async () => { await rm(root, { recursive: true, force: true }); });

  it('writes only pieces that match their hash, and assembles the exact file', async () => {
    const dir = join(root, 'a');
    const p = await PartialObject.open(dir, manifest);
    const wrong = Buffer.from(piece(2));
    wrong[100] = wrong[100]! ^ 1;
    await assert.rejects(p.accept(2, wrong), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_PIECE_HASH');
    await assert.rejects(p.accept(5, piece(4)), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_PIECE_HASH');
    await assert.rejects(p.accept(6, piece(0)), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_PROTOCOL');
    assert.equal(p.verifiedPieces, 0);
    for (const i of [3, 0, 5, 1, 4, 2]) assert.equal(await p.accept(i, piece(i)), true);
    assert.equal(await p.accept(3, piece(3)), false, 'a duplicate is ignored');
    assert.equal(p.complete, true);
    assert.equal(p.verifiedPrefixBytes, data.length);
    const path = await p.finish();
    assert.ok((await readFile(path)).equals(data));
  });

  it('resumes from the journal, re-hashing what is on disk (a lost write is fetched again)', async () => {
    const dir = join(root, 'b');
    const p = await PartialObject.open(dir, manifest);
    for (const i of [0, 1, 2, 4]) await p.accept(i, piece(i));
    await p.close();
    // Simulate a crash that lost piece 1's data after its journal entry was written, plus a torn entry.
    const fh = await open(join(dir, 'object.qcow2'), 'r+');
    await fh.write(Buffer.alloc(PIECE), 0, PIECE, PIECE);
    await fh.close();
    await appendFile(join(dir, 'journal'), Buffer.from([3, 0]));
    const again = await PartialObject.open(dir, manifest);
    assert.equal(again.recoveredPieces, 3);
    assert.deepEqual(again.missing(), [1, 3, 5]);
    assert.equal(again.verifiedPrefixBytes, PIECE);
    await again.close();
  });

  it('starts over when the directory holds another manifest', async () => {
    const dir = join(root, 'c');
    const p = await PartialObject.open(dir, manifest);
    await p.accept(0, piece(0));
    await p.close();
    const other = parseManifest({ ...manifest, pieceSize: PIECE * 2, pieces: Array.from({ length: 3 }, () => 'f'.repeat(64)) });
    const q = await PartialObject.open(dir, other);
    assert.equal(q.verifiedPieces, 0);
    await q.discard();
    await assert.rejects(readFile(join(dir, 'manifest.json')));
  });

  it('streams pieces in unverified and counts only those whose hash matches', async () => {
    const p = await PartialObject.open(join(root, 'stream'), manifest);
    const pieces: Array<[number, boolean]> = [];
    const direct = streamPiecesInto(p, { onPiece: (h, fresh) => pieces.push([h.index, fresh]) });
    const send = (i: number, bytes: Buffer, cut: number): void => {
      assert.equal(direct.start({ index: i, encoding: ENCODING_RAW, payloadLength: bytes.length, rawLength: bytes.length }), true);
      direct.bytes(bytes.subarray(0, cut));
      direct.bytes(bytes.subarray(cut));
      direct.end({ index: i, encoding: ENCODING_RAW, payloadLength: bytes.length, rawLength: bytes.length });
    };
    const wrong = Buffer.from(piece(1));
    wrong[7] = wrong[7]! ^ 1;
    assert.throws(() => send(1, wrong, 100), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_PIECE_HASH');
    assert.equal(p.isVerified(1), false, 'a piece whose bytes are wrong does not count, though they are on disk');
    assert.throws(() => send(2, piece(2).subarray(0, 1000), 10), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_PIECE_HASH', 'a short piece');
    assert.throws(() => p.writeUnverified(5, 120, Buffer.alloc(10)), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_PROTOCOL', 'beyond the piece');
    assert.throws(() => p.writeUnverified(6, 0, Buffer.alloc(1)), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_PROTOCOL', 'beyond the object');
    for (let i = 0; i < 6; i++) send(i, Buffer.from(piece(i)), Math.min(piece(i).length, 1 + i * 9000));
    assert.deepEqual(pieces, [0, 1, 2, 3, 4, 5].map((i) => [i, true]));
    assert.equal(direct.start({ index: 3, encoding: ENCODING_RAW, payloadLength: piece(3).length, rawLength: piece(3).length }), false, 'a verified piece is never written over');
    assert.throws(() => p.writeUnverified(3, 0, piece(3)), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_PROTOCOL');
    assert.equal(direct.start({ index: 0, encoding: ENCODING_ZSTD, payloadLength: 10, rawLength: PIECE }), false, 'compressed pieces are received whole');
    assert.deepEqual(await readFile(await p.finish()), data);
  });

  it('a piece another stream verifies while this one is still receiving it: the rest is dropped, never written over it', async () => {
    // A sender's retry racing the connection it gave up on, whose bytes were still on their way (reliability.md T6).
    const p = await PartialObject.open(join(root, 'race'), manifest);
    const late: Array<[number, boolean]> = [];
    const retry: Array<[number, boolean]> = [];
    const a = streamPiecesInto(p, { onPiece: (h, fresh) => late.push([h.index, fresh]) });
    const b = streamPiecesInto(p, { onPiece: (h, fresh) => retry.push([h.index, fresh]) });
    const head = { index: 2, encoding: ENCODING_RAW, payloadLength: piece(2).length, rawLength: piece(2).length };
    assert.equal(a.start(head), true);
    a.bytes(piece(2).subarray(0, 1000));
    assert.equal(b.start(head), true);
    b.bytes(piece(2));
    b.end(head);
    // The abandoned stream's rest arrives after the piece was verified: even bytes that differ change nothing.
    const garbage = Buffer.alloc(piece(2).length - 1000, 0xee);
    a.bytes(garbage);
    a.end(head);
    assert.deepEqual(retry, [[2, true]]);
    assert.deepEqual(late, [[2, false]], 'the late copy counts as already held');
    for (const i of [0, 1, 3, 4, 5]) await p.accept(i, piece(i));
    assert.deepEqual(await readFile(await p.finish()), data, 'the verified piece is intact');
  });

  it('refuses to finish while pieces are missing', async () => {
    const p = await PartialObject.open(join(root, 'd'), manifest);
    await assert.rejects(p.finish(), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_UPLOAD');
    await p.discard();
    await writeFile(join(root, 'unused'), '');
  });
});

describe('receive lock', () => {
  it('refuses a second receiver of the same object and takes over a lock left by a dead process', async () => {
    const { acquireLock } = await import('../src/lock.ts');
    const { spawnSync } = await import('node:child_process');
    const dir = await mkdtemp(join(tmpdir(), 'roamdesk-lock-'));
    try {
      const path = join(dir, 'dl-x.lock');
      const held = await acquireLock(path, 'object x');
      await assert.rejects(acquireLock(path, 'object x'), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_BUSY');
      await held.release();
      const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
      await writeFile(path, dead);
      const taken = await acquireLock(path, 'object x');
      assert.equal(await readFile(path, 'utf8'), String(process.pid));
      await taken.release();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('PartialObject on a full or failing disk (reliability.md R7, T8, T9)', () => {
  let root = '';
  const PIECE_BYTES = 65536;
  const data = randomBytes(PIECE_BYTES * 4);
  const piece = (i: number) => data.subarray(i * PIECE_BYTES, (i + 1) * PIECE_BYTES);
  const manifest: Manifest = parseManifest({
    version: 1, id: 'd'.repeat(64), kind: 'layer', parent: 'c'.repeat(64), size: data.length, virtualSize: data.length, pieceSize: PIECE_BYTES, hash: 'blake3',
    pieces: Array.from({ length: 4 }, (_, i) => pieceHash(piece(i))),
  });
  const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: simulated`), { code });
  const exists = (p: string): Promise<boolean> => access(p).then(() => true, () => false);
  /** The FileHandle prototype, to make one of its methods fail like a real disk would. */
  async function handleProto(): Promise<object> {
    const fh = await open(join(root, 'probe'), 'w');
    await fh.close();
    return Object.getPrototypeOf(fh) as object;
  }

  before(async () => { root = await mkdtemp(join(tmpdir(), 'roamdesk-disk-')); });
  after(async () => {
    mock.restoreAll();
    syncBuiltinESMExports();
    await rm(root, { recursive: true, force: true });
  });

  it('refuses an object larger than the free space before creating anything', async () => {
    const dir = join(root, 'no-room');
    const statfs = mock.method(fsp, 'statfs', () => Promise.resolve({ bavail: 3, bsize: 4096 }));
    syncBuiltinESMExports();
    try {
      await assert.rejects(PartialObject.open(dir, manifest), (e: unknown) => isTransferError(e, 'XFER_ERR_NO_SPACE')
        && e.data['needed'] === data.length && e.data['free'] === 3 * 4096 && /needs 0\.3 MB more in .*, which has 0\.0 MB free/.test(e.message)
        && typeof e.data['hint'] === 'string');
      assert.equal(statfs.mock.callCount(), 1);
      assert.equal(await exists(dir), false, 'nothing created');
    } finally {
      statfs.mock.restore();
      syncBuiltinESMExports();
    }
    const p = await PartialObject.open(dir, manifest);
    assert.equal(p.verifiedPieces, 0);
    await p.discard();
  });

  it('ENOSPC while writing: XFER_ERR_NO_SPACE, and the pieces verified before it are kept for the re-run', async () => {
    const dir = join(root, 'enospc');
    const p = await PartialObject.open(dir, manifest);
    await p.accept(0, piece(0));
    const proto = await handleProto();
    const write = mock.method(proto as { write: () => Promise<never> }, 'write', () => Promise.reject(errno('ENOSPC')));
    try {
      await assert.rejects(p.accept(1, piece(1)), (e: unknown) => isTransferError(e, 'XFER_ERR_NO_SPACE') && e.data['errno'] === 'ENOSPC' && /free space/.test(String(e.data['hint'])));
    } finally {
      write.mock.restore();
    }
    // The streaming path writes with writeSync.
    const writeSync = mock.method(fs, 'writeSync', () => { throw errno('ENOSPC'); });
    syncBuiltinESMExports();
    try {
      assert.throws(() => p.writeUnverified(2, 0, piece(2)), (e: unknown) => isTransferError(e, 'XFER_ERR_NO_SPACE'));
    } finally {
      writeSync.mock.restore();
      syncBuiltinESMExports();
    }
    await p.close();
    const again = await PartialObject.open(dir, manifest);
    assert.equal(again.recoveredPieces, 1, 'piece 0 survives');
    await again.discard();
  });

  it('EIO on write: XFER_ERR_DISK, and nothing received is trusted afterwards', async () => {
    const dir = join(root, 'eio-write');
    const p = await PartialObject.open(dir, manifest);
    await p.accept(0, piece(0));
    const writeSync = mock.method(fs, 'writeSync', () => { throw errno('EIO'); });
    syncBuiltinESMExports();
    try {
      assert.throws(() => p.writeUnverified(1, 0, piece(1)), (e: unknown) => isTransferError(e, 'XFER_ERR_DISK') && e.data['errno'] === 'EIO' && /discarded/.test(e.message));
    } finally {
      writeSync.mock.restore();
      syncBuiltinESMExports();
    }
    await p.close();
    assert.equal(await exists(dir), false, 'the partial object is gone');
    const again = await PartialObject.open(dir, manifest);
    assert.equal(again.recoveredPieces, 0);
    await again.discard();
  });

  it('EIO on the final fsync: never retried, never reported durable; the partial object is discarded', async () => {
    const dir = join(root, 'eio-fsync');
    const p = await PartialObject.open(dir, manifest);
    for (let i = 0; i < 4; i++) await p.accept(i, piece(i));
    const proto = await handleProto();
    const sync = mock.method(proto as { sync: () => Promise<never> }, 'sync', () => Promise.reject(errno('EIO')));
    try {
      await assert.rejects(p.finish(), (e: unknown) => isTransferError(e, 'XFER_ERR_DISK') && e.data['op'] === 'fsync');
      assert.equal(sync.mock.callCount(), 1, 'fsync is not retried');
    } finally {
      sync.mock.restore();
    }
    assert.equal(await exists(dir), false);
    const again = await PartialObject.open(dir, manifest);
    assert.equal(again.recoveredPieces, 0, 'every piece is received again');
    for (let i = 0; i < 4; i++) await again.accept(i, piece(i));
    assert.ok((await readFile(await again.finish())).equals(data), 'a retry works');
  });

  it('a failed background flush stops the transfer at the next piece, not at the end', async () => {
    const big = randomBytes(4 * 1024 * 1024);
    const pieces = 10; // 40 MiB: past the 32 MiB after which a background datasync starts
    const m = parseManifest({
      version: 1, id: 'f'.repeat(64), kind: 'image', parent: null, size: big.length * pieces, virtualSize: big.length * pieces, pieceSize: big.length, hash: 'blake3',
      pieces: Array.from({ length: pieces }, () => pieceHash(big)),
    });
    const dir = join(root, 'eio-flush');
    const proto = await handleProto();
    const datasync = mock.method(proto as { datasync: () => Promise<never> }, 'datasync', () => Promise.reject(errno('EIO')));
    const p = await PartialObject.open(dir, m);
    let failedAt = -1;
    try {
      for (let i = 0; i < pieces && failedAt < 0; i++) {
        await p.accept(i, big).catch((e: unknown) => {
          assert.ok(isTransferError(e, 'XFER_ERR_DISK') && e.data['op'] === 'fsync', String(e));
          failedAt = i;
        });
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      datasync.mock.restore();
    }
    assert.ok(failedAt > 0 && failedAt < pieces, `failed at piece ${failedAt}`);
    await p.close();
    assert.equal(await exists(dir), false);
  });
});
