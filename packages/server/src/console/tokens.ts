// Console tokens: short-lived, single-use, bound to one user and one desktop. Stored like session tokens
// (SHA-256 of a 256-bit secret, kind 'console', desktop_id set), so the bearer lookup (kind 'session' only)
// can never accept one as a login, and a database leak reveals no usable secret.

import { ApiError, CONSOLE_TOKEN_TTL_SECONDS } from '@roamdesk/api';
import type { Kysely } from 'kysely';
import { generateToken, hashToken, looksLikeToken } from '../auth/secrets.ts';
import type { Database } from '../db/schema.ts';
import type { Clock, Ids } from '../ports.ts';

/** Used and expired console rows are deleted this long after they expire (kept a while for forensics). */
const KEEP_EXPIRED_MS = 24 * 60 * 60 * 1000;

export interface IssuedConsoleToken {
  token: string;
  expiresAt: string;
}

/** Who may open which desktop: what a consumed token proves. */
export interface ConsoleGrant {
  tokenId: string;
  userId: string;
  userName: string;
  role: 'admin' | 'user';
  desktopId: string;
}

interface Deps {
  db: Kysely<Database>;
  clock: Clock;
  ids: Ids;
}

export async function issueConsoleToken(deps: Deps, userId: string, desktopId: string, ttlSeconds = CONSOLE_TOKEN_TTL_SECONDS): Promise<IssuedConsoleToken> {
  const now = deps.clock.now();
  const token = generateToken();
  const expiresAt = new Date(now + ttlSeconds * 1000).toISOString();
  await deps.db
    .insertInto('tokens')
    .values({
      id: deps.ids.uuid(),
      user_id: userId,
      token_hash: hashToken(token),
      kind: 'console',
      created_at: new Date(now).toISOString(),
      expires_at: expiresAt,
      revoked_at: null,
      last_used_at: null,
      desktop_id: desktopId,
      used_at: null,
    })
    .execute();
  // Every issue adds a row; sweeping old ones here keeps the table bounded without a timer.
  await deps.db
    .deleteFrom('tokens')
    .where('kind', '=', 'console')
    .where('expires_at', '<', new Date(now - KEEP_EXPIRED_MS).toISOString())
    .execute();
  return { token, expiresAt };
}

/** Unknown, malformed, expired and already used tokens answer alike: the holder learns nothing. */
function invalid(): ApiError {
  return new ApiError('AUTH_INVALID', 'The console token is invalid, expired or already used.');
}

/**
 * Spend a console token. The UPDATE is the single-use guarantee: of two concurrent uses exactly one matches
 * `used_at IS NULL` (one statement, atomic on SQLite and PostgreSQL), and the loser sees 0 rows.
 */
export async function consumeConsoleToken(deps: Deps, token: string): Promise<ConsoleGrant> {
  if (!looksLikeToken(token)) throw invalid();
  const hash = hashToken(token);
  const nowIso = new Date(deps.clock.now()).toISOString();
  const r = await deps.db
    .updateTable('tokens')
    .set({ used_at: nowIso, last_used_at: nowIso })
    .where('token_hash', '=', hash)
    .where('kind', '=', 'console')
    .where('used_at', 'is', null)
    .where('revoked_at', 'is', null)
    .where('expires_at', '>', nowIso)
    .executeTakeFirst();
  if (Number(r.numUpdatedRows) !== 1) throw invalid();
  const row = await deps.db
    .selectFrom('tokens')
    .innerJoin('users', 'users.id', 'tokens.user_id')
    .select(['tokens.id as token_id', 'tokens.desktop_id', 'users.id as user_id', 'users.name', 'users.role', 'users.disabled'])
    .where('tokens.token_hash', '=', hash)
    .executeTakeFirst();
  // A user disabled after the token was issued loses console access too.
  if (row === undefined || row.desktop_id === null || row.disabled !== 0) throw invalid();
  return { tokenId: row.token_id, userId: row.user_id, userName: row.name, role: row.role, desktopId: row.desktop_id };
}
