/** A bandwidth-limited TCP proxy on 127.0.0.1, so that a test can act in the middle of a transfer. */
import { connect, createServer, type Socket } from 'node:net';

/**
 * A TCP proxy that limits the bytes per second through it (both directions, all connections together). Time spent
 * idle earns no credit: a transfer that starts after a quiet spell is as slow as one that starts at once (a test
 * acting "in the middle of a transfer" must not find it finished).
 */
export async function throttle(upstream: string, bytesPerSec: number): Promise<{ url: string; close(): Promise<void> }> {
  const target = new URL(upstream);
  const sockets = new Set<Socket>();
  /** When each direction may send again (performance.now() time). */
  const next = { up: 0, down: 0 };
  const pump = (from: Socket, to: Socket, dir: 'up' | 'down'): void => {
    from.on('data', (chunk: Buffer) => {
      to.write(chunk);
      const now = performance.now();
      next[dir] = Math.max(next[dir], now) + (chunk.length / bytesPerSec) * 1000;
      const wait = next[dir] - now;
      if (wait > 0) {
        from.pause();
        setTimeout(() => from.resume(), wait);
      }
    });
    from.on('close', () => to.destroy());
    from.on('error', () => to.destroy());
  };
  const server = createServer((client) => {
    const up = connect(Number(target.port), target.hostname);
    sockets.add(client);
    sockets.add(up);
    client.on('close', () => sockets.delete(client));
    up.on('close', () => sockets.delete(up));
    pump(client, up, 'up');
    pump(up, client, 'down');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
