/**
 * A token-bucket TCP proxy on 127.0.0.1: a slow link without `tc` (which needs privileges and a network namespace).
 * Each direction has its own bucket (links are full duplex), shared by every connection, and counts its bytes, so a scenario can check the bytes a
 * tool claims to have sent. Used to judge compression: it only pays when the link is slower than the compressor
 * (notes/performance.md, "Compression slows things down on a fast link").
 *
 * The proxy runs inside the bench process. At these rates (≤ 125 MB/s) its CPU cost is small, and it is counted in
 * the bench process's CPU time like any other part of the client side.
 *
 * @example
 * const proxy = await startThrottleProxy({ targetPort: daemon.port, bytesPerSecond: LINK_1GBIT });
 * await runRsync([`rsync://127.0.0.1:${proxy.port}/src/layer.qcow2`, dest]);
 * const { up, down } = proxy.counters();
 * await proxy.close();
 */
import { once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';

/** 100 Mbit/s in bytes per second. */
export const LINK_100MBIT = 12_500_000;
/** 1 Gbit/s in bytes per second (a real link carries ≈117 MB/s of TCP payload; the proxy limits payload bytes). */
export const LINK_1GBIT = 125_000_000;

/** Largest burst of saved-up tokens: 5 ms of traffic, at least 64 KiB (one socket read). */
const BURST_SECONDS = 0.005;
const MIN_BURST_BYTES = 65536;

export interface ThrottleProxyOptions {
  /** Where connections are forwarded. */
  readonly targetPort: number;
  readonly targetHost?: string;
  /** Payload bytes per second, per direction. */
  readonly bytesPerSecond: number;
}

export interface ProxyCounters {
  /** Client → server payload bytes. */
  readonly up: number;
  /** Server → client payload bytes. */
  readonly down: number;
  readonly connections: number;
}

export interface ThrottleProxy {
  /** The port it listens on, on 127.0.0.1. */
  readonly port: number;
  counters(): ProxyCounters;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** A token bucket: take(n) resolves when n bytes may be sent (it returns n). */
export class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #last = performance.now();

  constructor(bytesPerSecond: number) {
    if (!(bytesPerSecond > 0)) throw new RangeError(`bytesPerSecond must be > 0, got ${bytesPerSecond}`);
    this.#rate = bytesPerSecond;
    this.#burst = Math.max(MIN_BURST_BYTES, bytesPerSecond * BURST_SECONDS);
    this.#tokens = this.#burst;
  }

  async take(max: number): Promise<number> {
    // Whole chunks, paid for afterwards: a chunk goes out as soon as the bucket is not in debt, and the debt
    // it leaves is slept off. Handing out whatever had trickled in since the last call instead made the proxy
    // write a few hundred bytes per syscall in a near-busy loop (a full core at 100 Mbit/s, which showed in
    // those scenarios' CPU); waiting for a chunk's worth of tokens first lost the rate to timer granularity.
    for (;;) {
      const now = performance.now();
      this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) / 1000) * this.#rate);
      this.#last = now;
      if (this.#tokens > 0) {
        this.#tokens -= max;
        return max;
      }
      await new Promise((r) => setTimeout(r, Math.max(1, (-this.#tokens / this.#rate) * 1000)));
    }
  }
}

/** Starts the proxy; close() it when done (scenarios do so in teardown). */
export async function startThrottleProxy(opts: ThrottleProxyOptions): Promise<ThrottleProxy> {
  const counts = { up: 0, down: 0, connections: 0 };
  // One bucket per direction for ALL connections: a link's capacity is shared (a tool opening two connections
  // must not get twice the bandwidth).
  const up = new TokenBucket(opts.bytesPerSecond);
  const down = new TokenBucket(opts.bytesPerSecond);
  const sockets = new Set<Socket>();
  // allowHalfOpen: a client that ends its side still waits for the answer (tcp-sink, HTTP/1.0 style protocols);
  // each direction's end is passed on by pump() only after its queued bytes have gone out.
  const server = createServer({ noDelay: true, allowHalfOpen: true }, (client) => {
    counts.connections++;
    const upstream = connect({ port: opts.targetPort, host: opts.targetHost ?? '127.0.0.1', noDelay: true, allowHalfOpen: true });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
      // Either side failing ends the pair: a half-dead proxied connection would hang the tool.
      s.once('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    pump(client, upstream, up, (n) => (counts.up += n));
    pump(upstream, client, down, (n) => (counts.down += n));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('throttle proxy: no port');
  return {
    port: address.port,
    counters: () => ({ ...counts }),
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** Copies `from` to `to` at the bucket's rate, honouring backpressure on `to`, and passes on the end of stream. */
function pump(from: Socket, to: Socket, bucket: TokenBucket, count: (n: number) => void): void {
  const fail = (): void => {
    from.destroy();
    to.destroy();
  };
  let chain = Promise.resolve();
  from.on('data', (chunk: Buffer) => {
    from.pause();
    chain = chain.then(async () => {
      for (let at = 0; at < chunk.length; ) {
        const n = await bucket.take(chunk.length - at);
        if (to.destroyed) return;
        const more = to.write(chunk.subarray(at, at + n));
        count(n);
        at += n;
        if (!more) await Promise.race([once(to, 'drain'), once(to, 'close')]);
      }
      from.resume();
    }).catch(fail);
  });
  from.once('end', () => {
    chain = chain.then(() => {
      to.end();
    }).catch(fail);
  });
}
