// In-memory sliding-window limiter for login attempts. Per process: with several servers behind a balancer
// each counts separately, which only loosens the limit by that factor. Memory is bounded by maxKeys.

import type { Clock } from '../ports.ts';

export interface LimiterOptions {
  limit: number;
  windowMs: number;
  clock: Clock;
  /** Most keys kept; beyond it the least recently hit key is forgotten. */
  maxKeys?: number;
}

export class SlidingWindowLimiter {
  readonly #hits = new Map<string, number[]>();
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #clock: Clock;
  readonly #maxKeys: number;

  constructor(options: LimiterOptions) {
    this.#limit = options.limit;
    this.#windowMs = options.windowMs;
    this.#clock = options.clock;
    this.#maxKeys = options.maxKeys ?? 100_000;
  }

  /** 0 when another attempt is allowed now, else the ms until one is. */
  retryAfterMs(key: string): number {
    const now = this.#clock.now();
    const hits = this.#prune(key, now);
    if (hits.length < this.#limit) return 0;
    const oldest = hits[hits.length - this.#limit] ?? now;
    return Math.max(1, oldest + this.#windowMs - now);
  }

  hit(key: string): void {
    const now = this.#clock.now();
    const hits = this.#prune(key, now);
    hits.push(now);
    // Re-insert so Map order is least-recently-hit first, for eviction.
    this.#hits.delete(key);
    this.#hits.set(key, hits);
    if (this.#hits.size > this.#maxKeys) {
      const first = this.#hits.keys().next();
      if (first.done !== true) this.#hits.delete(first.value);
    }
  }

  reset(key: string): void {
    this.#hits.delete(key);
  }

  #prune(key: string, now: number): number[] {
    const hits = this.#hits.get(key) ?? [];
    const from = now - this.#windowMs;
    let i = 0;
    while (i < hits.length && (hits[i] ?? 0) <= from) i++;
    return i === 0 ? hits : hits.slice(i);
  }
}

/** Login limits: one window per user name and one per client address. */
export class LoginLimiter {
  readonly #byUser: SlidingWindowLimiter;
  readonly #byIp: SlidingWindowLimiter;

  constructor(options: { perUser: number; perIp: number; windowMs: number; clock: Clock }) {
    this.#byUser = new SlidingWindowLimiter({ limit: options.perUser, windowMs: options.windowMs, clock: options.clock });
    this.#byIp = new SlidingWindowLimiter({ limit: options.perIp, windowMs: options.windowMs, clock: options.clock });
  }

  /**
   * Count an attempt, or refuse it. Returns 0 when allowed (and counted), else ms to wait. Attempts are
   * counted before the password is checked, so parallel guesses cannot slip past the limit.
   */
  attempt(user: string, ip: string): number {
    const wait = Math.max(this.#byUser.retryAfterMs(user), this.#byIp.retryAfterMs(ip));
    if (wait > 0) return wait;
    this.#byUser.hit(user);
    this.#byIp.hit(ip);
    return 0;
  }

  /**
   * A successful login clears the name's window (its owner is not locked out by their own typos), but not
   * the address's: one valid account must not reset the budget for guessing others.
   */
  succeeded(user: string): void {
    this.#byUser.reset(user);
  }
}
