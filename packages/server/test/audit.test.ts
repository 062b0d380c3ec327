import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { FastifyBaseLogger } from 'fastify';
import type { Kysely } from 'kysely';

import type { Database } from '../src/db/schema.ts';
import { Auditor } from '../src/services/audit.ts';
import { FakeClock } from './fakes.ts';

/** A database whose event inserts fail while `full` (SQLite on a full disk says SQLITE_FULL). */
function fakeDb(): { db: Kysely<Database>; rows: Array<{ action: string }>; state: { full: boolean } } {
  const rows: Array<{ action: string }> = [];
  const state = { full: true };
  const db = {
    insertInto: () => ({
      values: (v: { action: string }) => ({
        execute: async () => {
          await new Promise((r) => setImmediate(r));
          if (state.full) throw new Error('SQLITE_FULL: database or disk is full');
          rows.push(v);
        },
      }),
    }),
  };
  return { db: db as unknown as Kysely<Database>, rows, state };
}

function fakeLogger(): { logger: FastifyBaseLogger; errors: string[] } {
  const errors: string[] = [];
  const logger = { error: (_o: unknown, msg: string) => errors.push(msg), warn: () => {}, info: () => {}, debug: () => {} };
  return { logger: logger as unknown as FastifyBaseLogger, errors };
}

describe('Auditor', () => {
  it('events that cannot be written (a full disk) are kept, and written in order with the next one; never twice', async () => {
    const { db, rows, state } = fakeDb();
    const { logger, errors } = fakeLogger();
    const audit = new Auditor(db, new FakeClock(), logger);
    await audit.record({ actor: null, action: 'desktop.pause', target: 'a' }, 'ok', {});
    await audit.record({ actor: null, action: 'desktop.stop', target: 'a' }, 'error', {});
    assert.equal(rows.length, 0, 'nothing written while the disk is full');
    assert.equal(errors.length, 2);
    assert.match(errors[0] ?? '', /kept to be written with the next one/);
    state.full = false;
    // Two at once: each kept event is written exactly once, in order.
    await Promise.all([
      audit.record({ actor: null, action: 'desktop.resume', target: 'a' }, 'ok', {}),
      audit.record({ actor: null, action: 'desktop.start', target: 'a' }, 'ok', {}),
    ]);
    assert.deepEqual(rows.map((r) => r.action), ['desktop.pause', 'desktop.stop', 'desktop.resume', 'desktop.start']);
    await audit.flush();
    assert.equal(rows.length, 4);
    // An event no database could take (its detail is not JSON) is dropped at once, not kept to block the others.
    await audit.record({ actor: null, action: 'desktop.start', target: 'a' }, 'ok', { n: 1n });
    await audit.record({ actor: null, action: 'desktop.stop', target: 'a' }, 'ok', {});
    assert.deepEqual(rows.map((r) => r.action).slice(4), ['desktop.stop']);
    assert.match(errors.at(-1) ?? '', /not JSON/);
  });
});
