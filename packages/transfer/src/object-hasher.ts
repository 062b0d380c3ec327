/**
 * The whole-object SHA-256 (the store's id), recomputed from the bytes ON DISK while pieces arrive, in a
 * worker thread so the main thread keeps receiving. The receiver tells it how far the verified prefix
 * reaches; the worker reads from the page cache (cheap) in order. At the end the digest must equal the
 * object's id before the store adopts it.
 *
 * Workers are pooled: starting one costs 60–130 ms here (a new V8 isolate), as long as hashing a 60 MB check-in
 * layer, and each costs 15–30 MB of memory. A worker hashes several objects at once, interleaved (each message
 * says which object), and there are never more workers than cores (four at most): a server receiving a hundred
 * check-ins at once runs a few workers, not a hundred, and hashing is CPU-bound anyway. Two idle workers are
 * kept for the next objects, unref'd: they never keep a process alive.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

import { TransferError } from './errors.ts';

// Plain CommonJS for `eval: true`: the worker must not depend on the TypeScript loader being present.
// Per object (`job`): `open` starts it, `upTo` messages follow its verified prefix, `final` answers with the digest,
// `cancel` drops it. A failed object closes its file and answers with `error`; the worker goes on with the others.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const crypto = require('node:crypto');
const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
const jobs = new Map();
const drop = (id) => {
  const job = jobs.get(id);
  jobs.delete(id);
  if (job !== undefined) try { fs.closeSync(job.fd); } catch {}
};
parentPort.on('message', (m) => {
  try {
    if (m.open !== undefined) {
      jobs.set(m.job, { fd: fs.openSync(m.open, 'r'), hash: crypto.createHash('sha256'), pos: 0 });
      return;
    }
    if (m.cancel) return drop(m.job);
    const job = jobs.get(m.job);
    if (job === undefined) return;
    while (job.pos < m.upTo) {
      const n = fs.readSync(job.fd, buf, 0, Math.min(buf.length, m.upTo - job.pos), job.pos);
      if (n === 0) throw new Error('file ended at ' + job.pos + ' before ' + m.upTo);
      job.hash.update(buf.subarray(0, n));
      job.pos += n;
    }
    if (m.final) {
      drop(m.job);
      parentPort.postMessage({ job: m.job, digest: job.hash.digest('hex'), bytes: job.pos });
    }
  } catch (e) {
    drop(m.job);
    parentPort.postMessage({ job: m.job, error: String(e && e.message || e) });
  }
});
`;

/** Workers at most, whatever the number of objects being hashed. */
const MAX_WORKERS = Math.max(1, Math.min(4, availableParallelism()));
/** Idle workers kept for the next objects (more than this many idle at once are ended). */
const MAX_IDLE = 2;

interface Job {
  resolve: (r: { digest: string; bytes: number }) => void;
  reject: (e: Error) => void;
}

interface PooledWorker {
  readonly worker: Worker;
  readonly jobs: Map<number, Job>;
}

const pool: PooledWorker[] = [];
let nextJob = 1;

function startWorker(): PooledWorker {
  const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
  const pw: PooledWorker = { worker, jobs: new Map() };
  worker.on('message', (m: { job: number; digest?: string; bytes?: number; error?: string }) => {
    const job = pw.jobs.get(m.job);
    if (job === undefined) return;
    pw.jobs.delete(m.job);
    if (m.error !== undefined) job.reject(new TransferError('XFER_ERR_OBJECT_HASH', `hashing the received object failed: ${m.error}`));
    else job.resolve({ digest: m.digest ?? '', bytes: m.bytes ?? 0 });
    settle(pw);
  });
  // A worker that dies takes its objects with it (and leaves the pool): the next objects get another.
  const fail = (e: Error): void => {
    const i = pool.indexOf(pw);
    if (i >= 0) pool.splice(i, 1);
    for (const job of pw.jobs.values()) job.reject(e);
    pw.jobs.clear();
  };
  worker.on('error', (e) => fail(new TransferError('XFER_ERR_OBJECT_HASH', `the hashing worker failed: ${e.message}`, {}, { cause: e })));
  worker.on('exit', (code) => fail(new TransferError('XFER_ERR_OBJECT_HASH', `the hashing worker exited (${code})`)));
  worker.unref();
  pool.push(pw);
  return pw;
}

/** The least busy worker; a new one while every worker is busy and the pool has room. */
function pickWorker(): PooledWorker {
  let least: PooledWorker | undefined;
  for (const pw of pool) if (least === undefined || pw.jobs.size < least.jobs.size) least = pw;
  return least !== undefined && (least.jobs.size === 0 || pool.length >= MAX_WORKERS) ? least : startWorker();
}

/** A worker with objects keeps the process alive; an idle one does not, and idle ones beyond MAX_IDLE end. */
function settle(pw: PooledWorker): void {
  if (pw.jobs.size > 0) {
    pw.worker.ref();
    return;
  }
  pw.worker.unref();
  if (pool.filter((p) => p.jobs.size === 0).length > MAX_IDLE) {
    pool.splice(pool.indexOf(pw), 1);
    void pw.worker.terminate();
  }
}

/**
 * Starts a worker ahead of a transfer (off its critical path), e.g. while the server seals a check-out.
 * Idempotent: does nothing when one is idle already.
 */
export function prewarmObjectHasher(): void {
  if (!objectHasherReady()) startWorker();
}

/** Whether a worker waits idle now: hashing there starts at once, without a worker's start-up (60–130 ms here). */
export function objectHasherReady(): boolean {
  return pool.some((pw) => pw.jobs.size === 0);
}

/** How many hashing workers exist now (for tests and diagnostics). */
export function objectHasherWorkers(): number {
  return pool.length;
}

export class ObjectHasher {
  readonly #pw: PooledWorker;
  readonly #job = nextJob++;
  readonly #result: Promise<{ digest: string; bytes: number }>;
  #sent = 0;
  #done = false;

  constructor(path: string) {
    const pw = pickWorker();
    this.#pw = pw;
    this.#result = new Promise((resolve, reject) => pw.jobs.set(this.#job, { resolve, reject }));
    this.#result.catch(() => undefined);
    settle(pw);
    pw.worker.postMessage({ job: this.#job, open: path });
  }

  /** The bytes in [0, upTo) are final on disk. */
  advance(upTo: number): void {
    if (this.#done || upTo <= this.#sent) return;
    this.#sent = upTo;
    this.#pw.worker.postMessage({ job: this.#job, upTo, final: false });
  }

  async digest(size: number): Promise<string> {
    this.#done = true;
    this.#pw.worker.postMessage({ job: this.#job, upTo: size, final: true });
    return (await this.#result).digest;
  }

  /** Abandons the object: the worker closes its file after the read it may be in the middle of. */
  cancel(): Promise<void> {
    if (this.#done && !this.#pw.jobs.has(this.#job)) return Promise.resolve();
    this.#done = true;
    this.#pw.worker.postMessage({ job: this.#job, cancel: true });
    const job = this.#pw.jobs.get(this.#job);
    this.#pw.jobs.delete(this.#job);
    job?.reject(new TransferError('XFER_ERR_OBJECT_HASH', 'cancelled'));
    settle(this.#pw);
    return Promise.resolve();
  }
}
