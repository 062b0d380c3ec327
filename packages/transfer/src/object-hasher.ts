/**
 * The whole-object SHA-256 (the store's id), recomputed from the bytes ON DISK while pieces arrive, in a
 * worker thread so the main thread keeps receiving. The receiver tells it how far the verified prefix
 * reaches; the worker reads from the page cache (cheap) in order. At the end the digest must equal the
 * object's id before the store adopts it.
 *
 * Workers are kept between objects: starting one costs 60–130 ms here (a new V8 isolate), as long as hashing a
 * 60 MB check-in layer, and a server hashes every upload. An idle worker is unref'd: it never keeps a process
 * alive.
 */
import { Worker } from 'node:worker_threads';

import { TransferError } from './errors.ts';

// Plain CommonJS for `eval: true`: the worker must not depend on the TypeScript loader being present.
// One object at a time per worker: `open` starts it, `upTo` messages follow the verified prefix, `final` answers
// with the digest and leaves the worker ready for the next `open`.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const crypto = require('node:crypto');
const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
let job = null;
parentPort.on('message', (m) => {
  try {
    if (m.open !== undefined) {
      job = { fd: fs.openSync(m.open, 'r'), hash: crypto.createHash('sha256'), pos: 0 };
      return;
    }
    while (job.pos < m.upTo) {
      const n = fs.readSync(job.fd, buf, 0, Math.min(buf.length, m.upTo - job.pos), job.pos);
      if (n === 0) throw new Error('file ended at ' + job.pos + ' before ' + m.upTo);
      job.hash.update(buf.subarray(0, n));
      job.pos += n;
    }
    if (m.final) {
      fs.closeSync(job.fd);
      parentPort.postMessage({ digest: job.hash.digest('hex'), bytes: job.pos });
      job = null;
    }
  } catch (e) {
    parentPort.postMessage({ error: String(e && e.message || e) });
  }
});
`;

/** Idle workers kept for the next object (more than this many idle at once are ended). */
const MAX_IDLE = 2;
const idle: Worker[] = [];

function takeWorker(): Worker {
  const w = idle.pop() ?? new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
  w.removeAllListeners('exit');
  w.ref();
  return w;
}

function giveBack(w: Worker): void {
  w.removeAllListeners('message').removeAllListeners('error').removeAllListeners('exit');
  if (idle.length >= MAX_IDLE) {
    void w.terminate();
    return;
  }
  // A worker that dies while idle simply leaves the pool.
  w.once('exit', () => {
    const i = idle.indexOf(w);
    if (i >= 0) idle.splice(i, 1);
  });
  w.unref();
  idle.push(w);
}

/**
 * Starts a worker ahead of a transfer (off its critical path), e.g. while the server seals a check-out.
 * Idempotent: does nothing when one is idle already.
 */
export function prewarmObjectHasher(): void {
  if (idle.length === 0) giveBack(new Worker(WORKER_SOURCE, { eval: true, execArgv: [] }));
}

export class ObjectHasher {
  readonly #worker: Worker;
  readonly #result: Promise<{ digest: string; bytes: number }>;
  #sent = 0;
  #done = false;

  constructor(path: string) {
    const w = takeWorker();
    this.#worker = w;
    this.#result = new Promise((resolve, reject) => {
      w.on('message', (m: { digest?: string; bytes?: number; error?: string }) => {
        if (m.error !== undefined) reject(new TransferError('XFER_ERR_OBJECT_HASH', `hashing the received object failed: ${m.error}`));
        else if (m.digest !== undefined) resolve({ digest: m.digest, bytes: m.bytes ?? 0 });
      });
      w.on('error', (e) => reject(new TransferError('XFER_ERR_OBJECT_HASH', `the hashing worker failed: ${e.message}`, {}, { cause: e })));
      w.on('exit', (code) => reject(new TransferError('XFER_ERR_OBJECT_HASH', `the hashing worker exited (${code})`)));
    });
    this.#result.catch(() => undefined);
    w.postMessage({ open: path });
  }

  /** The bytes in [0, upTo) are final on disk. */
  advance(upTo: number): void {
    if (this.#done || upTo <= this.#sent) return;
    this.#sent = upTo;
    this.#worker.postMessage({ upTo, final: false });
  }

  async digest(size: number): Promise<string> {
    this.#done = true;
    this.#worker.postMessage({ upTo: size, final: true });
    let ok = false;
    try {
      const r = await this.#result;
      ok = true;
      return r.digest;
    } finally {
      // Only a worker that finished cleanly is reused; one that failed may hold an open file.
      if (ok) giveBack(this.#worker);
      else await this.#worker.terminate();
    }
  }

  /** Abandons the object: its worker ends (it may be in the middle of a read). */
  async cancel(): Promise<void> {
    this.#done = true;
    await this.#worker.terminate();
  }
}
