// ResponseParser (http1-response.ts): a push-based HTTP/1.1 response parser. The same response must give
// the same head/body/end however its bytes are cut into feeds; anything malformed is XFER_ERR_PROTOCOL.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import { TransferError } from '../src/errors.ts';
import { MAX_HEAD_BYTES, type ResponseHead, ResponseParser } from '../src/http1-response.ts';

interface Outcome {
  readonly heads: ResponseHead[];
  readonly body: Buffer;
  readonly ends: number;
  readonly done: boolean;
  readonly reusable: boolean;
  /** The bytes feed() reported as not consumed, in order. */
  readonly unconsumed: Buffer;
}

/**
 * Feeds `pieces` one after the other the way stream-client.ts does: each piece is copied into one reused
 * buffer (at an offset, so `start` matters), and the buffer is scribbled over after each feed, so a parser
 * that kept a view of an earlier feed would produce garbage.
 */
function run(pieces: readonly Buffer[], opts: { eof?: boolean } = {}): Outcome {
  const heads: ResponseHead[] = [];
  const body: Buffer[] = [];
  let ends = 0;
  const parser = new ResponseParser({
    head: (h) => {
      assert.equal(ends, 0, 'a head after the end');
      heads.push(h);
    },
    body: (c) => {
      assert.equal(heads.length, 1, 'body bytes before the head');
      assert.equal(ends, 0, 'body bytes after the end');
      body.push(Buffer.from(c));
    },
    end: () => {
      ends++;
    },
  });
  const offset = 5;
  const scratch = Buffer.alloc(offset + Math.max(0, ...pieces.map((p) => p.length)) + 5);
  const unconsumed: Buffer[] = [];
  for (const piece of pieces) {
    scratch.fill(0xa5);
    piece.copy(scratch, offset);
    const left = parser.feed(scratch, offset, offset + piece.length);
    assert.ok(left >= 0 && left <= piece.length, `feed returned ${left} for ${piece.length} bytes`);
    if (left > 0) assert.ok(parser.done, 'bytes left unconsumed before the response is done');
    unconsumed.push(Buffer.from(scratch.subarray(offset + piece.length - left, offset + piece.length)));
    assert.equal(ends, parser.done ? 1 : 0, 'end() is called exactly when done becomes true');
  }
  if (opts.eof === true) parser.eof();
  return { heads, body: Buffer.concat(body), ends, done: parser.done, reusable: parser.reusable, unconsumed: Buffer.concat(unconsumed) };
}

function bytes(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}

/** Cuts `buf` at the given points (taken modulo its length + 1); empty pieces are kept: feeding nothing is legal. */
function cut(buf: Buffer, points: readonly number[]): Buffer[] {
  const at = points.map((p) => p % (buf.length + 1)).sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let last = 0;
  for (const p of [...at, buf.length]) {
    pieces.push(buf.subarray(last, p));
    last = p;
  }
  return pieces;
}

function byteByByte(buf: Buffer): Buffer[] {
  return Array.from({ length: buf.length }, (_, i) => buf.subarray(i, i + 1));
}

function protocolError(f: () => unknown): TransferError {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof TransferError, `expected a TransferError, got ${String(e)}`);
    assert.equal(e.code, 'XFER_ERR_PROTOCOL', e.message);
    return e;
  }
  assert.fail('expected XFER_ERR_PROTOCOL, nothing was thrown');
}

// ---------------------------------------------------------------------------------------------------------
// Generated valid responses

type Framing = 'length' | 'chunked' | 'close' | 'none';

interface Spec {
  readonly version: '1.0' | '1.1';
  readonly framing: Framing;
  readonly status: number;
  readonly connection: '' | 'close' | 'keep-alive' | 'Keep-Alive, Upgrade';
  readonly nameCase: 'lower' | 'upper' | 'as-is';
  readonly body: Buffer;
  readonly chunkCuts: readonly number[];
  readonly chunkExts: readonly string[];
  readonly upperHex: boolean;
  readonly zeroPad: number;
  readonly trailers: readonly string[];
  readonly interim: readonly string[];
  readonly extra: Buffer;
}

interface Built {
  readonly raw: Buffer;
  readonly status: number;
  readonly reason: string;
  readonly headers: Map<string, string>;
  readonly contentLength: number | null;
  readonly body: Buffer;
  readonly extra: Buffer;
  readonly eof: boolean;
  readonly reusable: boolean;
}

const REASONS: Record<number, string> = { 200: 'OK', 201: 'Created', 204: 'No Content', 206: 'Partial Content', 304: 'Not Modified', 404: 'Not Found', 500: 'Internal Server Error' };

function build(s: Spec): Built {
  const name = (n: string): string => (s.nameCase === 'lower' ? n.toLowerCase() : s.nameCase === 'upper' ? n.toUpperCase() : n);
  const lines: string[] = [];
  const expected = new Map<string, string>();
  const header = (n: string, value: string, expectedValue = value): void => {
    lines.push(`${name(n)}: ${value}`);
    const prev = expected.get(n.toLowerCase());
    expected.set(n.toLowerCase(), prev === undefined ? expectedValue : `${prev}, ${expectedValue}`);
  };
  header('Content-Type', 'application/octet-stream');
  header('X-Piece', '1');
  header('X-Pad', ' \t spaced  value \t', 'spaced  value');
  header('X-Empty', '');
  header('X-Piece', '2');
  if (s.connection !== '') header('Connection', s.connection);
  const noBody = s.framing === 'none';
  let payload = noBody ? Buffer.alloc(0) : s.body;
  let contentLength: number | null = null;
  if (s.framing === 'length') {
    header('Content-Length', String(payload.length));
    contentLength = payload.length;
  } else if (s.framing === 'chunked') {
    header('Transfer-Encoding', 'chunked');
  } else if (s.framing === 'none' && s.status === 304) {
    header('Content-Length', '12345'); // the selected representation's length: no body follows a 304
  }
  let encoded = payload;
  if (s.framing === 'chunked') {
    const points = [...new Set(s.chunkCuts.map((c) => c % (payload.length + 1)))].filter((c) => c > 0 && c < payload.length).sort((a, b) => a - b);
    const parts: Buffer[] = [];
    let last = 0;
    let i = 0;
    const sizeLine = (n: number): string => {
      const hex = n.toString(16);
      const ext = s.chunkExts.length > 0 ? s.chunkExts[i++ % s.chunkExts.length]! : '';
      return `${'0'.repeat(s.zeroPad)}${s.upperHex ? hex.toUpperCase() : hex}${ext}\r\n`;
    };
    for (const p of payload.length === 0 ? [] : [...points, payload.length]) {
      parts.push(bytes(sizeLine(p - last)), payload.subarray(last, p), bytes('\r\n'));
      last = p;
    }
    parts.push(bytes(sizeLine(0)), bytes(s.trailers.map((t) => `${t}\r\n`).join('')), bytes('\r\n'));
    encoded = Buffer.concat(parts);
  }
  const reason = REASONS[s.status] ?? '';
  const head = `HTTP/${s.version} ${s.status} ${reason}\r\n${lines.map((l) => `${l}\r\n`).join('')}\r\n`;
  const extra = s.framing === 'close' ? Buffer.alloc(0) : s.extra;
  const conn = s.connection.toLowerCase();
  const keep = s.version === '1.1' ? !conn.includes('close') : conn.includes('keep-alive');
  if (noBody) payload = Buffer.alloc(0);
  return {
    raw: Buffer.concat([bytes(s.interim.join('')), bytes(head), encoded, extra]),
    status: s.status,
    reason,
    headers: expected,
    contentLength: noBody ? 0 : contentLength,
    body: payload,
    extra,
    eof: s.framing === 'close',
    reusable: keep && s.framing !== 'close',
  };
}

const specArb: fc.Arbitrary<Spec> = fc
  .record({
    version: fc.constantFrom<'1.0' | '1.1'>('1.1', '1.1', '1.0'),
    framing: fc.constantFrom<Framing>('length', 'chunked', 'close', 'none'),
    okStatus: fc.constantFrom(200, 201, 206, 404, 500),
    noBodyStatus: fc.constantFrom(204, 304),
    connection: fc.constantFrom<Spec['connection']>('', 'close', 'keep-alive', 'Keep-Alive, Upgrade'),
    nameCase: fc.constantFrom<Spec['nameCase']>('lower', 'upper', 'as-is'),
    body: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
    chunkCuts: fc.array(fc.nat(), { maxLength: 6 }),
    chunkExts: fc.array(fc.constantFrom(';ext', ';a=b', ' ;q="x y; z"', ';a=1;b=2', '\t;tab', ' '), { maxLength: 3 }),
    upperHex: fc.boolean(),
    zeroPad: fc.nat({ max: 3 }),
    trailers: fc.array(fc.constantFrom('X-Checksum: abc', 'Expires: 0', 'Server-Timing: total;dur=1'), { maxLength: 2 }),
    interim: fc.array(fc.constantFrom('HTTP/1.1 100 Continue\r\n\r\n', 'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n', 'HTTP/1.1 102\r\n\r\n'), { maxLength: 2 }),
    extra: fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
  })
  .map((r) => {
    // No chunked framing in HTTP/1.0; 204/304 carry no body.
    const framing: Framing = r.version === '1.0' && r.framing === 'chunked' ? 'length' : r.framing;
    const { okStatus, noBodyStatus, ...rest } = r;
    return { ...rest, framing, status: framing === 'none' ? noBodyStatus : okStatus };
  });

function check(b: Built, o: Outcome): void {
  assert.equal(o.heads.length, 1, 'interim responses are not reported');
  const h = o.heads[0]!;
  assert.equal(h.status, b.status);
  assert.equal(h.reason, b.reason);
  assert.deepEqual(new Map(h.headers), b.headers);
  assert.equal(h.contentLength, b.contentLength);
  assert.equal(o.body.toString('hex'), b.body.toString('hex'));
  assert.equal(o.ends, 1);
  assert.ok(o.done);
  assert.equal(o.reusable, b.reusable);
  assert.equal(o.unconsumed.toString('hex'), b.extra.toString('hex'));
}

describe('ResponseParser: the same result however the bytes are split', () => {
  it('split at random points', () => {
    fc.assert(
      fc.property(specArb, fc.array(fc.nat(), { maxLength: 12 }), (spec, points) => {
        const b = build(spec);
        check(b, run(cut(b.raw, points), { eof: b.eof }));
      }),
      { numRuns: 500 },
    );
  });

  it('fed byte by byte', () => {
    fc.assert(
      fc.property(specArb, (spec) => {
        const b = build(spec);
        check(b, run(byteByByte(b.raw), { eof: b.eof }));
      }),
      { numRuns: 150 },
    );
  });

  it('fed all at once', () => {
    fc.assert(
      fc.property(specArb, (spec) => {
        const b = build(spec);
        check(b, run([b.raw], { eof: b.eof }));
      }),
      { numRuns: 200 },
    );
  });

  it('a body delimited by the close is only complete at eof()', () => {
    fc.assert(
      fc.property(specArb, fc.array(fc.nat(), { maxLength: 8 }), (spec, points) => {
        const b = build({ ...spec, framing: 'close', status: 200 });
        const o = run(cut(b.raw, points));
        assert.equal(o.done, false);
        assert.equal(o.ends, 0);
        assert.equal(o.body.toString('hex'), b.body.toString('hex'));
      }),
      { numRuns: 100 },
    );
  });
});

describe('ResponseParser: examples', () => {
  it('parses a Content-Length response and hands body bytes as views of the fed buffer', () => {
    const raw = bytes('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello');
    const views: Buffer[] = [];
    let head: ResponseHead | undefined;
    const p = new ResponseParser({ head: (h) => (head = h), body: (c) => views.push(c), end: () => undefined });
    assert.equal(p.feed(raw), 0);
    assert.ok(p.done && p.reusable);
    assert.equal(head?.status, 200);
    assert.equal(head?.reason, 'OK');
    assert.equal(head?.contentLength, 5);
    assert.equal(head?.headers.get('content-type'), 'text/plain');
    assert.equal(views.length, 1);
    assert.equal(views[0]!.buffer, raw.buffer, 'not copied');
    assert.equal(views[0]!.toString(), 'hello');
  });

  it('accepts a status line without a reason phrase, and an empty one', () => {
    for (const line of ['HTTP/1.1 200', 'HTTP/1.1 200 ']) {
      const o = run([bytes(`${line}\r\nContent-Length: 0\r\n\r\n`)]);
      assert.equal(o.heads[0]?.status, 200);
      assert.equal(o.heads[0]?.reason, '');
      assert.ok(o.done);
    }
  });

  it('reports headers lower-cased, trimmed, and repeated ones joined with ", "', () => {
    const o = run([bytes('HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-A:\tb \r\nset-cookie: b=2\r\nX-B:c\r\nContent-Length: 0\r\n\r\n')]);
    const h = o.heads[0]!;
    assert.equal(h.headers.get('set-cookie'), 'a=1, b=2');
    assert.equal(h.headers.get('x-a'), 'b');
    assert.equal(h.headers.get('x-b'), 'c');
  });

  it('accepts repeats of the same Content-Length, in one field or several', () => {
    for (const fields of ['Content-Length: 3, 3', 'Content-Length: 3\r\nContent-Length: 3', 'Content-Length: 003']) {
      const o = run([bytes(`HTTP/1.1 200 OK\r\n${fields}\r\n\r\nabcdef`)]);
      assert.equal(o.heads[0]?.contentLength, 3);
      assert.equal(o.body.toString(), 'abc');
      assert.equal(o.unconsumed.toString(), 'def');
    }
  });

  it('Content-Length: 0 ends the response with the head', () => {
    const o = run([bytes('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n')]);
    assert.ok(o.done && o.reusable);
    assert.equal(o.body.length, 0);
    assert.equal(o.unconsumed.toString(), 'HTTP/1.1 200 OK\r\n');
  });

  it('204 and 304 have no body, whatever their fields say', () => {
    for (const head of ['HTTP/1.1 204 No Content\r\n\r\n', 'HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n', 'HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n']) {
      const o = run([bytes(`${head}next`)]);
      assert.ok(o.done && o.reusable, head);
      assert.equal(o.heads[0]?.contentLength, 0);
      assert.equal(o.body.length, 0);
      assert.equal(o.unconsumed.toString(), 'next');
    }
  });

  it('skips 1xx interim responses, including their fields', () => {
    const o = run([bytes('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\nContent-Length: 99\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')]);
    assert.equal(o.heads.length, 1);
    assert.equal(o.heads[0]?.status, 200);
    assert.equal(o.heads[0]?.headers.has('link'), false);
    assert.equal(o.body.toString(), 'ok');
    assert.ok(o.done);
  });

  it('hands interim responses to `interim` when asked, with their fields, before the final head', () => {
    const seen: string[] = [];
    const p = new ResponseParser({
      head: (h) => seen.push(`head ${h.status}`),
      interim: (h) => seen.push(`interim ${h.status} ${h.headers.get('roamdesk-pieces-received') ?? '-'}`),
      body: () => undefined,
      end: () => seen.push('end'),
    });
    const raw = bytes('HTTP/1.1 102 Processing\r\nRoamdesk-Pieces-Received: 3\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
    // Byte by byte: heads split across feeds come out whole and in order.
    for (let i = 0; i < raw.length; i++) p.feed(raw, i, i + 1);
    assert.deepEqual(seen, ['interim 102 3', 'interim 102 -', 'head 200', 'end']);
  });

  it('a chunked body: extensions ignored, trailers skipped, contentLength unknown', () => {
    const o = run([bytes('HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5;name=value\r\nhello\r\nA ; a="b;c"\r\n, world!!!\r\n0;last\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\nrest')]);
    assert.equal(o.heads[0]?.contentLength, null);
    assert.equal(o.heads[0]?.headers.has('x-sum'), false, 'trailers are not head fields');
    assert.equal(o.body.toString(), 'hello, world!!!');
    assert.ok(o.done && o.reusable);
    assert.equal(o.unconsumed.toString(), 'rest');
  });

  it('feed() after the end returns everything as unconsumed; a feed of nothing consumes nothing', () => {
    const p = new ResponseParser({ head: () => undefined, body: () => undefined, end: () => undefined });
    assert.equal(p.feed(Buffer.alloc(0)), 0);
    assert.equal(p.feed(bytes('HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxyz'), 0), 2);
    assert.equal(p.feed(bytes('more')), 4);
    assert.equal(p.feed(bytes('....more'), 2, 6), 4);
    p.eof(); // a done response ignores the close
    assert.ok(p.done);
  });

  it('honours start and end', () => {
    const raw = bytes('garbageHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcGARBAGE');
    const body: string[] = [];
    const p = new ResponseParser({ head: () => undefined, body: (c) => body.push(c.toString()), end: () => undefined });
    const start = 'garbage'.length;
    const end = raw.length - 'GARBAGE'.length;
    assert.equal(p.feed(raw, start, end), 0);
    assert.equal(body.join(''), 'abc');
    assert.ok(p.done);
  });

  it('a body delimited by the close completes at eof(), and the connection is not reusable', () => {
    for (const head of ['HTTP/1.1 200 OK\r\n\r\n', 'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n', 'HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n']) {
      const o = run([bytes(`${head}everything until the close`)], { eof: true });
      assert.equal(o.body.toString(), 'everything until the close');
      assert.ok(o.done);
      assert.equal(o.reusable, false, head);
      assert.equal(o.heads[0]?.contentLength, null);
    }
    const empty = run([bytes('HTTP/1.1 200 OK\r\n\r\n')], { eof: true });
    assert.ok(empty.done);
    assert.equal(empty.body.length, 0);
  });
});

describe('ResponseParser: persistence (RFC 9112 §9.3)', () => {
  const cases: Array<[string, string, boolean]> = [
    ['HTTP/1.1', '', true],
    ['HTTP/1.1', 'Connection: close\r\n', false],
    ['HTTP/1.1', 'Connection: Close\r\n', false],
    ['HTTP/1.1', 'Connection: upgrade, close\r\n', false],
    ['HTTP/1.1', 'Connection: keep-alive\r\n', true],
    ['HTTP/1.1', 'Connection: x-foo\r\nConnection: close\r\n', false],
    ['HTTP/1.0', '', false],
    ['HTTP/1.0', 'Connection: keep-alive\r\n', true],
    ['HTTP/1.0', 'Connection: Keep-Alive\r\n', true],
    ['HTTP/1.0', 'Connection: close\r\n', false],
  ];
  for (const [version, fields, keep] of cases) {
    it(`${version} ${JSON.stringify(fields)} → ${keep ? 'reusable' : 'not reusable'}`, () => {
      const o = run([bytes(`${version} 200 OK\r\n${fields}Content-Length: 2\r\n\r\nok`)]);
      assert.ok(o.done);
      assert.equal(o.reusable, keep);
    });
  }

  it('is not reusable before the response is complete', () => {
    const p = new ResponseParser({ head: () => undefined, body: () => undefined, end: () => undefined });
    p.feed(bytes('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no'));
    assert.equal(p.done, false);
    assert.equal(p.reusable, false);
    p.feed(bytes('k'));
    assert.equal(p.reusable, true);
  });

  it('a 1xx response does not decide persistence for the final one', () => {
    const o = run([bytes('HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')]);
    assert.ok(o.reusable);
  });
});

describe('ResponseParser: bad input is XFER_ERR_PROTOCOL', () => {
  const ok = 'HTTP/1.1 200 OK\r\n';
  const bad: Array<[string, string]> = [
    ['both Transfer-Encoding and Content-Length', `${ok}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n`],
    ['both, Content-Length first', `${ok}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello`],
    ['a transfer coding other than chunked', `${ok}Transfer-Encoding: gzip\r\n\r\nxx`],
    ['gzip, chunked', `${ok}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`],
    ['chunked applied twice', `${ok}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
    ['identity', `${ok}Transfer-Encoding: identity\r\n\r\n`],
    ['a non-numeric Content-Length', `${ok}Content-Length: abc\r\n\r\n`],
    ['a negative Content-Length', `${ok}Content-Length: -1\r\n\r\n`],
    ['a signed Content-Length', `${ok}Content-Length: +5\r\n\r\nhello`],
    ['a fractional Content-Length', `${ok}Content-Length: 1.5\r\n\r\nhello`],
    ['a hex Content-Length', `${ok}Content-Length: 0x5\r\n\r\nhello`],
    ['an empty Content-Length', `${ok}Content-Length: \r\n\r\nhello`],
    ['a Content-Length of 16 digits', `${ok}Content-Length: 1000000000000000\r\n\r\nhello`],
    ['conflicting Content-Length values in one field', `${ok}Content-Length: 5, 6\r\n\r\nhello!`],
    ['conflicting Content-Length fields', `${ok}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`],
    ['an empty list item in Content-Length', `${ok}Content-Length: 5,\r\n\r\nhello`],
    ['obs-fold (SP)', `${ok}X-Long: part one\r\n part two\r\nContent-Length: 0\r\n\r\n`],
    ['obs-fold (HTAB)', `${ok}X-Long: part one\r\n\tpart two\r\nContent-Length: 0\r\n\r\n`],
    ['obs-fold of the first field', `${ok} X-Long: v\r\nContent-Length: 0\r\n\r\n`],
    ['an HTTP/2 status line', 'HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n'],
    ['an HTTP/1.2 status line', 'HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n'],
    ['a lower-case protocol name', 'http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'],
    ['not HTTP at all', 'ICY 200 OK\r\n\r\n'],
    ['a two-digit status', 'HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n'],
    ['a four-digit status', 'HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n'],
    ['a status glued to its reason', 'HTTP/1.1 200OK\r\nContent-Length: 0\r\n\r\n'],
    ['a status below 100', 'HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n'],
    ['two spaces before the status', 'HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n'],
    ['leading whitespace before the status line', ' HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'],
    ['an empty status line', '\r\n\r\n'],
    ['a bare LF in the status line', 'HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n'],
    ['a header line without a colon', `${ok}X-Nothing\r\nContent-Length: 0\r\n\r\n`],
    ['whitespace before the colon', `${ok}Content-Length : 0\r\n\r\n`],
    ['a space in a field name', `${ok}X Bad: v\r\nContent-Length: 0\r\n\r\n`],
    ['an empty field name', `${ok}: v\r\nContent-Length: 0\r\n\r\n`],
    ['a non-token byte in a field name', `${ok}X(y): v\r\nContent-Length: 0\r\n\r\n`],
    ['a bare CR in a field value', `${ok}X-A: a\rb\r\nContent-Length: 0\r\n\r\n`],
    ['a bare LF in a field value', `${ok}X-A: a\nb\r\nContent-Length: 0\r\n\r\n`],
    ['a non-hex chunk size', `${ok}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n`],
    ['a chunk size with 0x', `${ok}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n`],
    ['a negative chunk size', `${ok}Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n`],
    ['an empty chunk size', `${ok}Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n`],
    ['whitespace before a chunk size', `${ok}Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n`],
    ['garbage after a chunk size', `${ok}Transfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n`],
    ['a chunk size of 14 hex digits', `${ok}Transfer-Encoding: chunked\r\n\r\n00000000000005\r\nhello\r\n0\r\n\r\n`],
    ['a chunk-size line over 4 KiB', `${ok}Transfer-Encoding: chunked\r\n\r\n5;${'e'.repeat(5000)}\r\nhello\r\n0\r\n\r\n`],
    ['chunk data longer than its size', `${ok}Transfer-Encoding: chunked\r\n\r\n5\r\nhello!\r\n0\r\n\r\n`],
    ['chunk data followed by a bare LF', `${ok}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n`],
    ['chunk data followed by nothing but the next chunk', `${ok}Transfer-Encoding: chunked\r\n\r\n5\r\nhello0\r\n\r\n`],
    ['chunk data followed by a bare CR', `${ok}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\rx0\r\n\r\n`],
    ['a trailer section over 64 KiB', `${ok}Transfer-Encoding: chunked\r\n\r\n0\r\n${`X-T: ${'t'.repeat(1000)}\r\n`.repeat(70)}\r\n`],
  ];
  for (const [what, raw] of bad) {
    it(`refuses ${what}`, () => {
      const buf = bytes(raw);
      protocolError(() => run([buf], { eof: true }));
      protocolError(() => run(cut(buf, [Math.floor(buf.length / 3), Math.floor((2 * buf.length) / 3)]), { eof: true }));
      if (buf.length < 10_000) protocolError(() => run(byteByByte(buf), { eof: true }));
    });
  }

  it('refuses a head over 64 KiB, and accepts one of exactly 64 KiB', () => {
    const headOf = (size: number): Buffer => {
      const start = `HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: `;
      return bytes(`${start}${'p'.repeat(size - start.length - 4)}\r\n\r\n`);
    };
    assert.equal(headOf(MAX_HEAD_BYTES).length, MAX_HEAD_BYTES);
    assert.ok(run([headOf(MAX_HEAD_BYTES)]).done);
    assert.ok(run(cut(headOf(MAX_HEAD_BYTES), [1000, 40_000, MAX_HEAD_BYTES - 2])).done);
    protocolError(() => run([headOf(MAX_HEAD_BYTES + 1)]));
    protocolError(() => run(cut(headOf(MAX_HEAD_BYTES + 1), [1000, 40_000, MAX_HEAD_BYTES - 2])));
  });

  it('refuses a head that never ends once it passes 64 KiB, without waiting for its end', () => {
    const p = new ResponseParser({ head: () => assert.fail('no head'), body: () => undefined, end: () => undefined });
    p.feed(bytes('HTTP/1.1 200 OK\r\n'));
    const filler = bytes(`X-Pad: ${'p'.repeat(1000)}\r\n`);
    let fed = 0;
    const e = protocolError(() => {
      for (;;) {
        p.feed(filler);
        fed += filler.length;
        assert.ok(fed < 2 * MAX_HEAD_BYTES, 'still collecting the head');
      }
    });
    assert.match(e.message, /head/);
  });

  it('refuses a huge head fed at once', () => {
    protocolError(() => run([bytes(`HTTP/1.1 200 OK\r\nX-Pad: ${'p'.repeat(1 << 20)}\r\n\r\n`)]));
  });

  it('accepts a chunk size of 13 hex digits (the limit) and leading zeros', () => {
    const o = run([bytes(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0000000000005\r\nhello\r\n0000\r\n\r\n`)]);
    assert.equal(o.body.toString(), 'hello');
    assert.ok(o.done);
  });

  const truncated: Array<[string, string]> = [
    ['before any byte', ''],
    ['in the status line', 'HTTP/1.1 2'],
    ['in the head', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n'],
    ['at the end of the head but one byte', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r'],
    ['after an interim response', 'HTTP/1.1 100 Continue\r\n\r\n'],
    ['in a Content-Length body', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhell'],
    ['right after the head of a Content-Length body', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n'],
    ['in a chunk-size line', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5'],
    ['in chunk data', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel'],
    ['before the CRLF after chunk data', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello'],
    ['between chunks', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n'],
    ['after the last chunk', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n'],
    ['in the trailers', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n'],
  ];
  for (const [what, raw] of truncated) {
    it(`eof() ${what} is a protocol error`, () => {
      const o = run(byteByByte(bytes(raw)));
      assert.equal(o.done, false);
      protocolError(() => run([bytes(raw)], { eof: true }));
      protocolError(() => run(byteByByte(bytes(raw)), { eof: true }));
    });
  }

  it('says "closed before a response" only when nothing at all arrived', () => {
    // stream-client.ts retries a reused connection on exactly this message.
    assert.match(protocolError(() => run([], { eof: true })).message, /closed before a response/);
    assert.doesNotMatch(protocolError(() => run([bytes('H')], { eof: true })).message, /closed before a response/);
    assert.doesNotMatch(protocolError(() => run([bytes('HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n')], { eof: true })).message, /closed before a response/);
  });

  it('never throws anything but XFER_ERR_PROTOCOL on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.array(fc.nat(), { maxLength: 5 }), fc.boolean(), (a, points, withHead) => {
        const raw = Buffer.concat([withHead ? bytes('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n') : Buffer.alloc(0), Buffer.from(a)]);
        try {
          run(cut(raw, points), { eof: true });
        } catch (e) {
          assert.ok(e instanceof TransferError && e.code === 'XFER_ERR_PROTOCOL', String(e));
        }
      }),
      { numRuns: 300 },
    );
  });
});
