// Pure parts of the transfer engine: manifests, frames, batches, the compression decision, the zstd codec.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import { CompressionController } from '../src/adaptive.ts';
import { backoff, BatchQueue, planBatches } from '../src/batches.ts';
import { compressedBound, PieceCodec } from '../src/codec.ts';
import { connectionError, TransferError } from '../src/errors.ts';
import { BufferPool, encodeFrameHeader, ENCODING_RAW, ENCODING_ZSTD, FRAME_HEADER_BYTES, FrameAssembler } from '../src/frames.ts';
import { pieceHash } from '../src/hash.ts';
import { parseManifest, pieceRange } from '../src/manifest.ts';
import { isRetryable } from '../src/http.ts';
import { fromRanges, toRanges } from '../src/protocol.ts';

const H = 'a'.repeat(64);
const valid = { version: 1, id: 'b'.repeat(64), kind: 'layer', parent: 'c'.repeat(64), size: 5 * 65536 + 1, virtualSize: 1 << 30, pieceSize: 65536, hash: 'blake3', pieces: Array<string>(6).fill(H) };

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof TransferError, `expected a TransferError, got ${String(e)}`);
    return e.code;
  }
  return 'no error';
}

/**
 * Frames of a chunked stream, assembled whole (`direct` false) or streamed to a DirectPayloads receiver (true).
 * Async so that errors surface as rejections, like the receivers see them.
 */
async function collect(chunks: Buffer[], pieceSize = 65536, direct = false): Promise<Array<{ index: number; payload: string }>> {
  await Promise.resolve();
  const out: Array<{ index: number; payload: string }> = [];
  let streaming: { index: number; parts: Buffer[] } | null = null;
  const assembler = new FrameAssembler(new BufferPool(pieceSize), (f) => {
    out.push({ index: f.index, payload: f.payload.toString('hex') });
    f.release();
  }, direct ? {
    start: (h) => { streaming = { index: h.index, parts: [] }; return true; },
    bytes: (v) => { streaming!.parts.push(Buffer.from(v)); },
    end: () => { out.push({ index: streaming!.index, payload: Buffer.concat(streaming!.parts).toString('hex') }); streaming = null; },
  } : undefined);
  for (const c of chunks) assembler.push(c);
  assembler.end();
  return out;
}

describe('parseManifest', () => {
  it('accepts a consistent manifest and computes piece ranges', () => {
    const m = parseManifest(valid);
    assert.deepEqual(pieceRange(m, 5), { index: 5, offset: 5 * 65536, length: 1 });
  });
  const lies: Array<[string, Record<string, unknown>]> = [
    ['one piece hash too few', { pieces: Array<string>(5).fill(H) }],
    ['one piece hash too many', { pieces: Array<string>(7).fill(H) }],
    ['a size that disagrees with the pieces', { size: 10 * 65536 }],
    ['size 0', { size: 0, pieces: [] }],
    ['a negative size', { size: -1 }],
    ['a size beyond 2^50', { size: 2 ** 51 }],
    ['a piece size that is not a power of two', { pieceSize: 65537 }],
    ['a piece size above 16 MiB', { pieceSize: 32 * 1024 * 1024, pieces: [H] }],
    ['a path-like id', { id: '../../etc/passwd' }],
    ['upper-case hex', { id: 'B'.repeat(64) }],
    ['a layer without parent', { parent: null }],
    ['an image with a parent', { kind: 'image' }],
    ['another hash', { hash: 'md5' }],
    ['a non-hex piece hash', { pieces: [...Array<string>(5).fill(H), 'z'.repeat(64)] }],
    ['another version', { version: 2 }],
  ];
  for (const [what, patch] of lies) {
    it(`refuses ${what}`, () => assert.equal(code(() => parseManifest({ ...valid, ...patch })), 'XFER_ERR_MANIFEST'));
  }
  it('refuses a manifest that contradicts what the caller knows', () => {
    assert.equal(code(() => parseManifest(valid, { size: valid.size + 1 })), 'XFER_ERR_MANIFEST');
    assert.equal(code(() => parseManifest(valid, { id: 'd'.repeat(64) })), 'XFER_ERR_MANIFEST');
  });
  it('never throws anything but XFER_ERR_MANIFEST on arbitrary JSON', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => {
      const c = code(() => parseManifest(v));
      assert.ok(c === 'XFER_ERR_MANIFEST');
    }));
  });
});

describe('frames', () => {
  const pieces = [randomBytes(1000), randomBytes(65536), randomBytes(1)];
  const stream = Buffer.concat(pieces.flatMap((p, i) => [encodeFrameHeader({ index: i + 7, encoding: ENCODING_RAW, payloadLength: p.length, rawLength: p.length }), p]));

  it('decodes the same frames however the stream is cut into chunks, whole or streamed', async () => {
    await fc.assert(fc.asyncProperty(fc.array(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 20 }), fc.boolean(), async (cuts, direct) => {
      const points = [...new Set(cuts)].sort((a, b) => a - b);
      const chunks: Buffer[] = [];
      let last = 0;
      for (const p of [...points, stream.length]) {
        chunks.push(stream.subarray(last, p));
        last = p;
      }
      const got = await collect(chunks, 65536, direct);
      assert.deepEqual(got, pieces.map((p, i) => ({ index: i + 7, payload: p.toString('hex') })));
    }), { numRuns: 100 });
  });

  it('a stream cut inside a frame is a protocol error, never a short piece', async () => {
    for (const cut of [5, FRAME_HEADER_BYTES + 10, stream.length - 1]) {
      for (const direct of [false, true]) {
        await assert.rejects(collect([stream.subarray(0, cut)], 65536, direct), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_PROTOCOL');
      }
    }
  });

  it('refuses bad magic, unknown encodings and lengths beyond a piece before allocating', async () => {
    const bad = Buffer.from(stream);
    bad.write('XXXX', 0);
    await assert.rejects(collect([bad]), /bad magic/);
    const enc = encodeFrameHeader({ index: 0, encoding: ENCODING_RAW, payloadLength: 4, rawLength: 4 });
    enc.writeUInt8(9, 8);
    await assert.rejects(collect([enc, Buffer.alloc(4)]), /unknown piece encoding/);
    const huge = encodeFrameHeader({ index: 0, encoding: ENCODING_RAW, payloadLength: 2 ** 31, rawLength: 2 ** 31 });
    await assert.rejects(collect([huge]), /out of range/);
    const tooBigForPool = encodeFrameHeader({ index: 0, encoding: ENCODING_RAW, payloadLength: 65537, rawLength: 65537 });
    await assert.rejects(collect([tooBigForPool]), /exceeds the piece size/);
  });
});

describe('PieceCodec', () => {
  const codec = new PieceCodec();
  it('round-trips compressible data and sends incompressible data raw', () => {
    const text = Buffer.from('roamdesk '.repeat(20000));
    const out = Buffer.alloc(compressedBound(text.length));
    const enc = codec.encode(text, out);
    assert.equal(enc.encoding, ENCODING_ZSTD);
    assert.ok(enc.payload.length < text.length / 10);
    assert.ok(codec.decode(enc.encoding, enc.payload, text.length, Buffer.alloc(text.length)).equals(text));
    const noise = randomBytes(65536);
    assert.equal(codec.encode(noise, Buffer.alloc(compressedBound(noise.length))).encoding, ENCODING_RAW);
  });
  it('refuses a zstd payload that expands beyond the declared raw length (a decompression bomb)', () => {
    const zeros = Buffer.alloc(1 << 20);
    const enc = codec.encode(zeros, Buffer.alloc(compressedBound(zeros.length)));
    assert.throws(() => codec.decode(ENCODING_ZSTD, enc.payload, 4096, Buffer.alloc(4096)), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_PROTOCOL');
    assert.throws(() => codec.decode(ENCODING_ZSTD, Buffer.from('not zstd at all'), 100, Buffer.alloc(100)), /does not decompress/);
  });
});

describe('batches', () => {
  it('cuts missing pieces into contiguous batches of bounded size', () => {
    assert.deepEqual(planBatches([0, 1, 2, 3, 4, 9, 10, 12], 3), [{ first: 0, count: 3 }, { first: 3, count: 2 }, { first: 9, count: 2 }, { first: 12, count: 1 }]);
    assert.deepEqual(toRanges([1, 2, 3, 7, 8]), [[1, 3], [7, 8]]);
    assert.deepEqual(fromRanges(toRanges([1, 2, 3, 7, 8])), [1, 2, 3, 7, 8]);
  });
  it('re-queues only unfinished pieces and counts attempts per piece', async () => {
    const q = new BatchQueue(planBatches([0, 1, 2, 3], 4), 4, 3);
    const b = await q.next();
    assert.deepEqual(b, { first: 0, count: 4 });
    assert.equal(q.settle([2, 3]), 1);
    assert.deepEqual(await q.next(), { first: 2, count: 2 });
    assert.equal(q.settle([3]), 2);
    assert.deepEqual(await q.next(), { first: 3, count: 1 });
    q.settle([]);
    assert.equal(await q.next(), null);
  });
  it("a retry's wait leaves no listener on the transfer's signal (a long transfer retries many times)", async () => {
    const c = new AbortController();
    for (let i = 0; i < 3; i++) await backoff(0, c.signal);
    assert.equal(getEventListeners(c.signal, 'abort').length, 0);
    const waiting = backoff(20, c.signal);
    c.abort();
    await waiting; // an abort ends the wait at once
    assert.equal(getEventListeners(c.signal, 'abort').length, 0);
  });
});

describe('CompressionController', () => {
  const compressible = Buffer.from('a text-like desktop disk '.repeat(40000));
  const MiB = 1024 * 1024;
  /** Feeds pieces at `rawRate` bytes/s uncompressed and `zstdRate` compressed, as the transfer would. */
  function drive(samplePiece: Buffer, rawRate: number, zstdRate: number): CompressionController {
    let t = 0;
    const c = new CompressionController('auto', () => t);
    for (let i = 0; i < 200 && c.reason.startsWith('transfer'); i++) {
      c.sample(samplePiece);
      t += (MiB / (c.compress ? zstdRate : rawRate)) * 1000;
      c.record(MiB, c.compress);
    }
    return c;
  }
  it('stays off where compressing is slower (a fast link)', () => {
    const c = drive(compressible, 900e6, 350e6);
    assert.equal(c.compress, false, c.reason);
    assert.match(c.reason, /900 MB\/s uncompressed vs 350 MB\/s with zstd-1.*compression off/);
  });
  it('skips the compressed trial on a link faster than this machine compresses', () => {
    let t = 0;
    let sampling = false;
    // While sampling, the clock moves 5 ms per reading: zstd compresses ~200 MB/s here.
    const c = new CompressionController('auto', () => (sampling ? (t += 5) : t));
    let tried = false;
    for (let i = 0; i < 200 && c.reason.startsWith('transfer'); i++) {
      sampling = true;
      c.sample(compressible);
      sampling = false;
      tried ||= c.compress;
      t += (MiB / 900e6) * 1000;
      c.record(MiB, c.compress);
    }
    assert.equal(tried, false, 'never compressed a request');
    assert.match(c.reason, /uncompressed, faster than zstd-1 compresses here \(\d+ MB\/s\): compression off/);
  });
  it('samples past the first bytes (qcow2 metadata compresses far better than the data)', () => {
    let t = 0;
    const c = new CompressionController('auto', () => t);
    const noise = randomBytes(MiB);
    for (let i = 0; i < 200 && c.reason.startsWith('transfer'); i++) {
      c.sample(i === 0 ? Buffer.alloc(MiB) : noise);
      t += (MiB / 12.5e6) * 1000;
      c.record(MiB, c.compress);
    }
    // Judged on the data, not on the zeros of the first piece (they would say 1000×): it does not compress, and the
    // slow link's short trial showed it.
    assert.equal(c.compress, false, c.reason);
    assert.match(c.reason, /\(ratio 1\.0\d\): compression off/);
  });
  it('turns on where compressing delivers more (a slow link)', () => {
    const c = drive(compressible, 12.5e6, 30e6);
    assert.equal(c.compress, true, c.reason);
  });
  it('on a link that is not slow, never tries compression for data that does not compress', () => {
    let tried = false;
    let t = 0;
    const c = new CompressionController('auto', () => t);
    const noise = randomBytes(1 << 20);
    for (let i = 0; i < 200 && c.reason.startsWith('transfer'); i++) {
      c.sample(noise);
      tried ||= c.compress;
      t += 5; // 200 MB/s
      c.record(MiB, c.compress);
    }
    assert.equal(tried, false);
    assert.equal(c.compress, false);
    assert.match(c.reason, /compresses only/);
  });
  it('on a slow link, samples that barely compress do not decide: a short compressed trial does (the samples may have missed what compresses)', () => {
    // The pieces sampled are noise, but the transfer as a whole goes faster compressed (as the bench's layer does).
    const on = drive(randomBytes(MiB), 12.5e6, 16e6);
    assert.equal(on.compress, true, on.reason);
    assert.match(on.reason, /12 MB\/s uncompressed vs 16 MB\/s with zstd-1 \(ratio 1\.0\d\): compression on/);
    // …and where it does not, it stays off after the trial.
    const off = drive(randomBytes(MiB), 12.5e6, 12.5e6);
    assert.equal(off.compress, false, off.reason);
  });
  it('ignores frames of the other encoding still arriving from earlier requests', () => {
    let t = 0;
    const c = new CompressionController('auto', () => t);
    c.sample(compressible);
    for (let i = 0; i < 40 && !c.compress; i++) {
      t += 100;
      c.record(MiB, false);
    }
    assert.equal(c.compress, true, 'in the compressed window');
    for (let i = 0; i < 100; i++) {
      t += 1;
      c.record(MiB, false); // late raw frames: must not end the compressed window
    }
    assert.equal(c.reason.startsWith('transfer'), true);
  });
  it('obeys on and off', () => {
    assert.equal(new CompressionController('on').compress, true);
    assert.equal(new CompressionController('off').compress, false);
  });
});

describe('pieceHash', () => {
  it('is BLAKE3 (the published test vector for the empty input)', () => {
    assert.equal(pieceHash(Buffer.alloc(0)), 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262');
  });
});

describe('connectionError', () => {
  const failure = (code: string): Error => Object.assign(new Error(`failed: ${code}`), { code });

  it('an untrusted certificate is XFER_ERR_TLS with a hint, and not retried', () => {
    for (const code of ['DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_HAS_EXPIRED', 'ERR_TLS_CERT_ALTNAME_INVALID']) {
      const e = connectionError('https://server:8760', failure(code));
      assert.equal(e.code, 'XFER_ERR_TLS', code);
      assert.equal(e.data['errno'], code);
      assert.match(String(e.data['hint']), /NODE_EXTRA_CA_CERTS=/);
      assert.equal(isRetryable(e), false, code);
    }
  });

  it('anything else is XFER_ERR_NETWORK, retried', () => {
    for (const code of ['ECONNREFUSED', 'ECONNRESET', 'EPROTO']) {
      const e = connectionError('http://server:8760', failure(code));
      assert.equal(e.code, 'XFER_ERR_NETWORK', code);
      assert.equal(e.data['hint'], undefined);
      assert.equal(isRetryable(e), true, code);
    }
  });
});
