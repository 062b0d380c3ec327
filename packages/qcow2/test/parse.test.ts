// parseQcow2Header against docs/interop/qcow2.txt, one test per rule, on headers built by the test writer.

import assert from 'node:assert/strict';

import {
  BadOffsetError, FileTruncatedError, parseQcow2Header, Qcow2Error, Qcow2HeaderError, Qcow2TruncatedError,
  QCOW2_MAX_HEADER_BYTES,
} from '../src/index.ts';
import { baseSpec, cryptoHeaderExt, EXT, featureTable, type HeaderSpec, layerSpec, writeHeader } from './helpers/header-writer.ts';
import { describe, it } from 'node:test';

const parse = (overrides: Partial<HeaderSpec> = {}, fileSize?: number | bigint) =>
  parseQcow2Header(writeHeader(baseSpec(overrides)), fileSize === undefined ? {} : { fileSize });

function patched(spec: HeaderSpec, patch: (v: DataView, b: Uint8Array) => void): Uint8Array {
  const b = writeHeader(spec);
  patch(new DataView(b.buffer, b.byteOffset, b.byteLength), b);
  return b;
}

function refused(bytes: Uint8Array, code: string, opts: { fileSize?: number } = {}): Qcow2Error {
  let caught: unknown;
  try {
    parseQcow2Header(bytes, opts);
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof Qcow2Error, `expected a Qcow2Error, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.doesNotThrow(() => JSON.stringify(caught));
  return caught;
}

describe('parseQcow2Header: what it reads', () => {
  it('reads every field of a version 3 header', () => {
    const h = parseQcow2Header(writeHeader(layerSpec('p.qcow2', {
      virtualSize: 10n << 30n, compatibleFeatures: 1n, autoclearFeatures: 2n, refcountOrder: 5,
      extensions: [{ type: EXT.featureTable, data: featureTable([{ kind: 0, bit: 0, name: 'dirty bit' }]) }],
    })));
    assert.equal(h.version, 3);
    assert.equal(h.clusterBits, 16);
    assert.equal(h.clusterSize, 65536);
    assert.equal(h.virtualSize, 10n << 30n);
    assert.equal(h.l1Size, 20);
    assert.equal(h.l1TableOffset, 3n << 16n);
    assert.equal(h.refcountTableOffset, 1n << 16n);
    assert.equal(h.refcountTableClusters, 1);
    assert.equal(h.refcountOrder, 5);
    assert.equal(h.headerLength, 112);
    assert.equal(h.lazyRefcounts, true);
    assert.equal(h.autoclearFeatures, 2n);
    assert.equal(h.compressionType, 'zlib');
    assert.equal(h.encryption, 'none');
    assert.deepEqual(h.backing, { name: 'p.qcow2', format: 'qcow2' });
    assert.deepEqual(h.featureNames, [{ kind: 'incompatible', bit: 0, name: 'dirty bit' }]);
    assert.deepEqual(h.extensions.map((e) => [e.type, e.length, e.offset]), [[EXT.backingFormat, 5, 112], [EXT.featureTable, 48, 128]]);
  });

  it('reads a version 2 header: 72 bytes, no feature fields, refcount order 4', () => {
    const h = parse({ version: 2, incompatibleFeatures: 1n, refcountOrder: 6, backingFormat: 'qcow2', backingName: 'b' });
    assert.equal(h.headerLength, 72);
    assert.equal(h.incompatibleFeatures, 0n, 'version 2 has no incompatible_features field');
    assert.equal(h.dirty, false);
    assert.equal(h.refcountOrder, 4);
    assert.equal(h.extensions[0]?.offset, 72, 'extensions start at byte 72 in version 2');
    assert.deepEqual(h.backing, { name: 'b', format: 'qcow2' });
  });

  it('a 104-byte header has no compression_type field (zlib)', () => {
    assert.equal(parse({ headerLength: 104 }).compressionType, 'zlib');
  });

  it('reads zstd compression (type 1 with incompatible bit 3)', () => {
    assert.equal(parse({ compressionType: 1, incompatibleFeatures: 8n }).compressionType, 'zstd');
  });

  it('skips unknown extensions and pads every extension to 8 bytes', () => {
    const h = parse({
      extensions: [{ type: 0x12345678, data: new Uint8Array(3).fill(0xff) }, { type: 0x9abcdef0, data: new Uint8Array(0) }],
      backingFormat: 'qcow2', backingName: 'x.qcow2',
    });
    assert.deepEqual(h.extensions.map((e) => [e.type, e.length, e.offset]),
      [[EXT.backingFormat, 5, 112], [0x12345678, 3, 128], [0x9abcdef0, 0, 144]]);
    assert.equal(h.backing?.name, 'x.qcow2');
  });

  it('keeps 64-bit values exact', () => {
    const h = parse({ clusterBits: 21, virtualSize: (1n << 61n) - 512n, l1TableOffset: (1n << 62n) });
    assert.equal(h.virtualSize, (1n << 61n) - 512n);
    assert.equal(h.l1TableOffset, 1n << 62n);
  });

  it('accepts a backing name that ends exactly at the end of the first cluster', () => {
    const b = writeHeader(baseSpec({ clusterBits: 9, virtualSize: 1n << 20n, l1TableOffset: 3n * 512n,
      refcountTableOffset: 512n }));
    const v = new DataView(b.buffer);
    v.setBigUint64(8, 500n);
    v.setUint32(16, 12);
    b.set(new TextEncoder().encode('abcdefghijkl'), 500);
    assert.equal(parseQcow2Header(b).backing?.name, 'abcdefghijkl');
  });
});

describe('parseQcow2Header: short input', () => {
  it('asks for the 72/104-byte header, then header_length, then the extensions and backing name', () => {
    const full = writeHeader(layerSpec('parent.qcow2'));
    const needed: number[] = [];
    let have = 4;
    for (;;) {
      try {
        parseQcow2Header(full.subarray(0, have));
        break;
      } catch (e) {
        assert.ok(e instanceof Qcow2TruncatedError, String(e));
        const n = e.data.needed as number;
        assert.ok(n > have, 'needed must grow, or a read-more loop would spin');
        needed.push(n);
        have = n;
      }
    }
    assert.deepEqual(needed.slice(0, 2), [72, 104]);
    assert.equal(have, 112 + 16 + 8 + 'parent.qcow2'.length);
  });

  it('QCOW2_MAX_HEADER_BYTES is one 2 MiB cluster', () => {
    assert.equal(QCOW2_MAX_HEADER_BYTES, 2 * 1024 * 1024);
  });

  it('is a bad magic, not a truncation, when even the first bytes differ', () => {
    refused(new Uint8Array([0x51, 0x46, 0x00]), 'QCOW2_ERR_BAD_MAGIC');
    refused(new Uint8Array([]), 'QCOW2_ERR_TRUNCATED');
    refused(new Uint8Array([0x51, 0x46]), 'QCOW2_ERR_TRUNCATED');
  });

  it('reports a file shorter than its header as truncated on disk (FileTruncatedError)', () => {
    const b = writeHeader(layerSpec('parent.qcow2'));
    const e = refused(b.subarray(0, 100), 'QCOW2_ERR_FILE_TRUNCATED', { fileSize: 100 });
    assert.ok(e instanceof FileTruncatedError && e instanceof Qcow2HeaderError);
    assert.match(e.message, /truncated/);
  });

  it('rejects an invalid fileSize argument as a caller bug', () => {
    assert.throws(() => parse({}, -1), RangeError);
    assert.throws(() => parse({}, 1.5), RangeError);
    assert.doesNotThrow(() => parse({}, 1n << 40n));
  });
});

describe('parseQcow2Header: spec violations, one error each', () => {
  it('bad magic', () => {
    const e = refused(patched(baseSpec(), (_v, b) => { b[3] = 0xfa; }), 'QCOW2_ERR_BAD_MAGIC');
    assert.equal(e.data.found, '51 46 49 fa');
  });

  for (const version of [0, 1, 4, 0xffffffff]) {
    it(`unsupported version ${version}`, () => {
      refused(patched(baseSpec(), (v) => v.setUint32(4, version)), 'QCOW2_ERR_UNSUPPORTED_VERSION');
    });
  }

  for (const bits of [0, 8, 22, 63, 0xffffffff]) {
    it(`cluster_bits ${bits}`, () => {
    refused(patched(baseSpec(), (v) => v.setUint32(20, bits)), 'QCOW2_ERR_BAD_CLUSTER_BITS');
  });
  }

  it('cluster_bits 13 with extended L2', () => {
    refused(writeHeader(baseSpec({ clusterBits: 13, incompatibleFeatures: 16n })), 'QCOW2_ERR_BAD_CLUSTER_BITS');
  });

  for (const len of [0, 72, 100, 108, 113, 65544]) {
    it(`header_length ${len}`, () => {
    refused(patched(baseSpec(), (v) => v.setUint32(100, len)), 'QCOW2_ERR_BAD_HEADER_LENGTH');
  });
  }

  it('refcount_order 7', () => {
    refused(writeHeader(baseSpec({ refcountOrder: 7 })), 'QCOW2_ERR_BAD_REFCOUNT_ORDER');
  });
  it('crypt_method 3', () => {
    refused(writeHeader(baseSpec({ cryptMethod: 3 })), 'QCOW2_ERR_BAD_CRYPT_METHOD');
  });

  it('unknown compression type', () => {
    refused(writeHeader(baseSpec({ compressionType: 2, incompatibleFeatures: 8n })), 'QCOW2_ERR_BAD_COMPRESSION_TYPE');
  });
  it('compression type and its feature bit disagree', () => {
    refused(writeHeader(baseSpec({ compressionType: 1 })), 'QCOW2_ERR_BAD_COMPRESSION_TYPE');
    refused(writeHeader(baseSpec({ incompatibleFeatures: 8n })), 'QCOW2_ERR_BAD_COMPRESSION_TYPE');
    refused(writeHeader(baseSpec({ headerLength: 104, incompatibleFeatures: 8n })), 'QCOW2_ERR_BAD_COMPRESSION_TYPE');
  });

  for (const [table, spec] of [
    ['l1', { l1TableOffset: 65537n }],
    ['refcount', { refcountTableOffset: 512n }],
    ['snapshots', { snapshotsOffset: 8n }],
  ] as const) {
    it(`unaligned ${table} table`, () => {
      const e = refused(writeHeader(baseSpec(spec)), 'QCOW2_ERR_BAD_OFFSET');
      assert.deepEqual([e.data.table, e.data.reason], [table, 'unaligned']);
    });
  }

  it('tables overlapping the header', () => {
    for (const spec of [{ l1TableOffset: 0n }, { refcountTableOffset: 0n }, { nbSnapshots: 1, snapshotsOffset: 0n }]) {
      const e = refused(writeHeader(baseSpec(spec)), 'QCOW2_ERR_BAD_OFFSET');
      assert.equal(e.data.reason, 'overlaps-header');
    }
  });

  it('a table ending past 2^63 - 1', () => {
    const e = refused(writeHeader(baseSpec({ refcountTableOffset: (1n << 63n) - (1n << 16n), refcountTableClusters: 2 })),
      'QCOW2_ERR_BAD_OFFSET');
    assert.equal(e.data.reason, 'too-large');
  });

  it('with fileSize: L1, refcount and snapshot tables and the encryption header must lie inside the file', () => {
    const c = 1n << 16n;
    assert.doesNotThrow(() => parse({}, 4n * c));
    const cases: [string, Partial<HeaderSpec>, number][] = [
      ['l1', {}, Number(3n * c + 7n)],
      ['refcount', { refcountTableClusters: 4 }, Number(4n * c)],
      ['snapshots', { nbSnapshots: 2, snapshotsOffset: 9n * c }, Number(9n * c + 79n)],
      ['encryption-header', { cryptMethod: 2, extensions: [{ type: EXT.cryptoHeader, data: cryptoHeaderExt(8n * c, 4096n) }] },
        Number(8n * c + 100n)],
    ];
    for (const [table, spec, fileSize] of cases) {
      const e = refused(writeHeader(baseSpec(spec)), 'QCOW2_ERR_BAD_OFFSET', { fileSize });
      assert.ok(e instanceof BadOffsetError);
      assert.deepEqual([e.data.table, e.data.reason], [table, 'outside-file']);
      assert.match(e.message, /beyond the end of the file/);
    }
  });

  it('refcount_table_clusters 0', () => {
    refused(writeHeader(baseSpec({ refcountTableClusters: 0 })), 'QCOW2_ERR_NO_REFCOUNT_TABLE');
  });
  it('more than 65536 snapshots', () => {
    refused(writeHeader(baseSpec({ nbSnapshots: 65537, snapshotsOffset: 1n << 20n })), 'QCOW2_ERR_TOO_MANY_SNAPSHOTS');
  });

  it('an L1 table too small for the virtual size', () => {
    const e = refused(writeHeader(baseSpec({ virtualSize: (512n << 20n) + 1n, l1Size: 1 })), 'QCOW2_ERR_L1_TABLE_TOO_SMALL');
    assert.equal(e.data.needed, '2');
    // Extended L2 entries are 16 bytes: one L1 entry maps half as much.
    refused(writeHeader(baseSpec({ virtualSize: 512n << 20n, l1Size: 1, incompatibleFeatures: 16n })), 'QCOW2_ERR_L1_TABLE_TOO_SMALL');
  });

  it('backing name longer than 1023 bytes', () => {
    const e = refused(writeHeader(baseSpec({ backingName: 'a'.repeat(1024) })), 'QCOW2_ERR_BACKING_NAME_TOO_LONG');
    assert.equal(e.data.length, 1024);
    assert.doesNotThrow(() => parse({ backingName: 'a'.repeat(1023) }));
  });

  it('backing name that is not UTF-8, contains NUL, or is empty', () => {
    const cases: [Uint8Array, string][] = [
      [new Uint8Array([0x61, 0xff, 0x62]), 'not-utf8'],
      [new Uint8Array([0xc0, 0xaf]), 'not-utf8'], // overlong "/"
      [new TextEncoder().encode('base.qcow2\0/etc/passwd'), 'nul'],
      [new Uint8Array(0), 'empty'],
    ];
    for (const [name, reason] of cases) {
      const e = refused(writeHeader(baseSpec({ backingName: name })), 'QCOW2_ERR_BACKING_NAME_INVALID');
      assert.equal(e.data.reason, reason);
    }
  });

  it('backing name offset inside the header, or past the first cluster', () => {
    const spec = baseSpec({ clusterBits: 9, l1TableOffset: 1536n, refcountTableOffset: 512n, backingName: 'x' });
    for (const [offset, size, reason] of [[64n, 1, 'overlaps-header'], [513n, 1, 'outside-first-cluster'],
      [500n, 13, 'outside-first-cluster']] as const) {
      const e = refused(patched(spec, (v) => { v.setBigUint64(8, offset); v.setUint32(16, size); }), 'QCOW2_ERR_BAD_OFFSET');
      assert.deepEqual([e.data.table, e.data.reason], ['backing-name', reason]);
    }
  });

  describe('header extensions', () => {
    const ext = (code: string, spec: Partial<HeaderSpec>, reason: string): void => {
      const e = refused(writeHeader(baseSpec(spec)), code);
      assert.equal(e.data.reason, reason);
    };
    it('no end marker before the backing name', () => {
      ext('QCOW2_ERR_BAD_HEADER_EXTENSION', { omitEndMarker: true, backingName: 'b.qcow2' }, 'no-end-marker');
    });
    it('an extension overlapping the backing name', () => {
      const b = writeHeader(baseSpec({ backingFormat: 'qcow2', backingName: 'b.qcow2' }));
      new DataView(b.buffer).setUint32(112 + 4, 40); // backing format "length" now runs over the name
      assert.equal(refused(b, 'QCOW2_ERR_BAD_HEADER_EXTENSION').data.reason, 'too-long');
    });
    it('an extension running out of the first cluster', () => {
      const b = writeHeader(baseSpec({ extensions: [{ type: 0x11111111, data: new Uint8Array(8) }] }));
      new DataView(b.buffer).setUint32(112 + 4, 0xfffffff0);
      assert.equal(refused(b, 'QCOW2_ERR_BAD_HEADER_EXTENSION').data.reason, 'too-long');
    });
    it('the same extension twice', () => {
      ext('QCOW2_ERR_BAD_HEADER_EXTENSION', {
        extensions: [{ type: 0x11111111, data: new Uint8Array(1) }, { type: 0x11111111, data: new Uint8Array(1) }],
      }, 'duplicate');
    });
    it('a backing format that is empty, not UTF-8, has NUL, or is longer than 15 bytes', () => {
      for (const data of [new Uint8Array(0), new Uint8Array([0xff]), new TextEncoder().encode('qcow2\0'), new Uint8Array(16).fill(0x61)]) {
        const e = refused(writeHeader(baseSpec({ extensions: [{ type: EXT.backingFormat, data }], backingName: 'b' })),
          'QCOW2_ERR_BAD_HEADER_EXTENSION');
        assert.ok(['bad-string', 'bad-length'].includes(e.data.reason as string));
      }
    });
    it('a data file name that is not UTF-8', () => {
      ext('QCOW2_ERR_BAD_HEADER_EXTENSION', { extensions: [{ type: EXT.dataFile, data: new Uint8Array([0xfe]) }] }, 'bad-string');
    });
    it('a feature name table whose length is not a multiple of 48', () => {
      ext('QCOW2_ERR_BAD_HEADER_EXTENSION', { extensions: [{ type: EXT.featureTable, data: new Uint8Array(47) }] }, 'bad-length');
    });
    it('a bitmaps extension that is not 24 bytes', () => {
      ext('QCOW2_ERR_BAD_HEADER_EXTENSION', { extensions: [{ type: EXT.bitmaps, data: new Uint8Array(16) }] }, 'bad-length');
    });
    it('an encryption header pointer without LUKS, of the wrong length, or unaligned; LUKS without one', () => {
      const luks = (data: Uint8Array): Partial<HeaderSpec> => ({ cryptMethod: 2, extensions: [{ type: EXT.cryptoHeader, data }] });
      ext('QCOW2_ERR_BAD_HEADER_EXTENSION', { extensions: [{ type: EXT.cryptoHeader, data: cryptoHeaderExt(1n << 16n, 1n) }] },
        'without-luks');
      ext('QCOW2_ERR_BAD_HEADER_EXTENSION', luks(new Uint8Array(8)), 'bad-length');
      ext('QCOW2_ERR_BAD_HEADER_EXTENSION', luks(cryptoHeaderExt(4096n, 1n)), 'unaligned-offset');
      ext('QCOW2_ERR_BAD_HEADER_EXTENSION', { cryptMethod: 2 }, 'luks-without-header');
      assert.equal(parse(luks(cryptoHeaderExt(1n << 16n, 4096n))).encryption, 'luks');
    });
  });

  it('every parse error is a Qcow2HeaderError except the short-buffer one', () => {
    const e = refused(patched(baseSpec(), (v) => v.setUint32(4, 9)), 'QCOW2_ERR_UNSUPPORTED_VERSION');
    assert.ok(e instanceof Qcow2HeaderError);
    assert.ok(!(refused(new Uint8Array(10).fill(0x51).fill(0x46, 1).fill(0x49, 2).fill(0xfb, 3), 'QCOW2_ERR_TRUNCATED')
      instanceof Qcow2HeaderError));
  });
});
