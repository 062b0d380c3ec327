import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Compile } from 'typebox/compile';
import { isObjectId, isUuid, isValidName, Name, NAME_MAX_LENGTH } from './names.ts';

const nameSchema = Compile(Name);

describe('names', () => {
  it('accepts ordinary names', () => {
    for (const n of ['a', '0', 'alice', 'debian-12', 'x.y_z-1', 'a'.repeat(NAME_MAX_LENGTH)]) {
      assert.ok(isValidName(n), n);
      assert.ok(nameSchema.Check(n), n);
    }
  });

  it('rejects path-like and malformed names', () => {
    const bad = [
      '', '.', '..', '../x', 'x/..', 'a..b', 'a/b', '/abs', '\\x', '%2e%2e', '%2e%2e%2f', 'a\u0000b', '\u0000',
      '-lead', '_lead', '.hidden', 'UPPER', 'sp ace', 'tab\t', 'new\nline', 'a'.repeat(NAME_MAX_LENGTH + 1),
      'x'.repeat(10 * 1024 * 1024), '\u2024\u2024', '\uff0e\uff0e', 'caf\u00e9', 'a\u2215b', 'ａｂ',
    ];
    for (const n of bad) {
      assert.equal(isValidName(n), false, JSON.stringify(n.slice(0, 20)));
      assert.equal(nameSchema.Check(n), false, JSON.stringify(n.slice(0, 20)));
    }
    assert.equal(isValidName(42), false);
    assert.equal(isValidName(null), false);
  });

  it('property: the validator and the schema agree, and nothing accepted can act as a path', () => {
    const alphabet = fc.constantFrom(...'abz09._-/\\%\u0000\u2024\uff0e A'.split(''));
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: alphabet, maxLength: 80 })), (s) => {
        const ok = isValidName(s);
        assert.equal(nameSchema.Check(s), ok);
        if (ok) {
          assert.ok(!s.includes('/') && !s.includes('\\') && !s.includes('\u0000') && !s.includes('..'));
          assert.ok(s !== '.' && s.length <= NAME_MAX_LENGTH);
          assert.match(s, /^[a-z0-9]/);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('property: every name built from the allowed alphabet without ".." is accepted', () => {
    const first = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789'.split(''));
    const rest = fc.string({ unit: fc.constantFrom(...'abcxyz019._-'.split('')), maxLength: 62 });
    fc.assert(
      fc.property(first, rest, (f, r) => {
        const s = f + r;
        assert.equal(isValidName(s), !s.includes('..'));
      }),
    );
  });

  it('validates object ids and uuids', () => {
    assert.ok(isObjectId('a'.repeat(64)));
    assert.ok(!isObjectId('A'.repeat(64)));
    assert.ok(!isObjectId('a'.repeat(63)));
    assert.ok(!isObjectId('../' + 'a'.repeat(61)));
    assert.ok(isUuid('0b8a4f1e-1c2d-4e5f-8a9b-0c1d2e3f4a5b'));
    assert.ok(!isUuid('0B8A4F1E-1C2D-4E5F-8A9B-0C1D2E3F4A5B'));
    assert.ok(!isUuid('../../etc/passwd'));
  });
});
