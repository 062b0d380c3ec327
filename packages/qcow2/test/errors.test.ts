// The error catalogue: stable unique codes, names, JSON shape, causes.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import * as api from '../src/index.ts';
import { describe, it } from 'node:test';

describe('errors', () => {
  const source = readFileSync(new URL('../src/errors.ts', import.meta.url), 'utf8');
  const codes = [...source.matchAll(/super\(\s*'(QCOW2_ERR_[A-Z0-9_]+)'/g)].map((m) => m[1] ?? '');
  const classes = [...source.matchAll(/^export class (\w+) extends/gm)].map((m) => m[1] ?? '');

  it('every concrete error class has its own code, and the header comment lists them all', () => {
    const extra = ['QCOW2_ERR_BACKING_FORMAT_NOT_QCOW2', 'QCOW2_ERR_BACKING_FORMAT_MISSING']; // passed via a parameter
    const all = [...codes, ...extra];
    assert.equal(new Set(all).size, all.length, 'codes are unique');
    assert.equal(all.length, classes.length);
    const header = source.slice(0, source.indexOf('import '));
    for (const c of [...all, ...classes]) assert.ok(header.includes(c), `${c} is missing from the tree in the header comment`);
  });

  it('every class is exported from the package index', () => {
    const exported = api as unknown as Record<string, unknown>;
    for (const c of classes) assert.equal(typeof exported[c], 'function', `${c} is not exported`);
  });

  it('errors carry name, code, data, cause, and serialise as { name, code, message, data }', () => {
    const cause = new Error('inner');
    const e = new api.BackingNameMismatchError('/etc/passwd', 'x.qcow2', { cause });
    assert.equal(e.name, 'BackingNameMismatchError');
    assert.equal(e.cause, cause);
    assert.ok(e instanceof api.Qcow2PolicyError && e instanceof api.Qcow2Error && e instanceof Error);
    assert.deepEqual(JSON.parse(JSON.stringify(e)), {
      name: 'BackingNameMismatchError', code: 'QCOW2_ERR_BACKING_NAME_MISMATCH',
      message: "layer's backing file is '/etc/passwd' but must be exactly 'x.qcow2'",
      data: { found: '/etc/passwd', expected: 'x.qcow2' },
    });
    assert.ok(Object.isFrozen(e.data));
  });

  it('a missing backing format is also a wrong backing format', () => {
    const e = new api.BackingFormatMissingError();
    assert.equal(e.code, 'QCOW2_ERR_BACKING_FORMAT_MISSING');
    assert.ok(e instanceof api.BackingFormatNotQcow2Error);
    assert.equal(new api.BackingFormatNotQcow2Error('raw').code, 'QCOW2_ERR_BACKING_FORMAT_NOT_QCOW2');
  });
});
