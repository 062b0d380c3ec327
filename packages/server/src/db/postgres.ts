// The scale-out database: PostgreSQL through pg, behind the same kysely queries as SQLite.

import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { Database } from './schema.ts';

const INT8_OID = 20;

export interface PostgresOptions {
  connectionString?: string;
  host?: string;
  port?: number;
  database?: string;
  user?: string;
  password?: string;
  max?: number;
}

// pg returns int8 (bigint, count(*)) as strings to avoid precision loss; our bigints are byte sizes and
// counts, far below 2^53, and SQLite gives numbers, so parse them to numbers for one behaviour on both.
// Only the text format is used (pg never asks for binary unless told to).
function typeParser(oid: number): (value: string) => unknown {
  return oid === INT8_OID ? Number : (pg.types.getTypeParser(oid, 'text') as (value: string) => unknown);
}

export function openPostgres(options: PostgresOptions): Kysely<Database> {
  const pool = new pg.Pool({
    ...options,
    types: { getTypeParser: typeParser as pg.CustomTypesConfig['getTypeParser'] },
  });
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}
