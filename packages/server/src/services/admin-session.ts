// A short-lived admin session for the process that runs the server (e.g. the CLI's `--demo` setup), so it can
// drive the same HTTP API as everyone else — same validation, same events — without knowing the admin's
// password. Nothing outside this process can obtain it: it is never printed and is revoked after use.

import { ApiError } from '@roamdesk/api';
import { INITIAL_ADMIN_NAME } from '../auth/bootstrap.ts';
import { generateToken, hashToken } from '../auth/secrets.ts';
import type { AppContext } from '../context.ts';
import { insertToken, revokeToken } from '../db/repositories/tokens.ts';
import { findUserByName } from '../db/repositories/users.ts';

export interface AdminSession {
  token: string;
  revoke(): Promise<void>;
}

export async function openAdminSession(ctx: Pick<AppContext, 'db' | 'ids' | 'clock' | 'nowIso'>, ttlSeconds = 600): Promise<AdminSession> {
  const admin = await findUserByName(ctx.db, INITIAL_ADMIN_NAME);
  if (admin === undefined || admin.role !== 'admin') throw new ApiError('NOT_FOUND', 'the initial administrator does not exist');
  const token = generateToken();
  const id = ctx.ids.uuid();
  await insertToken(ctx.db, {
    id,
    user_id: admin.id,
    token_hash: hashToken(token),
    kind: 'session',
    created_at: ctx.nowIso(),
    expires_at: new Date(ctx.clock.now() + ttlSeconds * 1000).toISOString(),
    revoked_at: null,
    last_used_at: null,
    desktop_id: null,
    used_at: null,
  });
  return { token, revoke: () => revokeToken(ctx.db, id, ctx.nowIso()) };
}
