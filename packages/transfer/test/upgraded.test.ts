// The upgraded piece stream over real loopback sockets: the server end (receiveUpgraded, reading into one
// reused buffer through a handle taken over from the accepted socket) with a fake sink, and END_FRAME in the
// frame assembler. The whole path against the real server is in test/e2e/transfer.test.ts.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';

import { TransferError } from '../src/errors.ts';
import { BufferPool, END_FRAME, encodeFrameHeader, FrameAssembler } from '../src/frames.ts';
import type { PieceSink } from '../src/upload-registry.ts';
import { connect as connectRemote } from '../src/http.ts';
import { receiveUpgraded, type UpgradedReceiveOptions } from '../src/upgraded-receiver.ts';
import { putUpgraded } from '../src/upgraded-sender.ts';

const STATE = { uploadId: 'u'.repeat(32), id: 'i'.repeat(64), complete: false, piecesTotal: 1, piecesVerified: 0, missing: [] };

/** Collects every byte; ends at END_FRAME; every `slowEvery`th push answers a promise (a compressed piece being written). */
class FakeSink implements PieceSink {
  readonly received: Buffer[] = [];
  ended = false;
  disposed = 0;
  pushes = 0;
  waits = 0;
  /** With `pieceBytes`, a piece counts as taken once that many more bytes arrived (else none ever does). */
  constructor(private readonly opts: { slowEvery?: number; failAt?: number; pieceBytes?: number } = {}) {}
  get piecesReceived(): number {
    const bytes = this.received.reduce((n, b) => n + b.length, 0);
    return this.opts.pieceBytes === undefined ? 0 : Math.floor(bytes / this.opts.pieceBytes);
  }
  push(chunk: Buffer): Promise<void> | undefined {
    this.pushes++;
    const all = Buffer.concat([...this.received, chunk]);
    if (this.opts.failAt !== undefined && all.length > this.opts.failAt) throw new TransferError('XFER_ERR_PIECE_HASH', 'piece 0 does not match its hash');
    // Copy: the view is valid only during the call (the receiver reuses its buffer).
    this.received.push(Buffer.from(chunk));
    if (all.length >= END_FRAME.length && all.subarray(all.length - END_FRAME.length).equals(END_FRAME)) this.ended = true;
    if (this.opts.slowEvery !== undefined && this.pushes % this.opts.slowEvery === 0) {
      this.waits++;
      return new Promise((resolve) => setTimeout(resolve, 5));
    }
    return undefined;
  }
  end() {
    return { ...STATE, piecesVerified: 1 };
  }
  dispose() {
    this.disposed++;
  }
}

function options(over: Partial<UpgradedReceiveOptions> = {}): UpgradedReceiveOptions {
  return {
    buffer: Buffer.alloc(64 * 1024), maxBytes: 1 << 30, idleMs: 5_000,
    answer: (o) => ('state' in o ? { status: 200, body: o.state } : { status: 422, body: { error: { code: (o.error as TransferError).code } } }),
    ...over,
  };
}

/** A client that waits for the 101, sends `stream`, and returns everything the server sent until it closed. */
async function client(port: number, stream: Buffer, opts: { stopAfter?: number } = {}): Promise<string> {
  const s = connect(port, '127.0.0.1');
  let got = '';
  let sent = false;
  s.on('data', (d: Buffer) => {
    got += d.toString('latin1');
    if (!sent && got.includes('\r\n\r\n')) {
      sent = true;
      if (opts.stopAfter !== undefined) s.end(stream.subarray(0, opts.stopAfter));
      else s.write(stream);
    }
  });
  s.on('error', () => undefined);
  s.setTimeout(10_000, () => s.destroy());
  await once(s, 'close');
  return got;
}

describe('upgraded piece stream', () => {
  let server: Server;
  let port = 0;
  let accepted: Promise<Socket>;
  const nextSocket = (): Promise<Socket> => new Promise((resolve) => server.once('connection', resolve));

  before(async () => {
    server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  after(() => server.close());

  it('delivers every byte in order, waits while the sink is busy, and answers the state after END_FRAME', async () => {
    const stream = Buffer.concat([randomBytes(3 * 1024 * 1024 + 17), END_FRAME]);
    const sink = new FakeSink({ slowEvery: 3 });
    accepted = nextSocket();
    const answer = client(port, stream);
    await receiveUpgraded(await accepted, Buffer.alloc(0), sink, options());
    const text = await answer;
    assert.match(text, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    assert.match(text, /HTTP\/1\.1 200 OK\r\n[^]*"piecesVerified":1/);
    assert.ok(Buffer.concat(sink.received).equals(stream), 'the sink saw exactly the bytes sent');
    assert.ok(sink.waits > 0, 'the sink made the receiver wait');
    assert.equal(sink.disposed, 1);
  });

  it('answers a sink failure mid-stream while the client is still sending, and drops the rest', async () => {
    const sink = new FakeSink({ failAt: 100_000 });
    accepted = nextSocket();
    const answer = client(port, Buffer.concat([randomBytes(2 * 1024 * 1024), END_FRAME]));
    await receiveUpgraded(await accepted, Buffer.alloc(0), sink, options());
    const text = await answer;
    assert.match(text, /HTTP\/1\.1 422 Error\r\n[^]*XFER_ERR_PIECE_HASH/);
    assert.equal(sink.disposed, 1);
  });

  it('refuses a stream longer than the limit, bytes sent before the switch, and ends quietly when the client leaves', async () => {
    accepted = nextSocket();
    let answer = client(port, Buffer.alloc(200_000));
    await receiveUpgraded(await accepted, Buffer.alloc(0), new FakeSink(), options({ maxBytes: 100_000 }));
    assert.match(await answer, /101[^]*HTTP\/1\.1 422 Error\r\n[^]*XFER_ERR_PROTOCOL/);

    accepted = nextSocket();
    answer = client(port, Buffer.alloc(0));
    await receiveUpgraded(await accepted, Buffer.from('early'), new FakeSink(), options());
    const early = await answer;
    assert.doesNotMatch(early, /101/, 'no switch');
    assert.match(early, /^HTTP\/1\.1 422 Error\r\n[^]*XFER_ERR_PROTOCOL/);

    const sink = new FakeSink();
    accepted = nextSocket();
    answer = client(port, randomBytes(50_000), { stopAfter: 30_000 });
    await receiveUpgraded(await accepted, Buffer.alloc(0), sink, options());
    assert.doesNotMatch(await answer, /HTTP\/1\.1 200/, 'a stream without END_FRAME is not answered as complete');
    assert.equal(Buffer.concat(sink.received).length, 30_000);
    assert.equal(sink.disposed, 1);
  });

  it('gives up a silent connection', async () => {
    accepted = nextSocket();
    const s = connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    await receiveUpgraded(await accepted, Buffer.alloc(0), new FakeSink(), options({ idleMs: 200 }));
    s.destroy();
    assert.match(got, /101[^]*XFER_ERR_NETWORK/);
  });
});

describe('upgraded piece stream, both ends', () => {
  it("the client hears the server's count of pieces taken while it streams, rising, before the answer", async () => {
    const sink = new FakeSink({ pieceBytes: 100_000 });
    const server = createHttpServer((_req, res) => res.writeHead(500).end());
    const done: Array<Promise<void>> = [];
    server.on('upgrade', (_req: IncomingMessage, socket: Socket, head: Buffer) => {
      done.push(receiveUpgraded(socket, head, sink, options({ progressEveryMs: 5 })));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const remote = { apiBase: `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1`, token: 't' };
    const conn = connectRemote(remote, 1);
    const counts: number[] = [];
    try {
      // Ten "pieces" of 100 kB, a pause after each: the interim responses must come while the stream is going on.
      const answer = await putUpgraded(conn, {
        path: '/uploads/u/pieces', signal: new AbortController().signal,
        body: async (write) => {
          for (let i = 0; i < 10; i++) {
            await write(randomBytes(100_000));
            await new Promise((resolve) => setTimeout(resolve, 40));
          }
        },
        onPiecesReceived: (n) => counts.push(n),
      });
      assert.match(answer ?? '', /"piecesVerified":1/);
      await Promise.all(done);
    } finally {
      conn.agent.destroy();
      server.close();
    }
    assert.ok(counts.length >= 3, `interim counts heard: ${counts.join(', ')}`);
    assert.deepEqual(counts, [...counts].sort((a, b) => a - b), 'the count never goes back');
    assert.ok(counts.every((n) => n >= 1 && n <= 10), counts.join(', '));
  });
});

describe('END_FRAME in the frame assembler', () => {
  it('ends the stream; a byte after it is a protocol error; a stream cut before it is not ended', () => {
    const frames: number[] = [];
    const payload = randomBytes(1000);
    const frame = Buffer.concat([encodeFrameHeader({ index: 3, encoding: 0, payloadLength: payload.length, rawLength: payload.length }), payload]);
    const a = new FrameAssembler(new BufferPool(4096), (f) => { frames.push(f.index); f.release(); });
    const all = Buffer.concat([frame, END_FRAME]);
    // Byte by byte: END_FRAME split across pushes is still recognised.
    for (let i = 0; i < all.length; i++) a.push(all.subarray(i, i + 1));
    assert.deepEqual(frames, [3]);
    assert.equal(a.ended, true);
    a.end();
    assert.throws(() => a.push(Buffer.from([0])), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_PROTOCOL');
    const b = new FrameAssembler(new BufferPool(4096), (f) => f.release());
    assert.throws(() => b.push(Buffer.concat([END_FRAME, Buffer.from('x')])), (e: unknown) => e instanceof TransferError && e.code === 'XFER_ERR_PROTOCOL');
    const c = new FrameAssembler(new BufferPool(4096), (f) => f.release());
    c.push(END_FRAME.subarray(0, 10));
    assert.equal(c.ended, false);
  });
});
