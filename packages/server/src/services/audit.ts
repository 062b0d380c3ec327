// The event log: who did what to which desktop, when, with which result. Every mutating action goes through
// Auditor.run so failures are recorded as faithfully as successes.

import { ApiError, type EventAction, statusForCode } from '@roamdesk/api';
import type { Kysely } from 'kysely';
import type { FastifyBaseLogger } from 'fastify';
import type { Caller } from '../auth/authenticate.ts';
import { insertEvent, type NewEvent } from '../db/repositories/events.ts';
import type { Database } from '../db/schema.ts';
import type { Clock } from '../ports.ts';

export interface AuditEntry {
  /** null = the server itself (reconcile at boot). */
  actor: Pick<Caller, 'userId' | 'name'> | null;
  /** For actions without an authenticated caller (login), the name that was claimed. */
  actorName?: string;
  action: EventAction;
  desktopId?: string | null;
  target?: string | null;
  detail?: Record<string, unknown>;
}

/** The code and message an error is recorded with: the public code, never a stack or an internal message. */
export function describeError(err: unknown): { code: string; message: string } {
  if (err instanceof ApiError) return { code: err.code, message: err.message };
  if (typeof err === 'object' && err !== null) {
    const { code, message, validation } = err as { code?: unknown; message?: unknown; validation?: unknown };
    if (Array.isArray(validation)) return { code: 'VALIDATION_FAILED', message: typeof message === 'string' ? message : '' };
    if (typeof code === 'string' && statusForCode(code) !== undefined && typeof message === 'string') {
      return { code, message: message.slice(0, 500) };
    }
  }
  return { code: 'INTERNAL', message: 'internal error' };
}

/** Events kept in memory while their rows cannot be written (the database's disk is full); the oldest go first. */
const PENDING_MAX = 1000;

export class Auditor {
  /** Events not written yet, oldest first: written, in order, before the next event (or by flush()). */
  readonly #pending: NewEvent[] = [];
  #dropped = 0;
  /** One writer at a time, so a kept event is never written twice. */
  #writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly logger: FastifyBaseLogger,
  ) {}

  async record(entry: AuditEntry, result: 'ok' | 'error', detail: Record<string, unknown>): Promise<void> {
    // An event that can never be written (a detail JSON cannot hold) must not hold up the ones behind it.
    let detailJson: string;
    try {
      detailJson = JSON.stringify(detail);
    } catch (err) {
      this.logger.error({ err, action: entry.action }, 'could not write event: its detail is not JSON');
      return;
    }
    this.#pending.push({
      at: new Date(this.clock.now()).toISOString(),
      actorId: entry.actor?.userId ?? null,
      actorName: entry.actor?.name ?? entry.actorName ?? null,
      action: entry.action,
      desktopId: entry.desktopId ?? null,
      target: entry.target ?? null,
      result,
      detailJson,
    });
    if (this.#pending.length > PENDING_MAX) {
      this.#pending.shift();
      this.#dropped++;
    }
    await this.flush();
  }

  /**
   * Writes the events kept so far. Losing an audit row must not turn a done action into a reported failure (or hide
   * the real error): a failed write is logged and the event kept for the next try, so a full disk under the
   * database loses no event unless more than PENDING_MAX pile up.
   */
  flush(): Promise<void> {
    this.#writing = this.#writing.then(() => this.#writePending());
    return this.#writing;
  }

  async #writePending(): Promise<void> {
    for (let e = this.#pending[0]; e !== undefined; e = this.#pending[0]) {
      try {
        await insertEvent(this.db, e);
      } catch (err) {
        this.logger.error({ err, action: e.action, pending: this.#pending.length }, 'could not write event; kept to be written with the next one');
        return;
      }
      this.#pending.shift();
    }
    if (this.#dropped > 0) {
      this.logger.error({ dropped: this.#dropped }, `events lost: more than ${PENDING_MAX} could not be written`);
      this.#dropped = 0;
    }
  }

  /**
   * Run `fn`, then record its outcome. `onOk` adds what is only known on success: result detail, and the
   * id of a desktop the action created.
   */
  async run<T>(
    entry: AuditEntry,
    fn: () => Promise<T>,
    onOk?: (result: T) => { detail?: Record<string, unknown>; desktopId?: string },
  ): Promise<T> {
    let result: T;
    try {
      result = await fn();
    } catch (err) {
      await this.record(entry, 'error', { ...entry.detail, error: describeError(err) });
      throw err;
    }
    const extra = onOk?.(result) ?? {};
    await this.record(
      extra.desktopId === undefined ? entry : { ...entry, desktopId: extra.desktopId },
      'ok',
      { ...entry.detail, ...extra.detail },
    );
    return result;
  }
}
