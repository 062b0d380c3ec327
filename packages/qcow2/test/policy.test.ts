// One test per policy violation (checkUntrustedLayer, checkImageHeader), on headers built by the test writer.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  BackingFormatMissingError, BackingFormatNotQcow2Error, BackingNameMismatchError, checkImageHeader, checkUntrustedLayer,
  DEFAULT_LAYER_POLICY, type LayerPolicy, listUntrustedLayerViolations, parseQcow2Header, Qcow2Error, Qcow2PolicyError,
} from '../src/index.ts';
import { baseSpec, cryptoHeaderExt, EXT, featureTable, type HeaderSpec, layerSpec, writeHeader } from './helpers/header-writer.ts';

const PARENT = '3f9a0c1e5b7d2a4c6e8f0a1b3c5d7e9f1a2b3c4d5e6f708192a3b4c5d6e7f809.qcow2';

const layer = (overrides: Partial<HeaderSpec> = {}) => parseQcow2Header(writeHeader(layerSpec(PARENT, overrides)));

/** Asserts that the layer is refused with `code`, that the error is a policy error, and returns it. */
function refusedLayer(overrides: Partial<HeaderSpec>, code: string, policy?: Partial<LayerPolicy>): Qcow2PolicyError {
  const h = layer(overrides);
  let caught: unknown;
  try {
    checkUntrustedLayer(h, PARENT, policy);
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof Qcow2PolicyError, `expected a policy error, got ${String(caught)}`);
  assert.equal(caught.code, code);
  assert.ok(caught.message.length > 0);
  assert.doesNotThrow(() => JSON.stringify(caught), 'error data must be JSON-safe');
  return caught;
}

describe('checkUntrustedLayer', () => {
  it('accepts a clean version 3 layer naming its parent with format qcow2', () => {
    assert.doesNotThrow(() => checkUntrustedLayer(layer(), PARENT));
    assert.deepEqual(listUntrustedLayerViolations(layer(), PARENT), []);
  });

  describe('backing name must be exactly the expected parent', () => {
    for (const name of [
      '/etc/passwd',
      '../x',
      `../${PARENT}`,
      `./${PARENT}`,
      'json:{"file.filename":"/etc/passwd"}',
      'nbd://127.0.0.1/x',
      'http://x/y',
      'https://x/y.qcow2',
      'file:/etc/shadow',
      `${PARENT} `,
      PARENT.toUpperCase(),
      `/srv/roamdesk/layers/${PARENT}`,
    ]) {
      it(`refuses ${JSON.stringify(name)}`, () => {
        const e = refusedLayer({ backingName: name }, 'QCOW2_ERR_BACKING_NAME_MISMATCH');
        assert.ok(e instanceof BackingNameMismatchError);
        assert.deepEqual(e.data, { found: name, expected: PARENT });
      });
    }

    it('names the problem in the message', () => {
      const e = refusedLayer({ backingName: '/etc/passwd' }, 'QCOW2_ERR_BACKING_NAME_MISMATCH');
      assert.equal(e.message, `layer's backing file is '/etc/passwd' but must be exactly '${PARENT}'`);
    });

    it('escapes control and bidi characters of a hostile name in the message, keeps it raw in data', () => {
      const name = 'evil\x1b[2J\u202e.qcow2';
      const e = refusedLayer({ backingName: name }, 'QCOW2_ERR_BACKING_NAME_MISMATCH');
      assert.ok(!e.message.includes('\x1b') && !e.message.includes('\u202e'));
      assert.match(e.message, /\\u\{1b\}\[2J\\u\{202e\}/);
      assert.equal(e.data.found, name);
    });
  });

  it('refuses a layer without a backing file', () => {
    refusedLayer({ backingName: undefined, backingFormat: undefined }, 'QCOW2_ERR_BACKING_MISSING');
  });

  it('refuses a missing backing format (QEMU would probe the parent)', () => {
    const e = refusedLayer({ backingFormat: undefined }, 'QCOW2_ERR_BACKING_FORMAT_MISSING');
    assert.ok(e instanceof BackingFormatMissingError);
    assert.ok(e instanceof BackingFormatNotQcow2Error, 'a missing format is a kind of wrong format');
  });

  it('refuses a raw backing format', () => {
    const e = refusedLayer({ backingFormat: 'raw' }, 'QCOW2_ERR_BACKING_FORMAT_NOT_QCOW2');
    assert.deepEqual(e.data, { format: 'raw' });
  });

  it('refuses other backing formats, even near-misses', () => {
    for (const f of ['QCOW2', 'qcow', 'vmdk', 'qcow2 ']) refusedLayer({ backingFormat: f }, 'QCOW2_ERR_BACKING_FORMAT_NOT_QCOW2');
  });

  it('refuses version 2 (compat=0.10)', () => {
    const e = refusedLayer({ version: 2 }, 'QCOW2_ERR_VERSION_NOT_ALLOWED');
    assert.deepEqual(e.data, { subject: 'layer', version: 2, allowed: [3] });
  });

  it('refuses the dirty bit', () => {
    refusedLayer({ incompatibleFeatures: 1n }, 'QCOW2_ERR_DIRTY_IMAGE');
  });
  it('refuses the corrupt bit', () => {
    refusedLayer({ incompatibleFeatures: 2n }, 'QCOW2_ERR_CORRUPT_IMAGE');
  });

  it('refuses an external data file (incompatible bit 2 and extension 0x44415441)', () => {
    const e = refusedLayer({ incompatibleFeatures: 4n, dataFile: '/dev/sda' }, 'QCOW2_ERR_EXTERNAL_DATA_FILE');
    assert.equal(e.data.dataFile, '/dev/sda');
  });

  it('refuses an external data file bit without a name, and a name without the bit', () => {
    refusedLayer({ incompatibleFeatures: 4n }, 'QCOW2_ERR_EXTERNAL_DATA_FILE');
    refusedLayer({ dataFile: 'data.raw' }, 'QCOW2_ERR_EXTERNAL_DATA_FILE');
  });

  it('refuses an unknown incompatible bit, naming it from the feature name table', () => {
    const e = refusedLayer({
      incompatibleFeatures: 1n << 9n,
      extensions: [{ type: EXT.featureTable, data: featureTable([{ kind: 0, bit: 9, name: 'time travel' }]) }],
    }, 'QCOW2_ERR_UNKNOWN_INCOMPATIBLE_FEATURE');
    assert.deepEqual(e.data, { subject: 'layer', bits: [9], names: ['time travel'] });
    assert.match(e.message, /bit 9 \('time travel'\)/);
  });

  it('refuses the highest incompatible bit (63)', () => {
    const e = refusedLayer({ incompatibleFeatures: 1n << 63n }, 'QCOW2_ERR_UNKNOWN_INCOMPATIBLE_FEATURE');
    assert.deepEqual(e.data.bits, [63]);
  });

  it('accepts the known non-default features: zstd compression and extended L2', () => {
    assert.doesNotThrow(() => checkUntrustedLayer(layer({ incompatibleFeatures: 8n, compressionType: 1 }), PARENT));
    assert.doesNotThrow(() => checkUntrustedLayer(layer({ incompatibleFeatures: 16n }), PARENT));
  });

  it('refuses legacy AES encryption', () => {
    const e = refusedLayer({ cryptMethod: 1 }, 'QCOW2_ERR_ENCRYPTED');
    assert.equal(e.data.encryption, 'aes');
  });

  it('refuses LUKS encryption unless the policy allows it; AES even then', () => {
    const luks: Partial<HeaderSpec> = {
      cryptMethod: 2, extensions: [{ type: EXT.cryptoHeader, data: cryptoHeaderExt(0x10000n, 0x1000n) }],
    };
    refusedLayer(luks, 'QCOW2_ERR_ENCRYPTED');
    assert.doesNotThrow(() => checkUntrustedLayer(layer(luks), PARENT, { allowLuks: true }));
    refusedLayer({ cryptMethod: 1 }, 'QCOW2_ERR_ENCRYPTED', { allowLuks: true });
  });

  it('refuses a virtual size above the policy', () => {
    refusedLayer({ virtualSize: DEFAULT_LAYER_POLICY.maxVirtualSize + 512n }, 'QCOW2_ERR_VIRTUAL_SIZE_TOO_LARGE');
    refusedLayer({ virtualSize: 2n << 20n }, 'QCOW2_ERR_VIRTUAL_SIZE_TOO_LARGE', { maxVirtualSize: 1n << 20n });
    assert.doesNotThrow(() => checkUntrustedLayer(layer({ virtualSize: DEFAULT_LAYER_POLICY.maxVirtualSize }), PARENT));
  });

  it('refuses a virtual size other than the expected one', () => {
    const e = refusedLayer({ virtualSize: 2n << 20n }, 'QCOW2_ERR_VIRTUAL_SIZE_MISMATCH', { expectedVirtualSize: 1n << 20n });
    assert.deepEqual(e.data, { subject: 'layer', virtualSize: String(2n << 20n), expected: String(1n << 20n) });
    assert.doesNotThrow(() => checkUntrustedLayer(layer(), PARENT, { expectedVirtualSize: 1n << 20n }));
  });

  it('refuses an L1 table above the policy and above QEMU\'s limit', () => {
    refusedLayer({ l1Size: 100 }, 'QCOW2_ERR_L1_TABLE_TOO_LARGE', { maxL1Entries: 99 });
    // A larger policy value cannot lift QEMU's own 32 MiB limit.
    refusedLayer({ l1Size: 4 * 1024 * 1024 + 1 }, 'QCOW2_ERR_L1_TABLE_TOO_LARGE', { maxL1Entries: 2 ** 31 });
  });

  it('refuses a refcount table above the policy and above QEMU\'s 8 MiB limit', () => {
    refusedLayer({ refcountTableClusters: 3 }, 'QCOW2_ERR_REFCOUNT_TABLE_TOO_LARGE', { maxRefcountTableClusters: 2 });
    const e = refusedLayer({ refcountTableClusters: 129 }, 'QCOW2_ERR_REFCOUNT_TABLE_TOO_LARGE');
    assert.equal(e.data.bytes, String(129 * 65536));
  });

  it('refuses internal snapshots unless allowed', () => {
    const snap: Partial<HeaderSpec> = { nbSnapshots: 2, snapshotsOffset: 5n << 16n };
    refusedLayer(snap, 'QCOW2_ERR_SNAPSHOTS_PRESENT');
    assert.doesNotThrow(() => checkUntrustedLayer(layer(snap), PARENT, { allowSnapshots: true }));
  });

  it('ignores undefined policy values from JavaScript callers instead of dropping the limit', () => {
    const policy = { maxVirtualSize: undefined } as unknown as Partial<LayerPolicy>;
    refusedLayer({ virtualSize: 1n << 50n }, 'QCOW2_ERR_VIRTUAL_SIZE_TOO_LARGE', policy);
  });

  it('lists every violation, in order, and throws the first', () => {
    const h = layer({ version: 2, backingFormat: 'raw', backingName: '/etc/passwd', virtualSize: 1n << 50n });
    assert.deepEqual(listUntrustedLayerViolations(h, PARENT).map((e) => e.code), [
      'QCOW2_ERR_VERSION_NOT_ALLOWED', 'QCOW2_ERR_VIRTUAL_SIZE_TOO_LARGE',
      'QCOW2_ERR_BACKING_FORMAT_NOT_QCOW2', 'QCOW2_ERR_BACKING_NAME_MISMATCH',
    ]);
    assert.throws(() => checkUntrustedLayer(h, PARENT), { code: 'QCOW2_ERR_VERSION_NOT_ALLOWED' });
  });

  it('rejects an expectedParent that is not a plain file name (a caller bug)', () => {
    for (const bad of ['', '.', '..', '../x.qcow2', '/abs.qcow2', 'json:{}', 'nbd://h/x', 'a/b.qcow2']) {
      assert.throws(() => checkUntrustedLayer(layer({ backingName: bad === '' ? 'x' : bad }), bad), RangeError);
    }
  });

  it('every violation is a Qcow2Error with a QCOW2_ERR_ code, a name and JSON-safe data', () => {
    const h = layer({
      version: 2, cryptMethod: 1, virtualSize: 1n << 50n, nbSnapshots: 1, snapshotsOffset: 5n << 16n,
      refcountTableClusters: 200, backingFormat: 'raw', backingName: '../x',
    });
    const errors = listUntrustedLayerViolations(h, PARENT);
    assert.ok(errors.length >= 6);
    for (const e of errors) {
      assert.ok(e instanceof Qcow2Error);
      assert.match(e.code, /^QCOW2_ERR_[A-Z0-9_]+$/);
      assert.match(e.name, /Error$/);
      JSON.parse(JSON.stringify(e));
    }
  });
});

describe('checkImageHeader', () => {
  const image = (overrides: Partial<HeaderSpec> = {}) => parseQcow2Header(writeHeader(baseSpec(overrides)));
  const refusedImage = (overrides: Partial<HeaderSpec>, code: string, policy?: Partial<LayerPolicy>): void => {
    assert.throws(() => checkImageHeader(image(overrides), policy), (e: unknown) => {
      assert.ok(e instanceof Qcow2PolicyError);
      assert.equal(e.code, code);
      assert.equal(e.data.subject ?? 'image', 'image');
      return true;
    });
  };

  it('accepts clean version 2 and version 3 images', () => {
    assert.doesNotThrow(() => checkImageHeader(image()));
    assert.doesNotThrow(() => checkImageHeader(image({ version: 2 })));
  });

  it('refuses an image with a backing file', () => {
    refusedImage({ backingName: 'base.qcow2', backingFormat: 'qcow2' }, 'QCOW2_ERR_UNEXPECTED_BACKING');
    refusedImage({ backingName: '/etc/passwd' }, 'QCOW2_ERR_UNEXPECTED_BACKING');
  });
  it('refuses an external data file', () => refusedImage({ incompatibleFeatures: 4n, dataFile: 'x' }, 'QCOW2_ERR_EXTERNAL_DATA_FILE'));
  it('refuses encryption', () => refusedImage({ cryptMethod: 1 }, 'QCOW2_ERR_ENCRYPTED'));
  it('refuses the dirty bit', () => refusedImage({ incompatibleFeatures: 1n }, 'QCOW2_ERR_DIRTY_IMAGE'));
  it('refuses the corrupt bit', () => refusedImage({ incompatibleFeatures: 2n }, 'QCOW2_ERR_CORRUPT_IMAGE'));
  it('refuses unknown incompatible bits', () => refusedImage({ incompatibleFeatures: 1n << 5n }, 'QCOW2_ERR_UNKNOWN_INCOMPATIBLE_FEATURE'));
  it('refuses huge sizes', () => refusedImage({ virtualSize: 1n << 60n, clusterBits: 21 }, 'QCOW2_ERR_VIRTUAL_SIZE_TOO_LARGE'));
  it('refuses internal snapshots', () => refusedImage({ nbSnapshots: 1, snapshotsOffset: 5n << 16n }, 'QCOW2_ERR_SNAPSHOTS_PRESENT'));
});
