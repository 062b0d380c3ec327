// StreamConnection (stream-client.ts) against real servers on 127.0.0.1: node:http servers for well-behaved
// answers, raw node:net servers where the server has to misbehave (cut a body, close a kept-alive connection
// at the wrong moment, stall).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { getEventListeners, once } from 'node:events';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { type AddressInfo, createServer as createNetServer, type Socket } from 'node:net';
import { describe, it } from 'node:test';

import { TransferError } from '../src/errors.ts';
import type { Remote } from '../src/http.ts';
import type { ResponseHead } from '../src/http1-response.ts';
import { StreamConnection, StreamConnections, type StreamGet } from '../src/stream-client.ts';

const TOKEN = 'secret-token';
const PIECES = 'application/x-roamdesk-pieces';

interface Stats {
  connections: number;
  requests: number;
}

interface Harness {
  readonly remote: Remote;
  readonly port: number;
  readonly stats: Stats;
  /** The server side of every connection accepted, in order. */
  readonly sockets: Socket[];
  close(): Promise<void>;
}

function remoteAt(port: number): Remote {
  return { apiBase: `http://127.0.0.1:${port}/api/v1`, token: TOKEN };
}

async function httpServer(handler: (req: IncomingMessage, res: ServerResponse, stats: Stats) => void): Promise<Harness> {
  const stats: Stats = { connections: 0, requests: 0 };
  const sockets: Socket[] = [];
  const server = createHttpServer((req, res) => {
    stats.requests++;
    handler(req, res, stats);
  });
  server.on('connection', (socket: Socket) => {
    stats.connections++;
    sockets.push(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    remote: remoteAt(port),
    port,
    stats,
    sockets,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

interface RawRequest {
  /** The request head, without its final CRLF CRLF. */
  readonly head: string;
  /** 1-based, over the whole server. */
  readonly connection: number;
  /** 1-based, on this connection. */
  readonly n: number;
}

/** A raw TCP server: `onRequest` sees each request head (GETs have no body) and answers by hand on the socket. */
async function rawServer(onRequest: (socket: Socket, req: RawRequest, stats: Stats) => void): Promise<Harness> {
  const stats: Stats = { connections: 0, requests: 0 };
  const sockets: Socket[] = [];
  const server = createNetServer((socket) => {
    const connection = ++stats.connections;
    sockets.push(socket);
    socket.on('error', () => undefined); // the client resets connections on purpose
    let pending = '';
    let n = 0;
    socket.on('data', (d: Buffer) => {
      pending += d.toString('latin1');
      for (let at = pending.indexOf('\r\n\r\n'); at >= 0 && !socket.destroyed; at = pending.indexOf('\r\n\r\n')) {
        const head = pending.slice(0, at);
        pending = pending.slice(at + 4);
        stats.requests++;
        onRequest(socket, { head, connection, n: ++n }, stats);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    remote: remoteAt(port),
    port,
    stats,
    sockets,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function okHead(length: number, extra = ''): string {
  return `HTTP/1.1 200 OK\r\nContent-Type: ${PIECES}\r\nContent-Length: ${length}\r\n${extra}\r\n`;
}

/** GETs `path` and returns the body bytes (copied out of the connection's buffer). */
async function fetchBody(conn: StreamConnection, path: string, opts: Partial<Omit<StreamGet, 'path' | 'onBody'>> = {}): Promise<{ body: Buffer; heads: ResponseHead[] }> {
  const chunks: Buffer[] = [];
  const heads: ResponseHead[] = [];
  await conn.get({
    path,
    accept: opts.accept ?? PIECES,
    signal: opts.signal,
    onHead: (h) => heads.push(h),
    onBody: (c) => {
      chunks.push(Buffer.from(c));
      return true;
    },
  });
  return { body: Buffer.concat(chunks), heads };
}

/** Awaits `p`'s rejection and returns the TransferError with `code`. */
async function rejectsWith(p: Promise<unknown>, code: TransferError['code']): Promise<TransferError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof TransferError, `expected a TransferError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected ${code}, the request succeeded`);
}

function sameBytes(got: Buffer, want: Buffer): void {
  assert.equal(got.length, want.length, 'body length');
  assert.ok(got.equals(want), 'body bytes differ');
}

/** Lets pending I/O callbacks run (no wall-clock wait). */
async function ioTurns(n = 3): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

describe('StreamConnection: bodies', () => {
  it('delivers a Content-Length body intact and sends the request line and fields', async () => {
    const data = randomBytes(4 * 1024 * 1024 + 123);
    const seen: Array<{ url: string | undefined; authorization: string | undefined; accept: string | undefined; host: string | undefined }> = [];
    const srv = await httpServer((req, res) => {
      seen.push({ url: req.url, authorization: req.headers.authorization, accept: req.headers.accept, host: req.headers.host });
      res.writeHead(200, { 'content-type': PIECES, 'content-length': data.length, 'x-pieces': '3-9' });
      res.end(data);
    });
    const conn = new StreamConnection(srv.remote);
    try {
      const { body, heads } = await fetchBody(conn, '/objects/abc/pieces?from=3&to=9');
      sameBytes(body, data);
      assert.equal(heads.length, 1);
      assert.equal(heads[0]?.status, 200);
      assert.equal(heads[0]?.contentLength, data.length);
      assert.equal(heads[0]?.headers.get('x-pieces'), '3-9');
      assert.deepEqual(seen, [{ url: '/api/v1/objects/abc/pieces?from=3&to=9', authorization: `Bearer ${TOKEN}`, accept: PIECES, host: `127.0.0.1:${srv.port}` }]);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('delivers a chunked body intact', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 7);
    const srv = await httpServer((_req, res) => {
      res.writeHead(200, { 'content-type': PIECES });
      // Uneven writes: chunk boundaries land anywhere in the client's reads.
      let at = 0;
      for (let i = 1; at < data.length; i++) {
        const n = Math.min(data.length - at, (i * 7919) % 200_000 + 1);
        res.write(data.subarray(at, at + n));
        at += n;
      }
      res.end();
    });
    const conn = new StreamConnection(srv.remote);
    try {
      const { body, heads } = await fetchBody(conn, '/chunked');
      sameBytes(body, data);
      assert.equal(heads[0]?.headers.get('transfer-encoding'), 'chunked');
      assert.equal(heads[0]?.contentLength, null);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('delivers a body delimited by the connection close, then connects afresh', async () => {
    const data = randomBytes(300_000);
    const srv = await rawServer((socket, req) => {
      if (req.connection === 1) socket.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\n'), data]));
      else socket.write(`${okHead(2)}ok`);
    });
    const conn = new StreamConnection(srv.remote);
    try {
      sameBytes((await fetchBody(conn, '/a')).body, data);
      assert.equal((await fetchBody(conn, '/b')).body.toString(), 'ok');
      assert.equal(srv.stats.connections, 2);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('skips interim 1xx responses', async () => {
    const srv = await rawServer((socket) => {
      socket.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n');
      socket.write(`${okHead(5)}hello`);
    });
    const conn = new StreamConnection(srv.remote);
    try {
      const { body, heads } = await fetchBody(conn, '/x');
      assert.equal(body.toString(), 'hello');
      assert.deepEqual(heads.map((h) => h.status), [200]);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('an empty 204 answer resolves without body bytes', async () => {
    const srv = await httpServer((_req, res) => {
      res.writeHead(204);
      res.end();
    });
    const conn = new StreamConnection(srv.remote);
    try {
      const { body, heads } = await fetchBody(conn, '/none');
      assert.equal(body.length, 0);
      assert.equal(heads[0]?.status, 204);
      await fetchBody(conn, '/none');
      assert.equal(srv.stats.connections, 1);
    } finally {
      conn.close();
      await srv.close();
    }
  });
});

describe('StreamConnection: keep-alive', () => {
  it('reuses one TCP connection for consecutive requests', async () => {
    const srv = await httpServer((req, res) => {
      const body = Buffer.from(`answer to ${req.url ?? ''}`);
      if (req.url?.endsWith('chunked') === true) res.end(body); // no content-length: node:http sends it chunked
      else {
        res.writeHead(200, { 'content-length': body.length });
        res.end(body);
      }
    });
    const conn = new StreamConnection(srv.remote);
    try {
      for (const p of ['/one', '/two-chunked', '/three']) assert.equal((await fetchBody(conn, p)).body.toString(), `answer to /api/v1${p}`);
      assert.equal(srv.stats.requests, 3);
      assert.equal(srv.stats.connections, 1);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  for (const when of ['right away', 'after the close reached the client']) {
    it(`a kept-alive connection the server closed while idle is invisible to the caller (next get ${when})`, async () => {
      const srv = await httpServer((_req, res) => {
        res.writeHead(200, { 'content-length': 2 });
        res.end('ok');
      });
      const conn = new StreamConnection(srv.remote);
      try {
        assert.equal((await fetchBody(conn, '/1')).body.toString(), 'ok');
        const first = srv.sockets[0]!;
        first.destroy();
        if (when !== 'right away') {
          if (!first.closed) await once(first, 'close');
          await ioTurns();
        }
        assert.equal((await fetchBody(conn, '/2')).body.toString(), 'ok');
        assert.equal(srv.stats.connections, 2);
        assert.notEqual(srv.sockets[1], first, 'answered on a new connection');
      } finally {
        conn.close();
        await srv.close();
      }
    });
  }

  it('a request that finds its kept-alive connection closed under it is sent again on a new one', async () => {
    // Deterministic version of the race: the server reads the second request, then closes without answering.
    const heads: RawRequest[] = [];
    const srv = await rawServer((socket, req) => {
      heads.push(req);
      if (req.n === 1) socket.write(`${okHead(req.head.length)}${req.head}`);
      else socket.destroy();
    });
    const conn = new StreamConnection(srv.remote);
    try {
      await fetchBody(conn, '/1');
      const { body } = await fetchBody(conn, '/2');
      assert.match(body.toString('latin1'), /^GET \/api\/v1\/2 HTTP\/1\.1\r\n/);
      assert.equal(srv.stats.connections, 2);
      assert.deepEqual(heads.map((r) => [r.connection, r.n]), [[1, 1], [1, 2], [2, 1]]);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('retries a stale kept-alive connection once only', async () => {
    const srv = await rawServer((socket, req) => {
      if (req.connection === 1 && req.n === 1) socket.write(`${okHead(2)}ok`);
      else socket.destroy();
    });
    const conn = new StreamConnection(srv.remote);
    try {
      await fetchBody(conn, '/1');
      const e = await fetchBody(conn, '/2').then(
        () => assert.fail('resolved'),
        (err: unknown) => err,
      );
      // The fresh connection closed before an answer too (a FIN, or a reset): that one is not retried.
      assert.ok(e instanceof TransferError && (e.code === 'XFER_ERR_PROTOCOL' || e.code === 'XFER_ERR_NETWORK'), String(e));
      // /2 on the stale connection, /2 once more on a fresh one, and no more.
      assert.equal(srv.stats.connections, 2);
      assert.equal(srv.stats.requests, 3);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('does not retry a request whose fresh connection closed before an answer', async () => {
    const srv = await rawServer((socket) => socket.destroy());
    const conn = new StreamConnection(srv.remote);
    try {
      const e = await conn.get({ path: '/x', accept: PIECES, onBody: () => true }).then(
        () => assert.fail('resolved'),
        (err: unknown) => err,
      );
      assert.ok(e instanceof TransferError && (e.code === 'XFER_ERR_PROTOCOL' || e.code === 'XFER_ERR_NETWORK'), String(e));
      assert.equal(srv.stats.connections, 1);
      assert.equal(srv.stats.requests, 1);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('does not reuse a connection answered with Connection: close', async () => {
    const srv = await httpServer((_req, res) => {
      res.writeHead(200, { 'content-length': 2, connection: 'close' });
      res.end('ok');
    });
    const conn = new StreamConnection(srv.remote);
    try {
      for (let i = 0; i < 3; i++) {
        const { body, heads } = await fetchBody(conn, `/${i}`);
        assert.equal(body.toString(), 'ok');
        assert.equal(heads[0]?.headers.get('connection'), 'close');
      }
      assert.equal(srv.stats.connections, 3);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('does not reuse an HTTP/1.0 connection without keep-alive, but does with it', async () => {
    const srv = await rawServer((socket, req) => {
      const keep = req.connection === 1 && req.n === 1;
      socket.write(`HTTP/1.0 200 OK\r\nContent-Length: 2\r\n${keep ? 'Connection: keep-alive\r\n' : ''}\r\nok`);
    });
    const conn = new StreamConnection(srv.remote);
    try {
      for (let i = 0; i < 4; i++) assert.equal((await fetchBody(conn, `/${i}`)).body.toString(), 'ok');
      // /0 (keep-alive) and /1 (not) on connection 1, /2 and /3 on a connection each.
      assert.equal(srv.stats.connections, 3);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('drops a connection on which the server sent bytes after the answer', async () => {
    const srv = await rawServer((socket) => {
      socket.write(`${okHead(2)}okHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbogus`);
    });
    const conn = new StreamConnection(srv.remote);
    try {
      // One small write: the answer and the stray bytes reach the client in one read.
      assert.equal((await fetchBody(conn, '/1')).body.toString(), 'ok');
      assert.equal((await fetchBody(conn, '/2')).body.toString(), 'ok');
      assert.equal(srv.stats.connections, 2, 'the second request went out on a new connection');
    } finally {
      conn.close();
      await srv.close();
    }
  });
});

describe('StreamConnection: error answers', () => {
  it('a 404 with a JSON error body rejects XFER_ERR_REMOTE with its status and code, and the connection stays usable', async () => {
    const srv = await httpServer((req, res) => {
      if (req.url === '/api/v1/missing') {
        const body = JSON.stringify({ error: { code: 'OBJECT_NOT_FOUND', message: 'no such object' } });
        res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else {
        res.writeHead(200, { 'content-length': 2 });
        res.end('ok');
      }
    });
    const conn = new StreamConnection(srv.remote);
    try {
      let called = 0;
      const e = await rejectsWith(
        conn.get({
          path: '/missing',
          accept: PIECES,
          onHead: () => called++,
          onBody: () => {
            called++;
            return true;
          },
        }),
        'XFER_ERR_REMOTE',
      );
      assert.equal(e.data['status'], 404);
      assert.equal(e.data['code'], 'OBJECT_NOT_FOUND');
      assert.match(e.message, /no such object/);
      assert.equal(called, 0, 'an error answer is not handed to onHead/onBody');
      assert.equal((await fetchBody(conn, '/present')).body.toString(), 'ok');
      assert.equal(srv.stats.connections, 1);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('a 500 with a large non-JSON chunked body rejects XFER_ERR_REMOTE and the connection stays usable', async () => {
    const srv = await httpServer((req, res) => {
      if (req.url === '/api/v1/boom') {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.write('x'.repeat(600_000));
        res.end('tail');
      } else {
        res.writeHead(200, { 'content-length': 2 });
        res.end('ok');
      }
    });
    const conn = new StreamConnection(srv.remote);
    try {
      const e = await rejectsWith(fetchBody(conn, '/boom'), 'XFER_ERR_REMOTE');
      assert.equal(e.data['status'], 500);
      assert.equal(e.data['code'], undefined);
      assert.equal((await fetchBody(conn, '/ok')).body.toString(), 'ok');
      assert.equal(srv.stats.connections, 1);
    } finally {
      conn.close();
      await srv.close();
    }
  });
});

describe('StreamConnection: flow control', () => {
  it('onBody returning false pauses reading until resume(), and everything still arrives', async () => {
    const data = randomBytes(4 * 1024 * 1024);
    const srv = await httpServer((_req, res) => {
      res.writeHead(200, { 'content-length': data.length });
      res.end(data);
    });
    const conn = new StreamConnection(srv.remote);
    try {
      const chunks: Buffer[] = [];
      let paused = false;
      let pauses = 0;
      await conn.get({
        path: '/big',
        accept: PIECES,
        onBody: (c) => {
          assert.equal(paused, false, 'onBody called while paused');
          chunks.push(Buffer.from(c));
          if (chunks.length % 2 === 0) return true;
          paused = true;
          pauses++;
          setImmediate(() => {
            paused = false;
            conn.resume();
          });
          return false;
        },
      });
      sameBytes(Buffer.concat(chunks), data);
      assert.ok(pauses > 0);
      assert.equal((await fetchBody(conn, '/big')).body.length, data.length, 'the connection is reusable after pauses');
      assert.equal(srv.stats.connections, 1);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('pauses and resumes across a chunked body', async () => {
    const data = randomBytes(2 * 1024 * 1024 + 5);
    const srv = await httpServer((_req, res) => {
      for (let at = 0; at < data.length; at += 100_003) res.write(data.subarray(at, at + 100_003));
      res.end();
    });
    const conn = new StreamConnection(srv.remote);
    try {
      const chunks: Buffer[] = [];
      await conn.get({
        path: '/big',
        accept: PIECES,
        onBody: (c) => {
          chunks.push(Buffer.from(c));
          setImmediate(() => conn.resume());
          return false;
        },
      });
      sameBytes(Buffer.concat(chunks), data);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('pauses on a body delimited by the close: the close is seen once reading resumes', async () => {
    const data = randomBytes(3 * 1024 * 1024);
    const srv = await rawServer((socket) => socket.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\n\r\n'), data])));
    const conn = new StreamConnection(srv.remote);
    try {
      const chunks: Buffer[] = [];
      await conn.get({
        path: '/until-close',
        accept: PIECES,
        onBody: (c) => {
          chunks.push(Buffer.from(c));
          setImmediate(() => conn.resume());
          return false;
        },
      });
      sameBytes(Buffer.concat(chunks), data);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('resume() without a pause, or with no request, does nothing', async () => {
    const srv = await httpServer((_req, res) => {
      res.writeHead(200, { 'content-length': 2 });
      res.end('ok');
    });
    const conn = new StreamConnection(srv.remote);
    try {
      conn.resume();
      const chunks: Buffer[] = [];
      await conn.get({
        path: '/x',
        accept: PIECES,
        onBody: (c) => {
          conn.resume();
          chunks.push(Buffer.from(c));
          return true;
        },
      });
      conn.resume();
      assert.equal(Buffer.concat(chunks).toString(), 'ok');
    } finally {
      conn.close();
      await srv.close();
    }
  });
});

describe('StreamConnection: failures', () => {
  /** A server that sends the head and `sent` bytes of a `total`-byte body, then stalls. */
  async function stallingServer(total: number, sent: number): Promise<Harness> {
    return rawServer((socket) => {
      socket.write(okHead(total));
      socket.write(randomBytes(sent));
    });
  }

  it('an AbortSignal aborting mid-body rejects XFER_ERR_ABORTED and closes the connection', async () => {
    const srv = await stallingServer(1 << 20, 10_000);
    const conn = new StreamConnection(srv.remote);
    try {
      const ac = new AbortController();
      let got = 0;
      const e = await rejectsWith(
        conn.get({
          path: '/stall',
          accept: PIECES,
          signal: ac.signal,
          onBody: (c) => {
            if (got === 0) setImmediate(() => ac.abort(new Error('user cancelled')));
            got += c.length;
            return true;
          },
        }),
        'XFER_ERR_ABORTED',
      );
      assert.ok(got > 0);
      assert.ok(e.cause instanceof Error && e.cause.message === 'user cancelled');
      const s = srv.sockets[0]!;
      if (!s.closed) await once(s, 'close');
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('aborting from inside onBody rejects XFER_ERR_ABORTED', async () => {
    const srv = await stallingServer(1 << 20, 10_000);
    const conn = new StreamConnection(srv.remote);
    try {
      const ac = new AbortController();
      await rejectsWith(
        conn.get({
          path: '/stall',
          accept: PIECES,
          signal: ac.signal,
          onBody: () => {
            ac.abort();
            return true;
          },
        }),
        'XFER_ERR_ABORTED',
      );
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('aborting while waiting for the answer rejects XFER_ERR_ABORTED', async () => {
    const ac = new AbortController();
    const srv = await rawServer(() => ac.abort()); // reads the request, never answers
    const conn = new StreamConnection(srv.remote);
    try {
      await rejectsWith(conn.get({ path: '/never', accept: PIECES, signal: ac.signal, onBody: () => true }), 'XFER_ERR_ABORTED');
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('leaves no abort listener behind on a shared signal, also across a stale-connection retry', async () => {
    const srv = await rawServer((socket, req) => {
      if (req.connection === 1 && req.n === 2) socket.destroy();
      else if (req.head.startsWith('GET /api/v1/missing ')) socket.write('HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}');
      else socket.write(`${okHead(2)}ok`);
    });
    const conn = new StreamConnection(srv.remote);
    const ac = new AbortController();
    try {
      await fetchBody(conn, '/1', { signal: ac.signal });
      await fetchBody(conn, '/2', { signal: ac.signal }); // stale, retried
      await rejectsWith(fetchBody(conn, '/missing', { signal: ac.signal }), 'XFER_ERR_REMOTE');
      assert.equal(srv.stats.connections, 2);
      assert.equal(getEventListeners(ac.signal, 'abort').length, 0);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('an already aborted signal rejects XFER_ERR_ABORTED without connecting', async () => {
    const srv = await httpServer((_req, res) => res.end('ok'));
    const conn = new StreamConnection(srv.remote);
    try {
      await rejectsWith(conn.get({ path: '/x', accept: PIECES, signal: AbortSignal.abort(), onBody: () => true }), 'XFER_ERR_ABORTED');
      await ioTurns();
      assert.equal(srv.stats.connections, 0);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  for (const framing of ['content-length', 'chunked'] as const) {
    it(`a server cutting the connection mid-body (${framing}) rejects XFER_ERR_PROTOCOL; the next request connects afresh`, async () => {
      const data = randomBytes(200_000);
      const srv = await rawServer((socket, req) => {
        if (req.connection > 1) {
          socket.write(`${okHead(2)}ok`);
          return;
        }
        if (framing === 'content-length') socket.write(Buffer.concat([Buffer.from(okHead(data.length)), data.subarray(0, 100_000)]));
        else socket.write(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'), Buffer.from(`${data.length.toString(16)}\r\n`), data.subarray(0, 100_000)]));
        socket.end();
      });
      const conn = new StreamConnection(srv.remote);
      try {
        let got = 0;
        await rejectsWith(
          conn.get({
            path: '/cut',
            accept: PIECES,
            onBody: (c) => {
              got += c.length;
              return true;
            },
          }),
          'XFER_ERR_PROTOCOL',
        );
        assert.equal(got, 100_000);
        assert.equal((await fetchBody(conn, '/next')).body.toString(), 'ok');
        assert.equal(srv.stats.connections, 2);
      } finally {
        conn.close();
        await srv.close();
      }
    });
  }

  it('a malformed answer rejects XFER_ERR_PROTOCOL', async () => {
    const srv = await rawServer((socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n'));
    const conn = new StreamConnection(srv.remote);
    try {
      await rejectsWith(fetchBody(conn, '/x'), 'XFER_ERR_PROTOCOL');
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('a server that does not listen rejects XFER_ERR_NETWORK', async () => {
    const srv = await httpServer((_req, res) => res.end());
    const remote = srv.remote;
    await srv.close(); // the port is free again: connections are refused
    const conn = new StreamConnection(remote);
    try {
      const e = await rejectsWith(fetchBody(conn, '/x'), 'XFER_ERR_NETWORK');
      assert.equal(e.data['errno'], 'ECONNREFUSED');
    } finally {
      conn.close();
    }
  });

  it('abandon() fails the request in progress with the given error and closes the connection', async () => {
    const srv = await stallingServer(1 << 20, 1000);
    const conn = new StreamConnection(srv.remote);
    try {
      const why = new Error('piece hash mismatch');
      const p = conn.get({
        path: '/stall',
        accept: PIECES,
        onBody: () => {
          setImmediate(() => conn.abandon(why));
          return true;
        },
      });
      await assert.rejects(p, (e: unknown) => e === why);
      const s = srv.sockets[0]!;
      if (!s.closed) await once(s, 'close');
      conn.abandon(new Error('nothing in progress')); // no request: nothing happens
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('abandon() from inside onBody fails the request; the next request connects afresh', async () => {
    const srv = await httpServer((_req, res) => {
      res.writeHead(200, { 'content-length': 2 });
      res.end('ok');
    });
    const conn = new StreamConnection(srv.remote);
    try {
      const why = new Error('bad piece');
      let calls = 0;
      await assert.rejects(
        conn.get({
          path: '/x',
          accept: PIECES,
          onBody: () => {
            calls++;
            conn.abandon(why);
            return true;
          },
        }),
        (e: unknown) => e === why,
      );
      assert.equal(calls, 1);
      assert.equal((await fetchBody(conn, '/y')).body.toString(), 'ok');
      assert.equal(srv.stats.connections, 2);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('an onBody that throws fails the request with its error; the next request connects afresh', async () => {
    const srv = await httpServer((_req, res) => {
      res.writeHead(200, { 'content-length': 2 });
      res.end('ok');
    });
    const conn = new StreamConnection(srv.remote);
    try {
      const why = new Error('disk full');
      await assert.rejects(
        conn.get({
          path: '/x',
          accept: PIECES,
          onBody: () => {
            throw why;
          },
        }),
        (e: unknown) => e === why,
      );
      assert.equal((await fetchBody(conn, '/y')).body.toString(), 'ok');
      assert.equal(srv.stats.connections, 2);
    } finally {
      conn.close();
      await srv.close();
    }
  });

  it('close() fails the request in progress with XFER_ERR_ABORTED', async () => {
    const srv = await stallingServer(1 << 20, 1000);
    const conn = new StreamConnection(srv.remote);
    try {
      const p = conn.get({
        path: '/stall',
        accept: PIECES,
        onBody: () => {
          setImmediate(() => conn.close());
          return true;
        },
      });
      await rejectsWith(p, 'XFER_ERR_ABORTED');
    } finally {
      conn.close();
      await srv.close();
    }
  });
});

describe('StreamConnections', () => {
  it('hands back given connections, and closeAll() closes every one', async () => {
    const srv = await httpServer((_req, res) => {
      res.writeHead(200, { 'content-length': 2 });
      res.end('ok');
    });
    const pool = new StreamConnections(srv.remote);
    try {
      const a = pool.take();
      const b = pool.take();
      assert.notEqual(a, b);
      await Promise.all([fetchBody(a, '/a'), fetchBody(b, '/b')]);
      pool.give(a);
      assert.equal(pool.take(), a);
      await fetchBody(a, '/a2');
      assert.equal(srv.stats.connections, 2);
      pool.closeAll();
      // The client closed both connections: the server sees each one close.
      for (const s of srv.sockets) if (!s.closed) await once(s, 'close');
    } finally {
      pool.closeAll();
      await srv.close();
    }
  });
});
