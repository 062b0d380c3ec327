// Property tests (fast-check): hostile bytes never make the parser or the policies throw anything but a
// Qcow2Error, or run long; headers written by the independent test writer round-trip through the parser.

import assert from 'node:assert/strict';

import fc from 'fast-check';

import {
  checkImageHeader, checkUntrustedLayer, detectImageFormat, parseQcow2Header, Qcow2Error, type Qcow2Header,
} from '../src/index.ts';
import { fixtureNames, loadFixture } from './helpers/fixtures.ts';
import { cryptoHeaderExt, EXT, type ExtensionSpec, type HeaderSpec, writeHeader } from './helpers/header-writer.ts';
import { describe, it } from 'node:test';

const PARENT = 'parent.qcow2';
const RUNS = Number(process.env['QCOW2_FC_RUNS'] ?? 400);
/** Per-input budget (generous for slow CI): the parser is a bounded walk over at most one cluster. */
const MAX_MS_PER_INPUT = 250;

/** Runs the whole pipeline on untrusted bytes; anything thrown must be a Qcow2Error. */
function pipeline(bytes: Uint8Array, fileSize?: number, budgetMs = MAX_MS_PER_INPUT): void {
  const started = performance.now();
  const only = (f: () => void): void => {
    try {
      f();
    } catch (e) {
      if (!(e instanceof Qcow2Error)) throw new Error(`threw a non-Qcow2Error: ${String(e)}`, { cause: e });
      assert.match(e.code, /^QCOW2_ERR_/);
      JSON.stringify(e); // data must stay JSON-safe whatever the input
    }
  };
  only(() => detectImageFormat(bytes));
  let header: Qcow2Header | undefined;
  only(() => {
    header = parseQcow2Header(bytes, fileSize === undefined ? {} : { fileSize });
  });
  if (header !== undefined) {
    const h = header;
    only(() => checkUntrustedLayer(h, PARENT));
    only(() => checkImageHeader(h));
    only(() => checkUntrustedLayer(h, PARENT, { allowLuks: true, allowSnapshots: true, maxVirtualSize: 1n << 64n }));
  }
  const ms = performance.now() - started;
  assert.ok(ms < budgetMs, `one input took ${ms.toFixed(1)} ms`);
}

const MAGIC = [0x51, 0x46, 0x49, 0xfb];

/** Valid-looking header specs, within what the spec allows, so the round trip must succeed. */
const specArb: fc.Arbitrary<HeaderSpec> = fc
  .record({
    version: fc.constantFrom(2 as const, 3 as const),
    clusterBits: fc.integer({ min: 9, max: 21 }),
    sizeFraction: fc.double({ min: 0, max: 1, noNaN: true }),
    cryptMethod: fc.constantFrom(0, 1, 2),
    l1Slack: fc.integer({ min: 0, max: 1000 }),
    l1Cluster: fc.integer({ min: 1, max: 1 << 20 }),
    refcountCluster: fc.integer({ min: 1, max: 1 << 20 }),
    refcountTableClusters: fc.integer({ min: 1, max: 4096 }),
    nbSnapshots: fc.integer({ min: 0, max: 65536 }),
    snapshotsCluster: fc.integer({ min: 1, max: 1 << 20 }),
    knownBits: fc.subarray([0n, 1n, 2n, 4n]),
    unknownBits: fc.bigInt({ min: 0n, max: (1n << 59n) - 1n }).map((b) => b << 5n),
    compatibleFeatures: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    autoclearFeatures: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    refcountOrder: fc.integer({ min: 0, max: 6 }),
    headerLength: fc.constantFrom(104, 112, 120, 256),
    zstd: fc.boolean(),
    backingName: fc.option(fc.string({ unit: 'binary', minLength: 1, maxLength: 80 }).filter((s) => !s.includes('\0'))),
    backingFormat: fc.option(fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 15 }).filter((s) => !s.includes('\0'))),
    dataFile: fc.option(fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }).filter((s) => !s.includes('\0'))),
    unknownExts: fc.uniqueArray(
      fc.record({ type: fc.integer({ min: 1, max: 0xffffffff }), data: fc.uint8Array({ maxLength: 40 }) }),
      { maxLength: 4, selector: (e) => e.type },
    ),
  })
  .map((r): HeaderSpec => {
    const cluster = 1n << BigInt(r.clusterBits);
    const extendedL2 = r.knownBits.includes(4n) && r.clusterBits >= 14 && r.version === 3;
    // Up to the size one L1 table of 2^20 entries can map, so l1_size stays a small number.
    const shift = BigInt(r.clusterBits * 2 - (extendedL2 ? 4 : 3));
    const virtualSize = BigInt(Math.floor(r.sizeFraction * 2 ** 20)) << shift;
    const l1Size = Number((virtualSize + (1n << shift) - 1n) >> shift) + r.l1Slack;
    const zstd = r.version === 3 && r.zstd && r.headerLength > 104;
    let incompat = r.version === 3 ? r.unknownBits : 0n;
    for (const b of r.knownBits) if (r.version === 3 && (b !== 4n || extendedL2)) incompat |= b;
    if (zstd) incompat |= 8n;
    const known = new Set<number>([EXT.backingFormat, EXT.dataFile, EXT.featureTable, EXT.bitmaps, EXT.cryptoHeader]);
    const extensions: ExtensionSpec[] = r.unknownExts.filter((e) => !known.has(e.type));
    if (r.cryptMethod === 2) extensions.push({ type: EXT.cryptoHeader, data: cryptoHeaderExt(cluster * 7n, 4096n) });
    return {
      version: r.version,
      clusterBits: r.clusterBits,
      virtualSize,
      cryptMethod: r.cryptMethod,
      l1Size,
      l1TableOffset: cluster * BigInt(r.l1Cluster),
      refcountTableOffset: cluster * BigInt(r.refcountCluster),
      refcountTableClusters: r.refcountTableClusters,
      nbSnapshots: r.nbSnapshots,
      snapshotsOffset: r.nbSnapshots === 0 ? 0n : cluster * BigInt(r.snapshotsCluster),
      incompatibleFeatures: incompat,
      compatibleFeatures: r.version === 3 ? r.compatibleFeatures : 0n,
      autoclearFeatures: r.version === 3 ? r.autoclearFeatures : 0n,
      refcountOrder: r.version === 3 ? r.refcountOrder : 4,
      headerLength: r.version === 3 ? r.headerLength : 72,
      compressionType: zstd ? 1 : 0,
      backingName: r.backingName ?? undefined,
      backingFormat: r.backingFormat ?? undefined,
      dataFile: r.dataFile ?? undefined,
      extensions,
    };
  })
  // Everything the header declares must fit in the first cluster (a 512-byte cluster holds little).
  .filter((s) => {
    const bytes = writeHeader(s);
    const used = bytes.length > 512 ? bytes.length : 512;
    return used <= 2 ** s.clusterBits;
  });

describe('properties', () => {
  it('arbitrary bytes never throw anything but a Qcow2Error', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 1024 }), (b) => pipeline(b)), { numRuns: RUNS });
  });

  it('arbitrary bytes after the qcow2 magic never throw anything but a Qcow2Error', () => {
    fc.assert(fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 4096 }), fc.option(fc.integer({ min: 0, max: 1 << 30 })),
      (tail, fileSize) => {
        const b = new Uint8Array(4 + tail.length);
        b.set(MAGIC);
        b.set(tail, 4);
        pipeline(b, fileSize ?? undefined);
      }), { numRuns: RUNS });
  });

  /** Mutations of a valid header: byte writes, 32/64-bit field writes at the header's field offsets, truncation. */
  const mutationArb = fc.record({
    bytes: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 8 }),
    fields: fc.array(fc.record({
      at: fc.constantFrom(4, 8, 16, 20, 24, 32, 36, 40, 48, 56, 60, 64, 72, 80, 88, 96, 100, 104, 112, 116, 120, 124),
      value: fc.oneof(fc.constantFrom(0n, 1n, 7n, 8n, 104n, 112n, 0xffffffffn, 1n << 63n, (1n << 64n) - 1n),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
      wide: fc.boolean(),
    }), { maxLength: 4 }),
    truncate: fc.option(fc.nat()),
    fileSize: fc.option(fc.nat({ max: 1 << 24 })),
  });

  type Mutation = typeof mutationArb extends fc.Arbitrary<infer T> ? T : never;

  function mutate(original: Uint8Array, m: Mutation): Uint8Array {
    const b = original.slice();
    const v = new DataView(b.buffer);
    for (const { at, value } of m.bytes) if (b.length > 0) b[at % b.length] = value;
    for (const { at, value, wide } of m.fields) {
      if (wide && at + 8 <= b.length) v.setBigUint64(at, value);
      else if (at + 4 <= b.length) v.setUint32(at, Number(value & 0xffffffffn));
    }
    return m.truncate === null ? b : b.subarray(0, m.truncate % (b.length + 1));
  }

  it('mutations of written headers never throw anything but a Qcow2Error', () => {
    fc.assert(fc.property(specArb, mutationArb, (spec, m) => pipeline(mutate(writeHeader(spec), m), m.fileSize ?? undefined)),
      { numRuns: RUNS });
  });

  it('mutations of the qemu-img fixtures never throw anything but a Qcow2Error', () => {
    const heads = fixtureNames().map((n) => loadFixture(n).bytes);
    fc.assert(fc.property(fc.constantFrom(...heads), mutationArb, (head, m) => pipeline(mutate(head, m), m.fileSize ?? undefined)),
      { numRuns: RUNS });
  });

  it('a 2 MiB buffer of hostile extensions parses quickly', () => {
    // Worst case for the extension walk: a 2 MiB first cluster packed with empty unknown extensions.
    const b = new Uint8Array(2 * 1024 * 1024);
    b.set(writeHeader({ ...writeSpecFor2M(), extensions: [] }).subarray(0, 112));
    const v = new DataView(b.buffer);
    for (let off = 112; off + 8 <= b.length; off += 8) v.setUint32(off, 0x10000000 + off);
    // 262,130 extensions: linear, well under 2 s even on a slow machine (about 0.2 s here).
    pipeline(b, undefined, 2000);
  });

  it('written headers round-trip through parseQcow2Header', () => {
    fc.assert(fc.property(specArb, (spec) => {
      const h = parseQcow2Header(writeHeader(spec));
      assert.equal(h.version, spec.version);
      assert.equal(h.clusterBits, spec.clusterBits);
      assert.equal(h.clusterSize, 2 ** spec.clusterBits);
      assert.equal(h.virtualSize, spec.virtualSize);
      assert.equal(h.cryptMethod, spec.cryptMethod);
      assert.equal(h.encryption, (['none', 'aes', 'luks'] as const)[spec.cryptMethod]);
      assert.equal(h.l1Size, spec.l1Size);
      assert.equal(h.l1TableOffset, spec.l1TableOffset);
      assert.equal(h.refcountTableOffset, spec.refcountTableOffset);
      assert.equal(h.refcountTableClusters, spec.refcountTableClusters);
      assert.equal(h.nbSnapshots, spec.nbSnapshots);
      assert.equal(h.snapshotsOffset, spec.snapshotsOffset);
      assert.equal(h.incompatibleFeatures, spec.incompatibleFeatures);
      assert.equal(h.compatibleFeatures, spec.compatibleFeatures);
      assert.equal(h.autoclearFeatures, spec.autoclearFeatures);
      assert.equal(h.dirty, (spec.incompatibleFeatures & 1n) !== 0n);
      assert.equal(h.corrupt, (spec.incompatibleFeatures & 2n) !== 0n);
      assert.equal(h.hasExternalDataFile, (spec.incompatibleFeatures & 4n) !== 0n);
      assert.equal(h.unknownIncompatibleFeatures, spec.incompatibleFeatures & ~31n);
      assert.equal(h.lazyRefcounts, (spec.compatibleFeatures & 1n) !== 0n);
      assert.equal(h.refcountOrder, spec.refcountOrder);
      assert.equal(h.headerLength, spec.headerLength);
      assert.equal(h.compressionType, spec.compressionType === 1 ? 'zstd' : 'zlib');
      const name = spec.backingName;
      assert.deepEqual(h.backing, name === undefined ? null : { name, format: spec.backingFormat ?? null });
      assert.equal(h.dataFile, spec.dataFile ?? null);
      const types = [
        ...(spec.backingFormat === undefined ? [] : [EXT.backingFormat]),
        ...(spec.dataFile === undefined ? [] : [EXT.dataFile]),
        ...spec.extensions.map((e) => e.type),
      ];
      assert.deepEqual(h.extensions.map((e) => e.type), types);
    }), { numRuns: RUNS });
  });
});

function writeSpecFor2M(): HeaderSpec {
  const c = 1n << 21n;
  return {
    version: 3, clusterBits: 21, virtualSize: 1n << 30n, cryptMethod: 0, l1TableOffset: 3n * c, refcountTableOffset: c,
    refcountTableClusters: 1, nbSnapshots: 0, snapshotsOffset: 0n, incompatibleFeatures: 0n, compatibleFeatures: 0n,
    autoclearFeatures: 0n, refcountOrder: 4, headerLength: 112, compressionType: 0, extensions: [],
  };
}
