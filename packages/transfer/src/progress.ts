/**
 * Transfer progress: what a CLI bar, the API and the UI show. Rates are computed over a sliding window, so
 * a stall shows as a falling rate and a growing ETA rather than a lifetime average.
 */
export type TransferPhase = 'planning' | 'deriving' | 'resuming' | 'seeding' | 'transferring' | 'verifying' | 'publishing' | 'done';

export interface TransferProgress {
  readonly direction: 'download' | 'upload';
  readonly phase: TransferPhase;
  /** The object being worked on, and its position in the list. */
  readonly objectId: string | null;
  readonly objectIndex: number;
  readonly objectCount: number;
  /** Bytes of all objects that are verified and in place (including those already present or seeded). */
  readonly bytesDone: number;
  readonly bytesTotal: number;
  /** Bytes that actually crossed the network (frame headers and compressed payloads). */
  readonly bytesOnWire: number;
  /** Bytes that did not have to cross the network: already held, resumed, or read from a seed. */
  readonly bytesSaved: number;
  readonly rateBytesPerSec: number;
  readonly etaSeconds: number | null;
  readonly compression: boolean;
}

export type TransferProgressCallback = (p: TransferProgress) => void;

const WINDOW_MS = 3000;
const EMIT_EVERY_MS = 200;

export class ProgressTracker {
  bytesDone = 0;
  bytesOnWire = 0;
  bytesSaved = 0;
  phase: TransferPhase = 'planning';
  objectId: string | null = null;
  objectIndex = 0;
  compression = false;
  readonly #samples: Array<{ t: number; done: number }> = [];
  #lastEmit = -Infinity;

  constructor(
    readonly direction: 'download' | 'upload',
    readonly bytesTotal: number,
    readonly objectCount: number,
    private readonly callback: TransferProgressCallback | undefined,
    private readonly now: () => number = () => performance.now(),
  ) {}

  snapshot(): TransferProgress {
    const t = this.now();
    this.#samples.push({ t, done: this.bytesDone - this.bytesSaved });
    while (this.#samples.length > 2 && t - this.#samples[0]!.t > WINDOW_MS) this.#samples.shift();
    const first = this.#samples[0]!;
    const dt = (t - first.t) / 1000;
    const rate = dt > 0 ? Math.max(0, (this.bytesDone - this.bytesSaved - first.done) / dt) : 0;
    const remaining = Math.max(0, this.bytesTotal - this.bytesDone);
    return {
      direction: this.direction, phase: this.phase, objectId: this.objectId, objectIndex: this.objectIndex, objectCount: this.objectCount,
      bytesDone: this.bytesDone, bytesTotal: this.bytesTotal, bytesOnWire: this.bytesOnWire, bytesSaved: this.bytesSaved,
      rateBytesPerSec: rate, etaSeconds: remaining === 0 ? 0 : rate > 0 ? remaining / rate : null, compression: this.compression,
    };
  }

  /** Calls back at most every 200 ms, and always when `force`. */
  emit(force = false): void {
    if (this.callback === undefined) return;
    const t = this.now();
    if (!force && t - this.#lastEmit < EMIT_EVERY_MS) return;
    this.#lastEmit = t;
    this.callback(this.snapshot());
  }
}
