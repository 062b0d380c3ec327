import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { LineSplitter, LineTooLongError } from './framing.ts';

describe('LineSplitter', () => {
  it('splits on LF and strips the CR of CRLF (qmp-spec 2.1.1)', () => {
    const s = new LineSplitter();
    assert.deepEqual(s.push('{"a":1}\r\n{"b":2}\n{"c"'), ['{"a":1}', '{"b":2}']);
    assert.deepEqual(s.push(':3}\r\n'), ['{"c":3}']);
    assert.equal(s.rest(), '');
  });

  it('reassembles multi-byte UTF-8 split across chunks', () => {
    const s = new LineSplitter();
    const bytes = new TextEncoder().encode('"é✓"\n');
    const lines: string[] = [];
    for (const b of bytes) lines.push(...s.push(new Uint8Array([b])));
    assert.deepEqual(lines, ['"é✓"']);
  });

  it('refuses to buffer a line beyond the limit', () => {
    const s = new LineSplitter(10);
    assert.deepEqual(s.push('12345'), []);
    assert.throws(() => s.push('678901'), LineTooLongError);
  });

  it('keeps an unterminated tail for rest()', () => {
    const s = new LineSplitter();
    s.push('abc\nde');
    assert.equal(s.rest(), 'de');
  });
});
