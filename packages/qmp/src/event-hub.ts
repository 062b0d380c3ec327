/**
 * Fans QMP events out to listeners, one-shot waiters and async iterators. Everything registers
 * synchronously, so a waiter created before `await`ing a command sees events that arrive in the
 * same chunk as that command's reply.
 */
import { abortError } from './abort.ts';
import type { QmpEvent } from './types.ts';

export type QmpEventListener = (event: QmpEvent) => void;

export class EventHub {
  readonly #listeners = new Set<QmpEventListener>();
  readonly #closeHooks = new Set<(reason: Error) => void>();
  #closedWith: Error | null = null;

  get closedWith(): Error | null {
    return this.#closedWith;
  }

  on(listener: QmpEventListener): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** Runs `hook` once when the hub closes (immediately if it already has). Returns an unsubscribe. */
  onClose(hook: (reason: Error) => void): () => void {
    if (this.#closedWith) {
      hook(this.#closedWith);
      return () => {};
    }
    this.#closeHooks.add(hook);
    return () => {
      this.#closeHooks.delete(hook);
    };
  }

  emit(event: QmpEvent): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(event);
      } catch (err) {
        // A throwing listener is a bug in the caller; it must not stall the protocol reader,
        // and a library must not swallow it either: rethrow outside our stack.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  close(reason: Error): void {
    if (this.#closedWith) return;
    this.#closedWith = reason;
    this.#listeners.clear();
    const hooks = [...this.#closeHooks];
    this.#closeHooks.clear();
    for (const hook of hooks) hook(reason);
  }

  /**
   * An async iterator over events from now on. It buffers while the consumer is busy, and ends
   * (done) when the hub closes, after the buffered events are drained.
   */
  iterate(signal?: AbortSignal): AsyncIterableIterator<QmpEvent> {
    const queue: QmpEvent[] = [];
    let waiting: ((r: IteratorResult<QmpEvent>) => void) | null = null;
    let failWaiting: ((e: Error) => void) | null = null;
    let done = false;
    let abortReason: Error | undefined = undefined;

    const finish = (): void => {
      if (done) return;
      done = true;
      offEvent();
      offClose();
      signal?.removeEventListener('abort', onAbort);
      if (abortReason !== undefined && failWaiting) {
        failWaiting(abortReason);
        abortReason = undefined;
      } else {
        waiting?.({ value: undefined, done: true });
      }
      waiting = null;
      failWaiting = null;
    };
    const onAbort = (): void => {
      abortReason = abortError(signal);
      queue.length = 0;
      finish();
    };
    const offEvent = this.on((event) => {
      if (waiting) {
        const resolve = waiting;
        waiting = null;
        failWaiting = null;
        resolve({ value: event, done: false });
      } else {
        queue.push(event);
      }
    });
    const offClose = this.onClose(() => finish());
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });

    const iterator: AsyncIterableIterator<QmpEvent> = {
      next: () => {
        const event = queue.shift();
        if (event) return Promise.resolve({ value: event, done: false });
        if (done) {
          if (abortReason !== undefined) {
            const reason = abortReason;
            abortReason = undefined;
            return Promise.reject(reason);
          }
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
          waiting = resolve;
          failWaiting = reject;
        });
      },
      return: () => {
        queue.length = 0;
        finish();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }
}
