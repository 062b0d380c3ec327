/**
 * A TCP proxy on 127.0.0.1 that cuts connections at chosen offsets of the bytes clients send (counted across all
 * connections): a transfer's upload stream broken at random points, wherever a request or a piece happens to be —
 * an upgraded connection included, which an HTTP-level proxy would not pass on.
 */
import { connect, createServer, type Socket } from 'node:net';

export interface CutProxy {
  url: string;
  /** Client → server bytes forwarded so far. */
  up(): number;
  /** Cuts that happened so far. */
  cuts(): number;
  /** From now on, cut at these offsets of the client → server bytes (counted from the proxy's start). */
  setCuts(offsets: number[]): void;
  close(): Promise<void>;
}

export async function startCutProxy(upstream: string): Promise<CutProxy> {
  const target = new URL(upstream);
  const sockets = new Set<Socket>();
  let up = 0;
  let done = 0;
  let pending: number[] = [];
  const server = createServer((client) => {
    const upstreamSocket = connect(Number(target.port), target.hostname);
    for (const s of [client, upstreamSocket]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => { client.destroy(); upstreamSocket.destroy(); });
    }
    client.on('data', (chunk: Buffer) => {
      const next = pending[0];
      if (next !== undefined && up + chunk.length > next) {
        // Forward up to the cut, then break both sides of this connection at once (a reset, not a clean end).
        const keep = Math.max(0, next - up);
        up += keep;
        pending.shift();
        done++;
        upstreamSocket.write(chunk.subarray(0, keep), () => { client.resetAndDestroy(); upstreamSocket.resetAndDestroy(); });
        client.pause();
        return;
      }
      up += chunk.length;
      if (!upstreamSocket.write(chunk)) client.pause();
    });
    upstreamSocket.on('drain', () => client.resume());
    upstreamSocket.on('data', (chunk: Buffer) => {
      if (!client.write(chunk)) upstreamSocket.pause();
    });
    client.on('drain', () => upstreamSocket.resume());
    client.on('end', () => upstreamSocket.end());
    upstreamSocket.on('end', () => client.end());
  });
  server.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    up: () => up,
    cuts: () => done,
    setCuts(offsets) {
      pending = [...offsets].sort((a, b) => a - b);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
