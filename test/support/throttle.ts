/** A bandwidth-limited (and optionally high-latency) TCP proxy on 127.0.0.1, so that a test can act in the middle of a transfer. */
import { connect, createServer, type Socket } from 'node:net';

import { seededRandom } from './prng.ts';

export interface ThrottleOptions {
  /** One-way delay added to every chunk, in each direction (a long-distance or satellite link). Default 0. */
  latencyMs?: number;
  /** Each chunk's delay is latencyMs ± up to jitterMs, drawn uniformly. Default 0. */
  jitterMs?: number;
  /** Seed of the jitter's PRNG (mulberry32), so a failing run replays the same delays. Default 1. */
  seed?: number;
}

export interface Throttle {
  url: string;
  /** Connections accepted so far: a client that restarts what it does opens new ones. */
  connections(): number;
  /** Bytes forwarded so far, client → server (`up`) and server → client (`down`), all connections together. */
  bytes(): { up: number; down: number };
  /** HTTP requests seen so far, as `METHOD /path?query`, in the order their heads went through. */
  requests(): string[];
  /**
   * Changes the latency of chunks read from now on (bytes already on their way keep theirs, and their order), on
   * connections opened with a latency; those opened without one keep forwarding at once.
   */
  setLatency(latencyMs: number, jitterMs?: number): void;
  close(): Promise<void>;
}

/**
 * An HTTP/1.1 request line. Looked for at the start of a chunk only (its first 4 KiB): a client writes a request's
 * head before its body, and a kept-alive connection's next request after the previous answer, so a head starts a
 * chunk; bulk data is never scanned.
 */
const REQUEST_LINE = /(?:^|\r\n)(GET|HEAD|POST|PUT|DELETE|PATCH) (\S+) HTTP\/1\.[01]\r\n/g;

/**
 * A TCP proxy that limits the bytes per second through it (both directions, all connections together). Time spent
 * idle earns no credit: a transfer that starts after a quiet spell is as slow as one that starts at once (a test
 * acting "in the middle of a transfer" must not find it finished).
 *
 * With `latencyMs`, a chunk leaves the bottleneck once the chunks before it (in its direction, any connection) have
 * gone through at `bytesPerSec`, then arrives latency ± jitter later; each connection's bytes arrive in order in
 * each direction (a later chunk never overtakes an earlier one), and a close reaches the other side only after the
 * bytes sent before it (a half-close is not kept apart: as by Node's default, a FIN ends both directions). Without
 * latency the proxy behaves as it always did: a chunk goes on at once, its sender waits out the chunk's time at
 * the rate, and a close is passed on at once.
 */
export async function throttle(upstream: string, bytesPerSec: number, opts: ThrottleOptions = {}): Promise<Throttle> {
  const target = new URL(upstream);
  let latency = opts.latencyMs ?? 0;
  let jitter = opts.jitterMs ?? 0;
  const random = seededRandom(opts.seed ?? 1);
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let accepted = 0;
  const forwarded = { up: 0, down: 0 };
  const requests: string[] = [];
  /** When each direction may send again (performance.now() time). */
  const next = { up: 0, down: 0 };
  const later = (fn: () => void, ms: number): void => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, Math.max(0, ms));
    timers.add(t);
  };
  const pump = (from: Socket, to: Socket, dir: 'up' | 'down'): void => {
    /** Chosen once per connection: its bytes never overtake each other when the latency changes. */
    const delayed = latency !== 0 || jitter !== 0;
    /**
     * What is on its way to `to`, in order: chunks, then the close (null). One timer at a time, for the head only:
     * timers of different durations due at about the same time may fire in either order.
     */
    const line: Array<{ at: number; chunk: Buffer | null }> = [];
    let timer = false;
    const deliver = (): void => {
      timer = false;
      const now = performance.now();
      while (line.length > 0 && line[0]!.at <= now) {
        const { chunk } = line.shift()!;
        if (to.destroyed) continue;
        if (chunk === null) to.end();
        else to.write(chunk);
      }
      if (line.length > 0 && !timer) {
        timer = true;
        later(deliver, line[0]!.at - now);
      }
    };
    const send = (at: number, chunk: Buffer | null): void => {
      // A later chunk never arrives before an earlier one (in-order delivery, as TCP's).
      line.push({ at: Math.max(at, line.at(-1)?.at ?? 0), chunk });
      if (!timer) {
        timer = true;
        later(deliver, line[0]!.at - performance.now());
      }
    };
    from.on('data', (chunk: Buffer) => {
      forwarded[dir] += chunk.length;
      if (dir === 'up') for (const m of chunk.toString('latin1', 0, 4096).matchAll(REQUEST_LINE)) requests.push(`${m[1]} ${m[2]}`);
      const now = performance.now();
      next[dir] = Math.max(next[dir], now) + (chunk.length / bytesPerSec) * 1000;
      const wait = next[dir] - now;
      if (!delayed) to.write(chunk);
      else send(next[dir] + Math.max(0, latency + (random() * 2 - 1) * jitter), chunk);
      if (wait > 0) {
        from.pause();
        later(() => from.resume(), wait);
      }
    });
    if (!delayed) {
      from.on('close', () => to.destroy());
      from.on('error', () => to.destroy());
      return;
    }
    // The close goes the same way as the bytes, after the last of them. Not on `to`'s close: a server that answers
    // and closes must still see its answer reach the client (the other direction's line ends the client after it).
    let closing = false;
    const closeTo = (): void => {
      if (closing) return;
      closing = true;
      send(performance.now(), null);
    };
    from.on('close', closeTo);
    from.on('error', closeTo);
  };
  const server = createServer((client) => {
    accepted++;
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
    connections: () => accepted,
    bytes: () => ({ ...forwarded }),
    requests: () => [...requests],
    setLatency: (latencyMs, jitterMs = 0) => {
      latency = latencyMs;
      jitter = jitterMs;
    },
    close: async () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
