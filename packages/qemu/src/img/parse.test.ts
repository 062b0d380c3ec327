import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { classify } from './classify.ts';
import { createProgressParser, parseCheck, parseInfo, parseInfoChain, parseMap, parseMeasure } from './parse.ts';

// Output recorded from qemu-img 7.2.22.
const INFO = `{
    "backing-filename-format": "qcow2", "virtual-size": 67108864, "filename": "ov.qcow2", "cluster-size": 65536,
    "format": "qcow2", "actual-size": 200704,
    "format-specific": { "type": "qcow2", "data": { "compat": "1.1", "compression-type": "zlib",
      "lazy-refcounts": false, "refcount-bits": 16, "corrupt": false, "extended-l2": false } },
    "full-backing-filename": "base.qcow2", "backing-filename": "base.qcow2", "dirty-flag": false }`;

describe('qemu-img output parsers', () => {
  it('parses info and info --backing-chain', () => {
    const i = parseInfo(INFO);
    assert.equal(i.virtualSize, 67108864);
    assert.equal(i.backingFilename, 'base.qcow2');
    assert.equal(i.backingFormat, 'qcow2');
    assert.equal(i.compat, '1.1');
    assert.equal(i.corrupt, false);
    assert.equal(i.dirty, false);
    const raw = parseInfo('{"virtual-size": 1048576, "filename": "r.raw", "format": "raw", "actual-size": 4096, "dirty-flag": false}');
    assert.equal(raw.backingFilename, null);
    assert.equal(raw.corrupt, null);
    assert.equal(parseInfoChain(`[${INFO}, ${INFO}]`).length, 2);
    assert.throws(() => parseInfo('[]'), TypeError);
    assert.throws(() => parseInfo('{"filename":"x","format":"qcow2","virtual-size":"big"}'), TypeError);
    assert.throws(() => parseInfo('nope'), TypeError);
  });

  it('parses check (zero counters omitted), map and measure', () => {
    const c = parseCheck('{"image-end-offset": 327680, "total-clusters": 1024, "check-errors": 0, "leaks": 1, "filename": "l", "format": "qcow2"}');
    assert.equal(c.leaks, 1);
    assert.equal(c.corruptions, 0);
    assert.equal(c.imageEndOffset, 327680);
    const m = parseMap('[{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680},\n'
      + '{ "start": 65536, "length": 458752, "depth": 1, "present": false, "zero": true, "data": false}]');
    assert.equal(m.length, 2);
    assert.equal(m[0]!.offset, 327680);
    assert.equal(m[1]!.offset, null);
    assert.deepEqual(parseMeasure('{"bitmaps": 0, "required": 33882112, "fully-allocated": 67436544}'),
      { required: 33882112, fullyAllocated: 67436544, bitmaps: 0 });
  });

  it('parses -p progress across chunk boundaries, once per value', () => {
    const seen: number[] = [];
    const feed = createProgressParser((p) => seen.push(p.percent));
    feed('    (0.00/100%)\r    (6.2');
    feed('5/100%)\r    (6.25/100%)\r    (100.00/100%)\r\n');
    assert.deepEqual(seen, [0, 6.25, 100]);
  });
});

describe('classify', () => {
  const base = { exitCode: 1, signal: null, stderr: '', limited: true, timedOut: false, aborted: false } as const;
  it('maps exits, signals and messages to outcomes', () => {
    assert.equal(classify({ ...base, exitCode: 2 }, [0, 2]).kind, 'ok');
    assert.equal(classify({ ...base }, [0]).kind, 'failed');
    assert.deepEqual(classify({ ...base, exitCode: null, signal: 'SIGKILL' }, [0]), { kind: 'limit', limit: 'cpu' });
    assert.deepEqual(classify({ ...base, exitCode: null, signal: 'SIGXCPU' }, [0]), { kind: 'limit', limit: 'cpu' });
    assert.deepEqual(classify({ ...base, exitCode: null, signal: 'SIGABRT' }, [0]), { kind: 'limit', limit: 'address-space' });
    assert.deepEqual(classify({ ...base, stderr: 'qemu-img: failed to allocate 1234 bytes' }, [0]), { kind: 'limit', limit: 'address-space' });
    assert.equal(classify({ ...base, limited: false, exitCode: null, signal: 'SIGKILL' }, [0]).kind, 'failed');
    assert.deepEqual(classify({ ...base, exitCode: null, signal: 'SIGKILL', timedOut: true }, [0]), { kind: 'limit', limit: 'wall-clock' });
    assert.equal(classify({ ...base, exitCode: null, signal: 'SIGKILL', aborted: true }, [0]).kind, 'aborted');
    assert.equal(classify({ ...base, stderr: 'qemu-img: Could not open \'x\': Failed to get shared "write" lock' }, [0]).kind, 'locked');
    assert.equal(classify({ ...base, exitCode: 127, stderr: 'prlimit: failed to execute /x/qemu-img: No such file or directory' }, [0]).kind, 'missing');
  });
});
