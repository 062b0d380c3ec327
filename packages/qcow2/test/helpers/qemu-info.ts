// Compares our parse of a header with what `qemu-img info -f qcow2 --output=json` says about the same file:
// qemu-img is the oracle (the go-qcow2reader habit, notes/style.md §7).

import assert from 'node:assert/strict';

import type { Qcow2Header } from '../../src/index.ts';

/** The parts of qemu-img's JSON we compare. Everything is optional: qemu-img omits absent things. */
export interface QemuImgInfo {
  'virtual-size': number;
  'cluster-size'?: number;
  'format': string;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
  'dirty-flag'?: boolean;
  'encrypted'?: boolean;
  'snapshots'?: unknown[];
  'format-specific'?: {
    type: string;
    data: {
      'compat'?: string;
      'lazy-refcounts'?: boolean;
      'refcount-bits'?: number;
      'corrupt'?: boolean;
      'extended-l2'?: boolean;
      'compression-type'?: string;
      'data-file'?: string;
      'data-file-raw'?: boolean;
      'encrypt'?: { format: string };
    };
  };
}

/** virtual-size may exceed 2^53: read it from the JSON text, not from the parsed number. */
export function virtualSizeFromJson(text: string): bigint {
  const m = /"virtual-size":\s*(\d+)/.exec(text);
  assert.ok(m?.[1] !== undefined, 'qemu-img info JSON has no virtual-size');
  return BigInt(m[1]);
}

export function assertMatchesQemuInfo(h: Qcow2Header, info: QemuImgInfo, virtualSize: bigint): void {
  assert.equal(info.format, 'qcow2');
  assert.equal(h.virtualSize, virtualSize, 'virtual size');
  assert.equal(h.clusterSize, info['cluster-size'], 'cluster size');
  assert.equal(h.dirty, info['dirty-flag'] ?? false, 'dirty flag');
  assert.equal(h.backing?.name ?? null, info['backing-filename'] ?? null, 'backing file name');
  assert.equal(h.backing?.format ?? null, info['backing-filename-format'] ?? null, 'backing file format');
  assert.equal(h.encryption !== 'none', info.encrypted ?? false, 'encrypted');
  assert.equal(h.nbSnapshots, info.snapshots?.length ?? 0, 'number of snapshots');

  const d = info['format-specific']?.data;
  assert.ok(d, 'qemu-img info has no format-specific data');
  assert.equal(h.version === 3 ? '1.1' : '0.10', d.compat, 'compat level');
  assert.equal(h.lazyRefcounts, d['lazy-refcounts'] ?? false, 'lazy refcounts');
  assert.equal(2 ** h.refcountOrder, d['refcount-bits'], 'refcount bits');
  assert.equal(h.corrupt, d.corrupt ?? false, 'corrupt');
  if (h.version === 3) {
    assert.equal(h.extendedL2, d['extended-l2'], 'extended L2');
    assert.equal(h.compressionType, d['compression-type'], 'compression type');
  }
  assert.equal(h.dataFile, d['data-file'] ?? null, 'data file');
  assert.equal((h.autoclearFeatures & 2n) !== 0n, d['data-file-raw'] ?? false, 'data-file-raw (autoclear bit 1)');
  assert.equal(h.encryption === 'luks' ? 'luks' : null, d.encrypt?.format ?? null, 'encryption format');
}
