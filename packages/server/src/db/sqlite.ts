// The embedded default database: better-sqlite3 (12.x; 13 crashes on Node 20) behind kysely.

import BetterSqlite3 from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import type { Database } from './schema.ts';

export function openSqlite(file: string): Kysely<Database> {
  const sqlite = new BetterSqlite3(file);
  // WAL: readers do not block the writer, and a crash never leaves a half-written page visible.
  sqlite.pragma('journal_mode = WAL');
  // Off by default in SQLite; the schema relies on them (restrict/cascade/set null).
  sqlite.pragma('foreign_keys = ON');
  // Wait for a lock held by another connection (a CLI tool, a backup) instead of failing at once.
  sqlite.pragma('busy_timeout = 5000');
  // In WAL mode NORMAL is durable across application crashes; only power loss can drop the last commits.
  sqlite.pragma('synchronous = NORMAL');
  return new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
}
