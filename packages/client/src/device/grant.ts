// Offline grants (packages/api schemas/leases.ts GrantBody): `<base64url(JSON)>.<base64url(Ed25519 signature)>`,
// signed by the server with the key whose public half the device got at registration (or GET /grant-key).
// The device checks the signature and the fields before it trusts a grant; a grant for another desktop,
// device or generation is as good as none.

import { verifyGrant as verifySignedGrant } from '@roamdesk/api/core';
import type { GrantBody } from '@roamdesk/api';

import { offlineElapsed, type ClockReading } from './clock.ts';
import { DeviceError } from './errors.ts';

/**
 * Parse a grant and verify its signature (@roamdesk/api verifyGrant: Ed25519 over the encoded body, the body's
 * shape checked); throws DeviceError DEVICE_ERR_GRANT_INVALID otherwise.
 */
export function verifyGrant(grant: string, publicKeyPem: string): GrantBody {
  const r = verifySignedGrant(grant, publicKeyPem);
  if (!r.ok) {
    throw new DeviceError('DEVICE_ERR_GRANT_INVALID', `the offline grant is invalid: ${r.reason}`, {
      hint: 'connect to the server once (any roamdesk command renews the grant)',
    });
  }
  return r.body;
}

export interface GrantCheck {
  ok: boolean;
  /** Why not, for the user. */
  reason: string | null;
  /** When the grant stops allowing a start, on this device's clock (the earlier of its arrival + its lifetime and contact + maxOfflineSeconds), ISO. */
  expiresAt: string;
  /** Seconds since the last server contact (monotonic), Infinity when unknown. */
  offlineSeconds: number;
  secondsLeft: number;
}

/**
 * May the local VM start now? The grant must be this desktop's and device's at this generation; no more than
 * `maxOfflineSeconds` of this device's monotonic time may have passed since the last contact with the server, nor
 * more than the grant's lifetime (`expiresAt` − `issuedAt`) since it arrived (`received`).
 *
 * The lifetime is counted on this device's clock, from the grant's arrival, not by comparing the server's
 * `expiresAt` with this device's wall clock: a device whose clock is ahead of the server's (by a misconfigured time
 * zone, a dead RTC battery, an NTP server of its own) would otherwise find every grant expired the moment it
 * arrived, contact or not; one whose clock is behind would keep a grant longer than the server gave it. Counted
 * from arrival, neither happens, and setting the clock back still extends nothing (offlineElapsed is monotonic).
 */
export function checkGrant(
  body: GrantBody,
  expect: { desktop: string; deviceId: string; generation: number },
  contact: ClockReading,
  now: ClockReading,
  received: ClockReading = contact,
): GrantCheck {
  const offline = offlineElapsed(contact, now);
  const sinceGrant = offlineElapsed(received, now);
  const lifetime = Math.max(0, (Date.parse(body.expiresAt) - Date.parse(body.issuedAt)) / 1000);
  const byOffline = Number.isFinite(offline) ? Math.max(0, body.maxOfflineSeconds - offline) : 0;
  const byLifetime = Number.isFinite(sinceGrant) ? Math.max(0, lifetime - sinceGrant) : 0;
  const secondsLeft = Math.min(byOffline, byLifetime);
  // When that is, on this device's clock.
  const expiresAt = new Date(Math.min(received.trustedWallMs + lifetime * 1000, contact.trustedWallMs + body.maxOfflineSeconds * 1000)).toISOString();
  const base = { expiresAt, offlineSeconds: offline, secondsLeft };
  if (body.desktop !== expect.desktop || body.deviceId !== expect.deviceId || body.generation !== expect.generation) {
    return { ...base, ok: false, reason: `the grant is for ${body.desktop} at generation ${body.generation}, not this lease`, secondsLeft: 0 };
  }
  if (!Number.isFinite(offline) || !Number.isFinite(sinceGrant)) {
    return { ...base, ok: false, reason: 'the time since the last server contact is unknown (the device clock record was lost or replaced)' };
  }
  if (offline > body.maxOfflineSeconds) {
    return { ...base, ok: false, reason: `${Math.floor(offline)} s without server contact exceed the allowed ${body.maxOfflineSeconds} s` };
  }
  if (sinceGrant >= lifetime) {
    return { ...base, ok: false, reason: `the offline grant expired: it allows ${Math.floor(lifetime)} s from its arrival, and ${Math.floor(sinceGrant)} s have passed` };
  }
  return { ...base, ok: true, reason: null };
}
