/**
 * An HTTP proxy on 127.0.0.1 between a transfer client and a real server, which breaks chosen responses on
 * purpose: flips a byte in a piece stream, cuts a stream after N bytes, or rewrites a JSON body (a lying
 * manifest). Each fault fires a bounded number of times; the proxy counts what it forwarded.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Fault {
  /** Which responses (by request path) the fault applies to. */
  match: (path: string) => boolean;
  /** How many matching responses it breaks (default 1). */
  times?: number;
  /** Flip one byte at this offset of the body. */
  flipByteAt?: number;
  /** Close the connection after this many body bytes. */
  cutAfter?: number;
  /** Replace a JSON body. */
  rewriteJson?: (body: unknown) => unknown;
  /** Hold the request this long before forwarding it (a slow link, so a test can act mid-transfer). */
  delayMs?: number;
}

export interface FaultProxy {
  url: string;
  /** Faults that fired so far. */
  fired: number;
  bodyBytes: number;
  setFaults(faults: Fault[]): void;
  /**
   * Cuts connections at these offsets of the bytes forwarded in responses whose path `match`es, counted across
   * all of them (a transfer broken at random points of its whole stream, not always at the start of a request).
   */
  setCuts(match: (path: string) => boolean, offsets: number[]): void;
  close(): Promise<void>;
}

/**
 * What a proxy forwards of a request's head: not the hop-by-hop fields (RFC 9110 §7.6.1), so an Upgrade
 * meant for this hop stops here (as with a proxy not configured for upgrades).
 */
function endToEnd(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const out = { ...headers };
  const listed = String(headers.connection ?? '').split(',').map((h) => h.trim().toLowerCase()).filter((h) => h !== '');
  for (const h of ['connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade', ...listed]) delete out[h];
  return out;
}

export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  let faults: Array<Fault & { left: number }> = [];
  const state = { fired: 0, bodyBytes: 0 };
  const cuts = { match: (_path: string) => false, offsets: [] as number[], seen: 0 };
  const target = new URL(upstream);
  const server: Server = createServer((req, res) => {
    const fault = faults.find((f) => f.left > 0 && f.match(req.url ?? ''));
    if (fault !== undefined) fault.left--;
    if (fault?.delayMs !== undefined) setTimeout(forward, fault.delayMs);
    else forward();
    function forward(): void {
    const up = request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: endToEnd(req.headers) }, (ur: IncomingMessage) => {
      const headers = { ...ur.headers };
      if (fault?.rewriteJson !== undefined) {
        const chunks: Buffer[] = [];
        ur.on('data', (c: Buffer) => chunks.push(c));
        ur.on('end', () => {
          const body = Buffer.from(JSON.stringify(fault.rewriteJson!(JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown)));
          state.fired++;
          delete headers['content-length'];
          res.writeHead(ur.statusCode ?? 502, headers);
          res.end(body);
        });
        return;
      }
      res.writeHead(ur.statusCode ?? 502, headers);
      let seen = 0;
      ur.on('data', (c: Buffer) => {
        let chunk = c;
        if (fault?.flipByteAt !== undefined && fault.flipByteAt >= seen && fault.flipByteAt < seen + c.length) {
          chunk = Buffer.from(c);
          chunk[fault.flipByteAt - seen]! ^= 0xff;
          state.fired++;
        }
        const next = cuts.offsets[0];
        const cutHere = next !== undefined && cuts.match(req.url ?? '') ? next - cuts.seen : undefined;
        if (cutHere !== undefined && c.length > cutHere) {
          cuts.offsets.shift();
          cuts.seen += Math.max(0, cutHere);
          res.write(chunk.subarray(0, Math.max(0, cutHere)));
          state.fired++;
          res.destroy();
          ur.destroy();
          return;
        }
        if (cutHere !== undefined) cuts.seen += c.length;
        if (fault?.cutAfter !== undefined && seen + c.length > fault.cutAfter) {
          res.write(chunk.subarray(0, Math.max(0, fault.cutAfter - seen)));
          state.fired++;
          res.destroy();
          ur.destroy();
          return;
        }
        seen += c.length;
        state.bodyBytes += c.length;
        res.write(chunk);
      });
      ur.on('end', () => res.end());
      ur.on('error', () => res.destroy());
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get fired() { return state.fired; },
    get bodyBytes() { return state.bodyBytes; },
    setFaults(f) { faults = f.map((x) => ({ ...x, left: x.times ?? 1 })); },
    setCuts(match, offsets) {
      cuts.match = match;
      cuts.offsets = [...offsets].sort((a, b) => a - b);
      cuts.seen = 0;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
