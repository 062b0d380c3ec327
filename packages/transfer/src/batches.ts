/**
 * A work queue of piece batches shared by the requests in flight: contiguous runs of missing pieces cut into
 * batches of at most `maxPieces`, re-queued (only their unfinished pieces) when a request fails, with a
 * bounded number of attempts per piece.
 */
export interface Batch {
  readonly first: number;
  readonly count: number;
}

export function planBatches(missing: readonly number[], maxPieces: number): Batch[] {
  const out: Batch[] = [];
  let i = 0;
  while (i < missing.length) {
    const first = missing[i]!;
    let count = 1;
    while (i + count < missing.length && missing[i + count] === first + count && count < maxPieces) count++;
    out.push({ first, count });
    i += count;
  }
  return out;
}

export class BatchQueue {
  readonly #queue: Batch[];
  readonly #attempts = new Map<number, number>();
  #active = 0;
  #waiters: Array<() => void> = [];
  #failed: Error | null = null;

  constructor(batches: Batch[], readonly maxPieces: number, readonly maxAttempts: number) {
    this.#queue = [...batches];
  }

  /**
   * The next batch (at most `limit` pieces of it: the rest stays first in line), or null when everything is
   * done (or failed). Waits while others may still re-queue.
   */
  async next(limit = this.maxPieces): Promise<Batch | null> {
    for (;;) {
      if (this.#failed !== null) return null;
      const b = this.#queue.shift();
      if (b !== undefined) {
        this.#active++;
        if (b.count <= limit) return b;
        this.#queue.unshift({ first: b.first + limit, count: b.count - limit });
        return { first: b.first, count: limit };
      }
      if (this.#active === 0) return null;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** The batch is finished; `unfinished` pieces go back in the queue. Returns the highest attempt count. */
  settle(unfinished: readonly number[]): number {
    let worst = 0;
    for (const i of unfinished) {
      const a = (this.#attempts.get(i) ?? 0) + 1;
      this.#attempts.set(i, a);
      worst = Math.max(worst, a);
    }
    if (unfinished.length > 0) this.#queue.unshift(...planBatches(unfinished, this.maxPieces));
    this.#active--;
    this.#wake();
    return worst;
  }

  fail(e: unknown): void {
    this.#failed ??= e instanceof Error ? e : new Error('transfer failed', { cause: e });
    this.#wake();
  }

  get failure(): Error | null {
    return this.#failed;
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }
}

export async function backoff(attempt: number, signal: AbortSignal | undefined): Promise<void> {
  const ms = Math.min(2000, 100 * 2 ** Math.max(0, attempt - 1));
  await new Promise<void>((resolve) => {
    // The listener goes when the wait ends either way: a long transfer's retries must not pile them up on one signal.
    const done = (): void => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
