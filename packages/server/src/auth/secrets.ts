// Bearer tokens: 256 random bits, shown to the client once, stored only as a SHA-256 hash. A plain hash
// (not a KDF) is enough because the secret has full entropy: nothing to brute-force.

import { createHash, randomBytes } from 'node:crypto';
import { DEVICE_TOKEN_PATTERN, DEVICE_TOKEN_PREFIX, TOKEN_PATTERN, TOKEN_PREFIX } from '@roamdesk/api';

const tokenRe = new RegExp(TOKEN_PATTERN);
const deviceTokenRe = new RegExp(DEVICE_TOKEN_PATTERN);

export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

/** Cheap shape check before any database lookup. */
export function looksLikeToken(value: string): boolean {
  return value.length === TOKEN_PREFIX.length + 43 && tokenRe.test(value);
}

/** A device credential (`rdd_…`): the same strength, another prefix, so the two kinds never mix. */
export function generateDeviceToken(): string {
  return DEVICE_TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

export function looksLikeDeviceToken(value: string): boolean {
  return value.length === DEVICE_TOKEN_PREFIX.length + 43 && deviceTokenRe.test(value);
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** A password for the first admin when none was configured: 144 bits, URL-safe, easy to copy. */
export function generatePassword(): string {
  return randomBytes(18).toString('base64url');
}
