// Fixtures made by real qemu-img (fixtures/make-fixtures.sh): our parse must agree with qemu-img info on
// every one, and the policies must give the answer DESIGN.md asks for.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  checkImageHeader, checkUntrustedLayer, detectImageFormat, listImageViolations, parseQcow2Header, type Qcow2Header,
} from '../src/index.ts';
import { fixtureNames, loadFixture } from './helpers/fixtures.ts';
import { assertMatchesQemuInfo, virtualSizeFromJson } from './helpers/qemu-info.ts';

const names = fixtureNames();

describe('qemu-img fixtures: parse agrees with qemu-img info', () => {
  it('has the fixtures the brief asks for', () => {
    for (const n of ['v3', 'v2', 'cluster-512', 'cluster-64k', 'cluster-2m', 'backing', 'backing-no-format', 'data-file',
      'lazy', 'dirty', 'luks', 'zstd', 'extended-l2', 'huge']) {
      assert.ok(names.includes(n), `fixture ${n} is missing: run make-fixtures.sh`);
    }
  });

  for (const name of names) {
    it(name, () => {
      const { bytes, json, jsonText: text } = loadFixture(name);
      assert.equal(detectImageFormat(bytes), 'qcow2');
      const header = parseQcow2Header(bytes, { fileSize: json.fileSize });
      if (json.info === null) {
        // qemu-img refused to open it; so must our policies.
        assert.equal(json.qemuRefuses, true);
        assert.ok(listImageViolations(header).some((e) => e.code === 'QCOW2_ERR_UNKNOWN_INCOMPATIBLE_FEATURE'));
        return;
      }
      assertMatchesQemuInfo(header, json.info, virtualSizeFromJson(text));
    });
  }
});

describe('qemu-img fixtures: policy verdicts', () => {
  const parent = 'base.qcow2';
  const layerVerdict = (name: string): string | null => {
    try {
      checkUntrustedLayer(loadFixture(name).header, parent);
      return null;
    } catch (e) {
      return (e as { code: string }).code;
    }
  };
  const imageVerdict = (name: string): string | null => {
    try {
      checkImageHeader(loadFixture(name).header);
      return null;
    } catch (e) {
      return (e as { code: string }).code;
    }
  };

  const layers: Record<string, string | null> = {
    'backing': null,
    'v2-backing': 'QCOW2_ERR_VERSION_NOT_ALLOWED',
    'backing-no-format': 'QCOW2_ERR_BACKING_FORMAT_MISSING',
    'backing-raw': 'QCOW2_ERR_BACKING_FORMAT_NOT_QCOW2',
    'backing-abs': 'QCOW2_ERR_BACKING_FORMAT_NOT_QCOW2',
    'backing-json': 'QCOW2_ERR_BACKING_FORMAT_NOT_QCOW2',
    'v3': 'QCOW2_ERR_BACKING_MISSING',
    'dirty': 'QCOW2_ERR_DIRTY_IMAGE',
    'corrupt': 'QCOW2_ERR_CORRUPT_IMAGE',
    'data-file': 'QCOW2_ERR_EXTERNAL_DATA_FILE',
    'luks': 'QCOW2_ERR_ENCRYPTED',
    'huge': 'QCOW2_ERR_VIRTUAL_SIZE_TOO_LARGE',
    'snapshot': 'QCOW2_ERR_SNAPSHOTS_PRESENT',
    'unknown-incompat': 'QCOW2_ERR_UNKNOWN_INCOMPATIBLE_FEATURE',
  };
  for (const [name, code] of Object.entries(layers)) {
    it(`layer ${name} → ${code ?? 'accepted'}`, () => assert.equal(layerVerdict(name), code));
  }

  const images: Record<string, string | null> = {
    'v3': null, 'v2': null, 'cluster-512': null, 'cluster-64k': null, 'cluster-2m': null, 'refcount-1': null,
    'refcount-64': null, 'lazy': null, 'zstd': null, 'extended-l2': null,
    'backing': 'QCOW2_ERR_UNEXPECTED_BACKING',
    'dirty': 'QCOW2_ERR_DIRTY_IMAGE',
    'data-file-raw': 'QCOW2_ERR_EXTERNAL_DATA_FILE',
    'luks': 'QCOW2_ERR_ENCRYPTED',
    'huge': 'QCOW2_ERR_VIRTUAL_SIZE_TOO_LARGE',
  };
  for (const [name, code] of Object.entries(images)) {
    it(`image ${name} → ${code ?? 'accepted'}`, () => assert.equal(imageVerdict(name), code));
  }

  it('the absolute and json: backing names are also refused by name', () => {
    const abs = loadFixture('backing-abs').header;
    assert.equal(abs.backing?.name, '/etc/passwd');
    const json = loadFixture('backing-json').header;
    assert.equal(json.backing?.name, 'json:{"file.filename":"/etc/passwd"}');
    // Even with the format patched to qcow2, the name alone refuses them.
    for (const h of [abs, json]) {
      const forged: Qcow2Header = { ...h, backing: { name: h.backing?.name ?? '', format: 'qcow2' } };
      assert.throws(() => checkUntrustedLayer(forged, parent), { code: 'QCOW2_ERR_BACKING_NAME_MISMATCH' });
    }
  });

  it('the 1 EiB image keeps its size exactly (no float rounding)', () => {
    assert.equal(loadFixture('huge').header.virtualSize, 1n << 60n);
  });

  it('the renamed backing-format extension is listed as an unknown extension', () => {
    const h = loadFixture('backing-no-format').header;
    assert.equal(h.extensions[0]?.type, 0x524f414d);
    assert.equal(h.backing?.format, null);
  });
});
