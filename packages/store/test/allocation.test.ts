// hasOwnClusters (allocation.ts) against qemu-img's own answer: an overlay "has data" exactly when `qemu-img
// map` shows a range described at depth 0 (data or zeroes), for plain and extended-L2 overlays and random writes.
import assert from 'node:assert/strict';
import { rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import fc from 'fast-check';

import { hasOwnClusters } from '../src/allocation.ts';
import { haveQemuImg, haveQemuIo, mustSh, tempDir } from './helpers.ts';

describe('hasOwnClusters', { skip: haveQemuImg && haveQemuIo ? false : 'qemu-img / qemu-io not installed' }, () => {
  let dir = '';
  const file = (n: string) => join(dir, n);
  before(async () => {
    dir = await tempDir('store-alloc-');
    mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', file('base.qcow2'), '256M']);
    mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 8M', file('base.qcow2')]);
  });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  let n = 0;
  const overlay = (extendedL2 = false): string => {
    const p = file(`ov-${n++}.qcow2`);
    mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', ...(extendedL2 ? ['-o', 'extended_l2=on,cluster_size=128k'] : []), p]);
    return p;
  };
  /** qemu-img's answer: something at depth 0. */
  const mapped = (p: string): boolean => {
    const entries = JSON.parse(mustSh('qemu-img', ['map', '-f', 'qcow2', '--output=json', p])) as Array<{ depth: number; data: boolean; zero: boolean; present?: boolean }>;
    return entries.some((e) => e.depth === 0 && (e.data || e.zero));
  };

  it('an empty overlay has none; data, zeroes over the backing, or a subcluster write are its own', async () => {
    const empty = overlay();
    assert.equal(await hasOwnClusters(empty), false);
    assert.equal(mapped(empty), false);
    const data = overlay();
    mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x22 100M 4k', data]);
    assert.equal(await hasOwnClusters(data), true);
    const zero = overlay();
    mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -z 1M 64k', zero]);
    assert.equal(await hasOwnClusters(zero), true, 'zeroes over backing data change the guest view');
    const ext = overlay(true);
    assert.equal(await hasOwnClusters(ext), false);
    mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 200M 4k', ext]);
    assert.equal(await hasOwnClusters(ext), true);
  });

  it('an L2 table past the end of the file counts as data (the seal\'s qemu-img check reports it); a lost L1 is a header error', async () => {
    // Header, refcount table, refcount block, L1 table, then the L2 table and the data cluster.
    const p = overlay();
    mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x44 0 64k', p]);
    await truncate(p, 4 * 65536);
    assert.equal(await hasOwnClusters(p), true);
    await truncate(p, 3 * 65536);
    await assert.rejects(hasOwnClusters(p), { code: 'QCOW2_ERR_BAD_OFFSET' });
  });

  it('agrees with qemu-img map on random writes, zero writes and discards', async () => {
    const op = fc.record({
      kind: fc.constantFrom('write -P 0x55', 'write -z', 'discard'),
      at: fc.integer({ min: 0, max: 253 }),
      len: fc.constantFrom(4, 64, 512, 2048),
    });
    await fc.assert(fc.asyncProperty(fc.boolean(), fc.array(op, { maxLength: 4 }), async (ext, ops) => {
      const p = overlay(ext);
      const cmds = ops.flatMap((o) => ['-c', `${o.kind} ${o.at}M ${o.len}k`]);
      if (cmds.length > 0) mustSh('qemu-io', ['-f', 'qcow2', ...cmds, p]);
      assert.equal(await hasOwnClusters(p), mapped(p), JSON.stringify({ ext, ops }));
    }), { numRuns: 40 });
  });
});
