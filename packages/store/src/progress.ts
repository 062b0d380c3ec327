/** Byte progress with rate and ETA, throttled so a 1 MiB-chunk loop does not call back thousands of times. */

export interface Progress {
  bytesDone: number;
  bytesTotal: number;
  rateBytesPerSec: number;
  etaSeconds: number | null;
}

export type ProgressCallback = (p: Progress) => void;

const MIN_INTERVAL_MS = 100;

export class ProgressMeter {
  readonly #start: number;
  #lastEmit = -Infinity;

  constructor(
    private readonly total: number,
    private readonly onProgress: ProgressCallback | undefined,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.#start = now();
  }

  /** The progress at `done` bytes; calls back at most every 100 ms, and always when `final`. */
  update(done: number, final = false): Progress {
    const t = this.now();
    const elapsed = (t - this.#start) / 1000;
    const rate = elapsed > 0 ? done / elapsed : 0;
    const remaining = Math.max(0, this.total - done);
    const p: Progress = {
      bytesDone: done,
      bytesTotal: this.total,
      rateBytesPerSec: rate,
      etaSeconds: final || remaining === 0 ? 0 : rate > 0 ? remaining / rate : null,
    };
    if (this.onProgress !== undefined && (final || t - this.#lastEmit >= MIN_INTERVAL_MS)) {
      this.#lastEmit = t;
      this.onProgress(p);
    }
    return p;
  }
}
