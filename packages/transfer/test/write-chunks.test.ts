// writeChunks on a real HTTP response whose client goes away mid-stream: the write must settle (rejected), or the
// server's piece stream would hold its file, buffers and sender slot forever.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { describe, it } from 'node:test';

import { TransferError } from '../src/errors.ts';
import { writeChunks } from '../src/http.ts';

describe('writeChunks', () => {
  it('rejects once the connection closes under a pending write, instead of waiting forever', async () => {
    const chunk = Buffer.alloc(1024 * 1024, 7);
    let settle: (outcome: unknown) => void = () => undefined;
    const outcome = new Promise<unknown>((resolve) => (settle = resolve));
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(1024 * chunk.length) });
      void (async () => {
        try {
          for (let i = 0; i < 1024; i++) await writeChunks(res, [chunk.subarray(0, 16), chunk]);
          settle('finished');
        } catch (e) {
          settle(e);
        }
      })();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
      socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      let got = 0;
      socket.on('data', (d: Buffer) => {
        got += d.length;
        if (got > 4 * chunk.length) socket.destroy();
      });
      // Bounded: before the fix this stayed pending; 20 s is far beyond any write here.
      const result = await Promise.race([outcome, new Promise((resolve) => setTimeout(() => resolve('still pending after 20 s'), 20_000).unref())]);
      assert.ok(result instanceof TransferError, String(result));
      assert.equal(result.code, 'XFER_ERR_NETWORK');
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
