// Offline grants (packages/api schemas/leases.ts GrantBody): `<base64url(JSON)>.<base64url(Ed25519 signature)>`,
// signed by the server with the key whose public half the device got at registration (or GET /grant-key).
// The device checks the signature and the fields before it trusts a grant; a grant for another desktop,
// device or generation is as good as none.

import { createPublicKey, verify } from 'node:crypto';

import { isUuid, isValidName, type GrantBody } from '@roamdesk/api';

import { offlineElapsed, type ClockReading } from './clock.ts';
import { DeviceError } from './errors.ts';

/** Parse a grant and verify its signature; throws DeviceError DEVICE_ERR_GRANT_INVALID otherwise. */
export function verifyGrant(grant: string, publicKeyPem: string): GrantBody {
  const invalid = (why: string): DeviceError =>
    new DeviceError('DEVICE_ERR_GRANT_INVALID', `the offline grant is invalid: ${why}`, {
      hint: 'connect to the server once (any roamdesk command renews the grant)',
    });
  const parts = grant.split('.');
  if (parts.length !== 2 || parts[0] === undefined || parts[1] === undefined || parts[0] === '' || parts[1] === '') throw invalid('not <body>.<signature>');
  const body = Buffer.from(parts[0], 'base64url');
  const sig = Buffer.from(parts[1], 'base64url');
  let key;
  try {
    key = createPublicKey(publicKeyPem);
  } catch {
    throw invalid('the stored grant key is not a public key');
  }
  if (key.asymmetricKeyType !== 'ed25519') throw invalid(`the grant key is ${String(key.asymmetricKeyType)}, not Ed25519`);
  // The signature covers the JSON bytes; a signature over the encoded text (JWS style) is accepted as well.
  const ok = verify(null, body, key, sig) || verify(null, Buffer.from(parts[0], 'ascii'), key, sig);
  if (!ok) throw invalid('the signature does not verify with the server key');
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch {
    throw invalid('the body is not JSON');
  }
  const g = raw as Partial<GrantBody>;
  if (
    typeof g !== 'object' || g === null || !isValidName(g.desktop) || !isUuid(g.desktopId) || !isUuid(g.deviceId) ||
    !Number.isSafeInteger(g.generation) || typeof g.issuedAt !== 'string' || typeof g.expiresAt !== 'string' ||
    !Number.isSafeInteger(g.maxOfflineSeconds) || Number.isNaN(Date.parse(g.issuedAt)) || Number.isNaN(Date.parse(g.expiresAt))
  ) {
    throw invalid('fields are missing or malformed');
  }
  return g as GrantBody;
}

export interface GrantCheck {
  ok: boolean;
  /** Why not, for the user. */
  reason: string | null;
  /** When the grant stops allowing a start (the earlier of expiresAt and contact + maxOfflineSeconds), ISO. */
  expiresAt: string;
  /** Seconds since the last server contact (monotonic), Infinity when unknown. */
  offlineSeconds: number;
  secondsLeft: number;
}

/**
 * May the local VM start now? The grant must be this desktop's and device's at this generation, not past
 * `expiresAt` by the trusted wall clock, and no more than `maxOfflineSeconds` of monotonic time may have passed
 * since the last contact with the server.
 */
export function checkGrant(
  body: GrantBody,
  expect: { desktop: string; deviceId: string; generation: number },
  contact: ClockReading,
  now: ClockReading,
): GrantCheck {
  const offline = offlineElapsed(contact, now);
  const expiresMs = Date.parse(body.expiresAt);
  const offlineLimitMs = contact.trustedWallMs + body.maxOfflineSeconds * 1000;
  const byOffline = Number.isFinite(offline) ? Math.max(0, body.maxOfflineSeconds - offline) : 0;
  const byExpiry = Math.max(0, (expiresMs - now.trustedWallMs) / 1000);
  const secondsLeft = Math.min(byOffline, byExpiry);
  const expiresAt = new Date(Math.min(expiresMs, offlineLimitMs)).toISOString();
  const base = { expiresAt, offlineSeconds: offline, secondsLeft };
  if (body.desktop !== expect.desktop || body.deviceId !== expect.deviceId || body.generation !== expect.generation) {
    return { ...base, ok: false, reason: `the grant is for ${body.desktop} at generation ${body.generation}, not this lease`, secondsLeft: 0 };
  }
  if (!Number.isFinite(offline)) {
    return { ...base, ok: false, reason: 'the time since the last server contact is unknown (the device clock record was lost or replaced)' };
  }
  if (offline > body.maxOfflineSeconds) {
    return { ...base, ok: false, reason: `${Math.floor(offline)} s without server contact exceed the allowed ${body.maxOfflineSeconds} s` };
  }
  if (now.trustedWallMs >= expiresMs) {
    return { ...base, ok: false, reason: `the offline grant expired at ${body.expiresAt}` };
  }
  return { ...base, ok: true, reason: null };
}
