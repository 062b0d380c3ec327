/**
 * The connection engine under QmpClient: owns the stream, frames lines, matches replies to pending
 * calls by id, feeds events to the hub, and fails every pending call when the stream ends.
 * Runstates follow qemu.qmp's protocol.py: connecting → running → disconnecting → closed.
 */
import { abortError } from './abort.ts';
import type { Duplex } from 'node:stream';

import {
  QmpBadReplyError,
  QmpDisconnectedError,
  QmpExecuteError,
  QmpGreetingError,
  QmpServerParseError,
  QmpTimeoutError,
} from './errors.ts';
import { EventHub } from './event-hub.ts';
import { LineSplitter, LineTooLongError } from './framing.ts';
import { classifyMessage, parseGreeting } from './message.ts';
import type { QmpGreeting } from './types.ts';

export type QmpRunstate = 'connecting' | 'running' | 'disconnecting' | 'closed';

/** Prefix of our command ids; `#<n>` counts from 1 per connection (like qemu.qmp's `__qmp#00001`). */
export const ID_PREFIX = 'roamdesk#';

interface PendingCall {
  command: string;
  id: string;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
  cleanup: () => void;
}

export interface SendOptions {
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

export interface ProtocolOptions {
  maxLineLength?: number;
}

function preview(line: string): string {
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

export class QmpProtocol {
  readonly hub = new EventHub();
  readonly closed: Promise<void>;
  #runstate: QmpRunstate = 'connecting';
  #closeReason: Error | null = null;
  #resolveClosed!: () => void;
  readonly #stream: Duplex;
  readonly #splitter: LineSplitter;
  readonly #pending = new Map<string, PendingCall>();
  #nextId = 1;
  #droppedReplies = 0;
  #greeting: { resolve: (g: QmpGreeting) => void; reject: (e: unknown) => void } | null = null;
  #greetingSeen = false;
  #closeTimer: NodeJS.Timeout | null = null;

  constructor(stream: Duplex, opts: ProtocolOptions = {}) {
    this.#stream = stream;
    this.#splitter = new LineSplitter(opts.maxLineLength);
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    stream.on('data', (chunk: Buffer | string) => this.#onData(chunk));
    // Once the peer has ended, no reply can arrive any more: fail the pending calls at once.
    stream.on('end', () => this.#teardown('the server closed the connection'));
    stream.on('error', (err: Error) => this.#teardown(`the stream failed: ${err.message}`, err));
    stream.on('close', () => this.#teardown('the connection closed'));
    if (stream.destroyed) queueMicrotask(() => this.#teardown('the stream was already destroyed'));
  }

  get runstate(): QmpRunstate {
    return this.#runstate;
  }

  /** Why the connection ended: null while open or after a clean `close()`. */
  get closeReason(): Error | null {
    return this.#closeReason;
  }

  /** Replies dropped because their id matched no pending call (qmp-spec 2.4). */
  get droppedReplies(): number {
    return this.#droppedReplies;
  }

  /** Resolves with the first message, which must be the greeting (qmp-spec 2.2). */
  awaitGreeting(): Promise<QmpGreeting> {
    return new Promise((resolve, reject) => {
      if (this.#runstate === 'closed') {
        reject(this.#disconnected('waiting for the QMP greeting'));
        return;
      }
      this.#greeting = { resolve, reject };
    });
  }

  /** Negotiation finished: from now on events are delivered (qmp-spec 4). */
  markRunning(): void {
    if (this.#runstate === 'connecting') this.#runstate = 'running';
  }

  send(command: string, args: Record<string, unknown> | undefined, opts: SendOptions = {}): Promise<unknown> {
    if (this.#runstate === 'closed' || this.#runstate === 'disconnecting') {
      return Promise.reject(
        new QmpDisconnectedError(
          `Cannot execute QMP command '${command}': the connection is closed`,
          { command, reason: this.#closeReason?.message ?? 'closed' },
          this.#closeReason ? { cause: this.#closeReason } : undefined,
        ),
      );
    }
    const { signal, timeoutMs } = opts;
    if (signal?.aborted) return Promise.reject(abortError(signal));

    // qmp-spec 2.3: "The id member ... will be part of the response if provided".
    const id = `${ID_PREFIX}${this.#nextId++}`;
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | null = null;
      const onAbort = (): void => {
        // Forget the id: a reply arriving later is then "unknown" and dropped (qmp-spec 2.4).
        this.#pending.get(id)?.cleanup();
        this.#pending.delete(id);
        reject(abortError(signal));
      };
      const cleanup = (): void => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      this.#pending.set(id, { command, id, resolve, reject, cleanup });
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          cleanup();
          this.#pending.delete(id);
          reject(
            new QmpTimeoutError(`QMP command '${command}' (id ${id}) got no reply within ${timeoutMs} ms`, {
              operation: 'execute',
              timeoutMs,
              command,
              id,
            }),
          );
        }, timeoutMs);
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      const message = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      this.#stream.write(`${JSON.stringify(message)}\n`);
    });
  }

  /** Ends the connection from our side; pending calls fail with QmpDisconnectedError. */
  close(graceMs = 1000): Promise<void> {
    if (this.#runstate === 'closed') return this.closed;
    if (this.#runstate !== 'disconnecting') {
      this.#runstate = 'disconnecting';
      this.#failPending('the client closed the connection', null);
      this.#stream.end();
      // QEMU closes its side on EOF; a peer that does not is cut off after a short grace period.
      this.#closeTimer = setTimeout(() => this.#stream.destroy(), graceMs);
    }
    return this.closed;
  }

  #onData(chunk: Buffer | string): void {
    let lines: string[];
    try {
      lines = this.#splitter.push(chunk);
    } catch (err) {
      if (err instanceof LineTooLongError) {
        this.#fatal(new QmpServerParseError(err.message, { line: '' }, { cause: err }));
        return;
      }
      throw err;
    }
    for (const line of lines) {
      if (this.#runstate === 'closed') return;
      this.#onLine(line);
    }
  }

  #onLine(line: string): void {
    if (line.trim() === '') return;
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch (err) {
      // qmp-spec 5: "the Server does guarantee to send valid JSON". Anything else means the
      // stream is desynchronised, and a reply may be lost in it: fail fast (as qemu.qmp does).
      const error = new QmpServerParseError(`QMP server sent a line that is not JSON: ${preview(line)}`, { line: preview(line) }, { cause: err });
      this.#fatal(this.#greetingSeen ? error : new QmpGreetingError(error.message, { line: preview(line) }, { cause: err }));
      return;
    }

    if (!this.#greetingSeen) {
      this.#greetingSeen = true;
      const greeting = parseGreeting(msg);
      if (!greeting) {
        this.#fatal(new QmpGreetingError(`Expected a QMP greeting, got: ${preview(line)}`, { line: preview(line) }));
        return;
      }
      this.#greeting?.resolve(greeting);
      this.#greeting = null;
      return;
    }

    const m = classifyMessage(msg);
    switch (m.kind) {
      case 'event':
        // qmp-spec 4: before negotiation completes, "Asynchronous messages are not delivered".
        if (this.#runstate === 'running') this.hub.emit(m.event);
        return;
      case 'return':
      case 'error': {
        if (!m.hasId) {
          // qmp-spec 2.4.2 NOTE: "Some errors can occur before the Server is able to read the id
          // member"; we always send an id, so this is a server-side parse failure of something we
          // sent. It belongs to no call we can name: treat the stream as broken (as qemu.qmp does).
          this.#fatal(new QmpBadReplyError(`QMP server sent a reply without an id: ${preview(line)}`, { message: msg }));
          return;
        }
        const pending = typeof m.id === 'string' ? this.#pending.get(m.id) : undefined;
        if (!pending) {
          // qmp-spec 2.4: "Clients should drop all the responses that have an unknown id field."
          // (Calls that timed out or were aborted have been forgotten, so their late replies land here.)
          this.#droppedReplies++;
          return;
        }
        this.#pending.delete(pending.id);
        pending.cleanup();
        if (m.kind === 'return') pending.resolve(m.value);
        else pending.reject(new QmpExecuteError(pending.command, pending.id, m.errorClass, m.desc));
        return;
      }
      case 'greeting':
        this.#fatal(new QmpBadReplyError('QMP server sent a second greeting', { message: msg }));
        return;
      case 'malformed':
        this.#fatal(new QmpBadReplyError(`QMP server sent a malformed message (${m.why}): ${preview(line)}`, { message: msg }));
        return;
      case 'unknown':
        return;
    }
  }

  #disconnected(what: string, command?: string, id?: string): QmpDisconnectedError {
    const reason = this.#closeReason?.message ?? 'the connection closed';
    const data = { reason, ...(command === undefined ? {} : { command }), ...(id === undefined ? {} : { id }) };
    return new QmpDisconnectedError(
      `QMP connection lost while ${what}: ${reason}`,
      data,
      this.#closeReason ? { cause: this.#closeReason } : undefined,
    );
  }

  #failPending(why: string, cause: Error | null): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      p.cleanup();
      p.reject(
        new QmpDisconnectedError(
          `QMP connection lost while executing '${p.command}' (id ${p.id}): ${why}`,
          { command: p.command, id: p.id, reason: why },
          cause ? { cause } : undefined,
        ),
      );
    }
  }

  /** A protocol violation: remember it as the reason and drop the connection. */
  #fatal(error: Error): void {
    this.#teardown(error.message, error);
  }

  #teardown(why: string, cause: Error | null = null): void {
    if (this.#runstate === 'closed') return;
    const clientClosed = this.#runstate === 'disconnecting';
    this.#runstate = 'closed';
    if (!clientClosed) this.#closeReason = cause ?? new Error(why);
    if (this.#closeTimer) clearTimeout(this.#closeTimer);
    this.#failPending(why, cause);
    if (this.#greeting) {
      this.#greeting.reject(
        cause instanceof QmpGreetingError
          ? cause
          : new QmpGreetingError(`QMP connection ended before the greeting: ${why}`, {}, cause ? { cause } : undefined),
      );
      this.#greeting = null;
    }
    this.hub.close(
      new QmpDisconnectedError(`QMP connection closed: ${why}`, { reason: why }, cause ? { cause } : undefined),
    );
    this.#stream.destroy();
    this.#resolveClosed();
  }
}
