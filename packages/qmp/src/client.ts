/**
 * QmpClient: the public face of the QMP connection. Construct it with `QmpClient.connect(path)`
 * (UNIX socket, retried while QEMU is still creating it) or `QmpClient.fromStream(duplex)`; both
 * read the greeting (qmp-spec 2.2) and negotiate capabilities (qmp-spec 4) before resolving.
 */
import { abortError } from './abort.ts';
import type { Duplex } from 'node:stream';

import type { QmpCommandName, QmpExecuteOptions, QmpExecuteParams, QmpReturn } from './commands.ts';
import { QmpDisconnectedError, QmpExecuteError, QmpNegotiationError, QmpTimeoutError } from './errors.ts';
import type { QmpEventListener } from './event-hub.ts';
import { connectUnixSocket } from './node/connect-unix.ts';
import { QmpProtocol, type QmpRunstate } from './protocol.ts';
import type { QmpEvent, QmpGreeting } from './types.ts';

export interface QmpConnectOptions {
  /** Deadline for the whole handshake (socket + greeting + negotiation). Default 10 000 ms. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Default timeout for every `execute` that sets none. Default: none. */
  commandTimeoutMs?: number;
  /** Pause between connection attempts while the socket is missing or refused. Default 50 ms. */
  retryIntervalMs?: number;
  /** Longest line accepted from the server before the connection is dropped. */
  maxLineLength?: number;
}

export interface QmpWaitForEventOptions<N extends string> {
  predicate?: (event: QmpEvent<N>) => boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

export class QmpClient {
  /** The server's greeting: version and offered capabilities (qmp-spec 2.2). */
  readonly greeting: QmpGreeting;
  /** Resolves (never rejects) once the connection is gone, whoever ended it. */
  readonly closed: Promise<void>;
  readonly #protocol: QmpProtocol;
  readonly #commandTimeoutMs: number | undefined;

  private constructor(protocol: QmpProtocol, greeting: QmpGreeting, commandTimeoutMs: number | undefined) {
    this.#protocol = protocol;
    this.greeting = greeting;
    this.closed = protocol.closed;
    this.#commandTimeoutMs = commandTimeoutMs;
  }

  /**
   * Connects to QEMU's `-qmp unix:PATH,server=on,wait=off` socket. ENOENT and ECONNREFUSED are
   * retried until `timeoutMs`, because QEMU creates the socket a few hundred ms after spawn.
   * @example
   *   const qmp = await QmpClient.connect('/run/roamdesk/vm1/qmp.sock', { timeoutMs: 5000 });
   *   const { status } = await qmp.execute('query-status');
   */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const socket = await connectUnixSocket(path, {
      timeoutMs,
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.retryIntervalMs !== undefined ? { retryIntervalMs: opts.retryIntervalMs } : {}),
    });
    return QmpClient.fromStream(socket, { ...opts, timeoutMs: Math.max(1, deadline - Date.now()) });
  }

  /** Runs the handshake over any Duplex (a socket, or a fake server in tests). */
  static async fromStream(stream: Duplex, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const protocol = new QmpProtocol(stream, opts.maxLineLength === undefined ? {} : { maxLineLength: opts.maxLineLength });
    const handshake = async (): Promise<QmpGreeting> => {
      const greeting = await protocol.awaitGreeting();
      try {
        // qmp-spec 4: only qmp_capabilities is allowed until it succeeds. We enable no
        // capability: all our commands are in-band, so replies come in issue order (2.3.1).
        await protocol.send('qmp_capabilities', undefined);
      } catch (err) {
        if (err instanceof QmpExecuteError) {
          throw new QmpNegotiationError(`QMP capabilities negotiation failed: ${err.errorClass}: ${err.desc}`, {
            errorClass: err.errorClass,
            desc: err.desc,
          }, { cause: err });
        }
        throw err;
      }
      protocol.markRunning();
      return greeting;
    };
    try {
      const greeting = await withDeadline(handshake(), timeoutMs, opts.signal, 'QMP greeting and negotiation');
      return new QmpClient(protocol, greeting, opts.commandTimeoutMs);
    } catch (err) {
      await protocol.close(0);
      throw err;
    }
  }

  get runstate(): QmpRunstate {
    return this.#protocol.runstate;
  }

  get isClosed(): boolean {
    return this.#protocol.runstate === 'closed';
  }

  /** Why the connection ended: a protocol error, a stream error, EOF; null while open or after close(). */
  get closeReason(): Error | null {
    return this.#protocol.closeReason;
  }

  /** How many replies carried an id we did not (or no longer) wait for, and were dropped. */
  get droppedReplies(): number {
    return this.#protocol.droppedReplies;
  }

  /**
   * Executes a command from the typed map and resolves with its `return` value (qmp-spec 2.4.1).
   * Rejects with QmpExecuteError on an error reply, QmpTimeoutError after `timeoutMs`, and
   * QmpDisconnectedError if the connection ends first.
   * @example
   *   await qmp.execute('blockdev-snapshot', { node: 'layer1', overlay: 'overlay2' });
   */
  execute<K extends QmpCommandName>(command: K, ...params: QmpExecuteParams<K>): Promise<QmpReturn<K>> {
    const [args, opts] = params;
    return this.executeUntyped(command, args as Record<string, unknown> | undefined, opts) as Promise<QmpReturn<K>>;
  }

  /** Executes any command by name; the caller checks the shape of the result. */
  executeUntyped(command: string, args?: Record<string, unknown>, opts: QmpExecuteOptions = {}): Promise<unknown> {
    return this.#protocol.send(command, args, {
      timeoutMs: opts.timeoutMs ?? this.#commandTimeoutMs,
      signal: opts.signal,
    });
  }

  /** Calls `listener` for every event from now on. Returns the unsubscribe function. */
  onEvent(listener: QmpEventListener): () => void {
    return this.#protocol.hub.on(listener);
  }

  /**
   * Resolves with the next event named `name` (and matching `predicate`). The listener is in place
   * when this returns, so start waiting *before* the command that causes the event:
   * @example
   *   const stopped = qmp.waitForEvent('STOP', { timeoutMs: 5000 });
   *   await qmp.execute('stop');
   *   await stopped;
   */
  waitForEvent<N extends string>(name: N, opts: QmpWaitForEventOptions<N> = {}): Promise<QmpEvent<N>> {
    const { predicate, timeoutMs, signal } = opts;
    const hub = this.#protocol.hub;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortError(signal));
        return;
      }
      let timer: NodeJS.Timeout | null = null;
      const done = (): void => {
        offEvent();
        offClose();
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => {
        done();
        reject(abortError(signal));
      };
      const offEvent = hub.on((event) => {
        if (event.event !== name) return;
        const typed = event as QmpEvent<N>;
        try {
          if (predicate && !predicate(typed)) return;
        } catch (err) {
          done();
          reject(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        done();
        resolve(typed);
      });
      const offClose = hub.onClose((reason) => {
        done();
        reject(
          new QmpDisconnectedError(`QMP connection closed while waiting for event ${name}`, {
            reason: reason.message,
          }, { cause: reason }),
        );
      });
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          done();
          reject(new QmpTimeoutError(`No QMP event ${name} within ${timeoutMs} ms`, { operation: `event ${name}`, timeoutMs }));
        }, timeoutMs);
      }
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Every event from the moment of this call, as an async iterator. It ends when the connection
   * closes (after draining what was buffered) or when you `break`; it throws `signal.reason` on abort.
   */
  events(opts: { signal?: AbortSignal } = {}): AsyncIterableIterator<QmpEvent> {
    return this.#protocol.hub.iterate(opts.signal);
  }

  /** Closes the connection; pending calls reject with QmpDisconnectedError. Resolves when gone. */
  close(): Promise<void> {
    return this.#protocol.close();
  }
}

/** Races `work` against a deadline and an abort signal. */
async function withDeadline<T>(work: Promise<T>, timeoutMs: number, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (signal?.aborted) throw abortError(signal);
  let timer: NodeJS.Timeout | null = null;
  let onAbort: (() => void) | null = null;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new QmpTimeoutError(
                `${what} did not finish within ${timeoutMs} ms (is another client holding the QMP monitor?)`,
                { operation: 'connect', timeoutMs },
              ),
            ),
          timeoutMs,
        );
        onAbort = () => reject(abortError(signal));
        signal?.addEventListener('abort', onAbort, { once: true });
      }),
    ]);
  } finally {
    if (timer) clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    // Keep `work` from surfacing as an unhandled rejection after the race was lost.
    work.catch(() => {});
  }
}
