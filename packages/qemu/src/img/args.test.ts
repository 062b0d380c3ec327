import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  checkArgs, checkBackingName, commitArgs, compareArgs, convertArgs, createArgs, infoArgs, mapArgs, measureArgs,
  qcow2NoBackingSpec, rebaseArgs,
} from './args.ts';
import { QemuImgInvalidArgumentError } from './errors.ts';

describe('qemu-img argv builders', () => {
  it('always names the format explicitly and passes absolute paths', () => {
    assert.deepEqual(infoArgs('/d/a.qcow2', { format: 'qcow2' }), ['info', '-f', 'qcow2', '--output=json', '/d/a.qcow2']);
    assert.deepEqual(infoArgs('/d/a.qcow2', { format: 'raw', forceShare: true, backingChain: true }),
      ['info', '-f', 'raw', '--output=json', '-U', '--backing-chain', '/d/a.qcow2']);
    const rel = infoArgs('nbd:host:1', { format: 'qcow2' });
    assert.ok(rel.at(-1)!.startsWith('/'), 'a relative "proto:" name becomes an absolute file path');
    assert.deepEqual(mapArgs('/a', { forceShare: true }), ['map', '-f', 'qcow2', '--output=json', '-U', '/a']);
    assert.deepEqual(compareArgs('/a', '/b', { strict: true, forceShare: true, formatB: 'raw' }),
      ['compare', '-f', 'qcow2', '-F', 'raw', '-s', '-U', '/a', '/b']);
  });

  it('check: json spec with backing null, repair, and -U/-r exclusion', () => {
    assert.deepEqual(checkArgs('/s/x.qcow2'), ['check', '-f', 'qcow2', '--output=json', '/s/x.qcow2']);
    const nb = checkArgs('/s/x "q".qcow2', { noBacking: true, forceShare: true });
    assert.deepEqual(nb.slice(0, 5), ['check', '-f', 'qcow2', '--output=json', '-U']);
    const spec = nb[5]!;
    assert.ok(spec.startsWith('json:'));
    assert.deepEqual(JSON.parse(spec.slice(5)), { driver: 'qcow2', backing: null, file: { driver: 'file', filename: '/s/x "q".qcow2' } });
    assert.deepEqual(checkArgs('/a', { repair: 'leaks' }), ['check', '-f', 'qcow2', '--output=json', '-r', 'leaks', '/a']);
    assert.throws(() => checkArgs('/a', { repair: 'all', forceShare: true }), QemuImgInvalidArgumentError);
    assert.throws(() => checkArgs('/a', { noBacking: true, format: 'raw' }), QemuImgInvalidArgumentError);
    assert.match(qcow2NoBackingSpec('/a', { forceShare: true }), /"force-share":true/);
  });

  it('create writes the backing name verbatim with -F and forces qcow2 v3', () => {
    assert.deepEqual(createArgs('/s/ov.qcow2', { backing: { name: 'abc.qcow2', format: 'qcow2' } }),
      ['create', '-q', '-f', 'qcow2', '-b', 'abc.qcow2', '-F', 'qcow2', '-o', 'compat=1.1', '/s/ov.qcow2']);
    assert.deepEqual(createArgs('/s/b.qcow2', { size: 1 << 20, clusterSize: 65536, lazyRefcounts: false }),
      ['create', '-q', '-f', 'qcow2', '-o', 'compat=1.1,cluster_size=65536,lazy_refcounts=off', '/s/b.qcow2', '1048576']);
    assert.throws(() => createArgs('/s/b.qcow2'), QemuImgInvalidArgumentError);
    assert.deepEqual(createArgs('/s/o.qcow2', { backing: { name: 'p.qcow2', format: 'qcow2' }, size: 4096, unsafe: true }),
      ['create', '-q', '-f', 'qcow2', '-b', 'p.qcow2', '-F', 'qcow2', '-u', '-o', 'compat=1.1', '/s/o.qcow2', '4096']);
    assert.throws(() => createArgs('/s/o.qcow2', { backing: { name: 'p.qcow2', format: 'qcow2' }, unsafe: true }), QemuImgInvalidArgumentError);
    assert.throws(() => createArgs('/s/b.qcow2', { size: -1 }), QemuImgInvalidArgumentError);
    assert.throws(() => createArgs('/s/b.qcow2', { size: 1.5 }), QemuImgInvalidArgumentError);
  });

  it('refuses backing names that are protocols, json:, empty, NUL or too long', () => {
    for (const bad of ['', 'json:{"driver":"raw"}', 'nbd://h/x', 'nbd:unix:/s', 'a\0b', 'x'.repeat(1024)]) {
      assert.throws(() => checkBackingName(bad), QemuImgInvalidArgumentError, JSON.stringify(bad));
    }
    assert.equal(checkBackingName('../parent.qcow2'), '../parent.qcow2');
    assert.throws(() => rebaseArgs('/a', { backing: { name: 'http://x', format: 'qcow2' }, unsafe: true }), QemuImgInvalidArgumentError);
  });

  it('convert, rebase, commit, measure', () => {
    assert.deepEqual(convertArgs('/a', '/b', { sourceFormat: 'raw', compress: true, progress: true, forceShare: true,
      backing: { name: 'p.qcow2', format: 'qcow2' } }),
    ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'compat=1.1', '-U', '-c', '-p', '-B', 'p.qcow2', '-F', 'qcow2', '/a', '/b']);
    assert.deepEqual(rebaseArgs('/a', { backing: { name: 'p.qcow2', format: 'qcow2' }, unsafe: true }),
      ['rebase', '-f', 'qcow2', '-u', '-b', 'p.qcow2', '-F', 'qcow2', '/a']);
    assert.deepEqual(rebaseArgs('/a', { backing: null }), ['rebase', '-f', 'qcow2', '-b', '', '/a']);
    assert.deepEqual(commitArgs('/a', { keepTop: true, progress: true }), ['commit', '-f', 'qcow2', '-d', '-p', '/a']);
    assert.deepEqual(measureArgs({ size: 1024 }), ['measure', '--output=json', '-O', 'qcow2', '-o', 'compat=1.1', '--size', '1024']);
    assert.deepEqual(measureArgs({ path: '/a', format: 'raw', forceShare: true }),
      ['measure', '--output=json', '-O', 'qcow2', '-o', 'compat=1.1', '-f', 'raw', '-U', '/a']);
  });
});
