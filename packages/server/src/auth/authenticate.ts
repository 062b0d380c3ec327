// Bearer-token authentication for every request (onRequest hook, see http/hooks.ts). Two kinds of bearer:
// session tokens (`rdt_…`, tokens table) and device credentials (`rdd_…`, devices table). A device acts for
// its owner with a user's rights only (never an admin's: the credential lives on a laptop), and a revoked
// device is told so (403 DEVICE_REVOKED) so it can stop using its local copies.

import { ApiError } from '@roamdesk/api';
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.ts';
import { findDeviceByHash, touchDevice } from '../db/repositories/devices.ts';
import { findSessionByHash, touchToken } from '../db/repositories/tokens.ts';
import type { Clock } from '../ports.ts';
import { hashToken, looksLikeDeviceToken, looksLikeToken } from './secrets.ts';

export interface Caller {
  userId: string;
  name: string;
  role: 'admin' | 'user';
  /** The session token's id; for a device, `device:<id>` (it names no token row). */
  tokenId: string;
  /** Set when the bearer is a device credential. */
  deviceId?: string;
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
  if (token !== undefined && looksLikeDeviceToken(token)) return authenticateDevice(deps, token);
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

async function authenticateDevice(deps: { db: Kysely<Database>; clock: Clock }, token: string): Promise<Caller> {
  const found = await findDeviceByHash(deps.db, hashToken(token));
  if (found === undefined || found.user.disabled !== 0) throw new ApiError('AUTH_INVALID');
  const { device, user } = found;
  if (device.revoked_at !== null) {
    throw new ApiError('DEVICE_REVOKED', `This device was revoked at ${device.revoked_at}; register it again.`, { revokedAt: device.revoked_at });
  }
  const now = deps.clock.now();
  const lastSeen = device.last_seen_at === null ? 0 : Date.parse(device.last_seen_at);
  if (now - lastSeen >= TOUCH_INTERVAL_MS) await touchDevice(deps.db, device.id, new Date(now).toISOString());
  return { userId: user.id, name: user.name, role: 'user', tokenId: `device:${device.id}`, deviceId: device.id };
}
