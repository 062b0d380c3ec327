// Bearer-token authentication for every request (onRequest hook, see http/auth-hook.ts).

import { ApiError } from '@roamdesk/api';
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.ts';
import { findSessionByHash, touchToken } from '../db/repositories/tokens.ts';
import type { Clock } from '../ports.ts';
import { hashToken, looksLikeToken } from './secrets.ts';

export interface Caller {
  userId: string;
  name: string;
  role: 'admin' | 'user';
  tokenId: string;
}

/** last_used_at is informational; writing it on every request would turn every read into a write. */
const TOUCH_INTERVAL_MS = 60_000;

export async function authenticate(
  deps: { db: Kysely<Database>; clock: Clock },
  authorization: string | undefined,
): Promise<Caller> {
  if (authorization === undefined || authorization === '') throw new ApiError('AUTH_REQUIRED');
  const match = /^Bearer ([^\s]+)$/i.exec(authorization);
  const token = match?.[1];
  if (token === undefined || !looksLikeToken(token)) throw new ApiError('AUTH_INVALID');

  const found = await findSessionByHash(deps.db, hashToken(token));
  // Unknown, revoked and disabled-user tokens answer alike: the holder learns nothing it could use.
  if (found === undefined || found.token.revoked_at !== null || found.user.disabled !== 0) {
    throw new ApiError('AUTH_INVALID');
  }
  const now = deps.clock.now();
  if (Date.parse(found.token.expires_at) <= now) throw new ApiError('TOKEN_EXPIRED');

  const lastUsed = found.token.last_used_at === null ? 0 : Date.parse(found.token.last_used_at);
  if (now - lastUsed >= TOUCH_INTERVAL_MS) await touchToken(deps.db, found.token.id, new Date(now).toISOString());

  return { userId: found.user.id, name: found.user.name, role: found.user.role, tokenId: found.token.id };
}
