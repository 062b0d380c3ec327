import type { Kysely, Selectable } from 'kysely';
import type { Database, TokensTable, UsersTable } from '../schema.ts';

export type TokenRow = Selectable<TokensTable>;

export interface SessionLookup {
  token: Pick<TokenRow, 'id' | 'expires_at' | 'revoked_at' | 'last_used_at'>;
  user: Pick<Selectable<UsersTable>, 'id' | 'name' | 'role' | 'disabled'>;
}

export async function insertToken(db: Kysely<Database>, row: TokenRow): Promise<void> {
  await db.insertInto('tokens').values(row).execute();
}

/** The session token with this hash and its user, whatever its state (the caller decides what is valid). */
export async function findSessionByHash(db: Kysely<Database>, tokenHash: string): Promise<SessionLookup | undefined> {
  const r = await db
    .selectFrom('tokens')
    .innerJoin('users', 'users.id', 'tokens.user_id')
    .select([
      'tokens.id as token_id',
      'tokens.expires_at',
      'tokens.revoked_at',
      'tokens.last_used_at',
      'users.id as user_id',
      'users.name',
      'users.role',
      'users.disabled',
    ])
    .where('tokens.token_hash', '=', tokenHash)
    .where('tokens.kind', '=', 'session')
    .executeTakeFirst();
  if (r === undefined) return undefined;
  return {
    token: { id: r.token_id, expires_at: r.expires_at, revoked_at: r.revoked_at, last_used_at: r.last_used_at },
    user: { id: r.user_id, name: r.name, role: r.role, disabled: r.disabled },
  };
}

export async function revokeToken(db: Kysely<Database>, id: string, at: string): Promise<void> {
  await db.updateTable('tokens').set({ revoked_at: at }).where('id', '=', id).where('revoked_at', 'is', null).execute();
}

export async function touchToken(db: Kysely<Database>, id: string, at: string): Promise<void> {
  await db.updateTable('tokens').set({ last_used_at: at }).where('id', '=', id).execute();
}
