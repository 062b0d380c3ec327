/**
 * The whole-object SHA-256 (the store's id), recomputed from the bytes ON DISK while pieces arrive, in a
 * worker thread so the main thread keeps receiving. The receiver tells it how far the verified prefix
 * reaches; the worker reads from the page cache (cheap) in order. At the end the digest must equal the
 * object's id before the store adopts it.
 */
import { Worker } from 'node:worker_threads';

import { TransferError } from './errors.ts';

// Plain CommonJS for `eval: true`: the worker must not depend on the TypeScript loader being present.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const crypto = require('node:crypto');
const fd = fs.openSync(workerData.path, 'r');
const hash = crypto.createHash('sha256');
const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
let pos = 0;
parentPort.on('message', (m) => {
  try {
    while (pos < m.upTo) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, m.upTo - pos), pos);
      if (n === 0) throw new Error('file ended at ' + pos + ' before ' + m.upTo);
      hash.update(buf.subarray(0, n));
      pos += n;
    }
    if (m.final) {
      fs.closeSync(fd);
      parentPort.postMessage({ digest: hash.digest('hex'), bytes: pos });
    }
  } catch (e) {
    parentPort.postMessage({ error: String(e && e.message || e) });
  }
});
`;

export class ObjectHasher {
  readonly #worker: Worker;
  readonly #result: Promise<{ digest: string; bytes: number }>;
  #sent = 0;

  constructor(path: string) {
    this.#worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { path } });
    this.#result = new Promise((resolve, reject) => {
      this.#worker.on('message', (m: { digest?: string; bytes?: number; error?: string }) => {
        if (m.error !== undefined) reject(new TransferError('XFER_ERR_OBJECT_HASH', `hashing the received object failed: ${m.error}`));
        else if (m.digest !== undefined) resolve({ digest: m.digest, bytes: m.bytes ?? 0 });
      });
      this.#worker.on('error', (e) => reject(new TransferError('XFER_ERR_OBJECT_HASH', `the hashing worker failed: ${e.message}`, {}, { cause: e })));
      this.#worker.on('exit', (code) => reject(new TransferError('XFER_ERR_OBJECT_HASH', `the hashing worker exited (${code})`)));
    });
    this.#result.catch(() => undefined);
  }

  /** The bytes in [0, upTo) are final on disk. */
  advance(upTo: number): void {
    if (upTo <= this.#sent) return;
    this.#sent = upTo;
    this.#worker.postMessage({ upTo, final: false });
  }

  async digest(size: number): Promise<string> {
    this.#worker.postMessage({ upTo: size, final: true });
    try {
      const r = await this.#result;
      return r.digest;
    } finally {
      await this.#worker.terminate();
    }
  }

  async cancel(): Promise<void> {
    await this.#worker.terminate();
  }
}
