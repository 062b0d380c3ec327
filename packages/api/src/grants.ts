// Offline grants (schemas/leases.ts GrantBody): `<base64url(JSON body)>.<base64url(Ed25519 signature)>`, the
// signature taken over the ASCII bytes of the first part (as JWS does, so the verifier checks exactly the bytes
// it decodes). Pure functions over node:crypto, shared by the server (signs) and the device agent (verifies).
// verifyGrant checks the signature and the body's shape only: whether the grant is still good (expiresAt,
// monotonic time since issuedAt, generation) is the device's decision.

//
// The body's shape is checked by hand (isGrantBody, the same rules as the GrantBody schema) so that the device,
// which only verifies grants, never loads the schema library (grants.test.ts holds the two to the same answers).

import { createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import { isUuid, isValidName } from './patterns.ts';
import type { GrantBody } from './schemas/leases.ts';

/** Grants are a few hundred bytes; anything far larger is not one (and is not decoded). */
const MAX_GRANT_LENGTH = 4096;
const PART = /^[A-Za-z0-9_-]+$/;

export type GrantCheck = { ok: true; body: GrantBody } | { ok: false; reason: string };

const isPositiveInteger = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 1;

/** Does `v` have GrantBody's shape (schemas/leases.ts)? Extra properties are allowed, as the schema allows them. */
export function isGrantBody(v: unknown): v is GrantBody {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const o = v as Record<string, unknown>;
  return isValidName(o['desktop'])
    && isUuid(o['desktopId']) && isUuid(o['deviceId'])
    && isPositiveInteger(o['generation']) && isPositiveInteger(o['maxOfflineSeconds'])
    && typeof o['issuedAt'] === 'string' && typeof o['expiresAt'] === 'string';
}

/** A signed grant for `body`. `privateKey`: an Ed25519 private key (KeyObject or PEM). */
export function signGrant(body: GrantBody, privateKey: KeyObject | string): string {
  const payload = Buffer.from(JSON.stringify(body), 'utf8').toString('base64url');
  const signature = sign(null, Buffer.from(payload, 'ascii'), privateKey);
  return `${payload}.${signature.toString('base64url')}`;
}

/** The body of a grant WITHOUT checking its signature (display only; never trust it). */
export function parseGrant(token: string): GrantCheck {
  if (token.length > MAX_GRANT_LENGTH) return { ok: false, reason: 'grant too long' };
  const parts = token.split('.');
  const [payload, signature] = parts;
  if (parts.length !== 2 || payload === undefined || signature === undefined || !PART.test(payload) || !PART.test(signature)) {
    return { ok: false, reason: 'not a grant (expected two base64url parts)' };
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    return { ok: false, reason: 'grant body is not JSON' };
  }
  if (!isGrantBody(body)) return { ok: false, reason: 'grant body has the wrong shape' };
  if (Number.isNaN(Date.parse(body.issuedAt)) || Number.isNaN(Date.parse(body.expiresAt))) {
    return { ok: false, reason: 'grant times are not timestamps' };
  }
  return { ok: true, body };
}

/** The grant's body when its Ed25519 signature verifies with `publicKeyPem` (SPKI PEM, as GET /grant-key gives it). */
export function verifyGrant(token: string, publicKeyPem: string): GrantCheck {
  const parsed = parseGrant(token);
  if (!parsed.ok) return parsed;
  let key: KeyObject;
  try {
    key = createPublicKey(publicKeyPem);
  } catch {
    return { ok: false, reason: 'the grant key is not a public key PEM' };
  }
  if (key.asymmetricKeyType !== 'ed25519') return { ok: false, reason: 'the grant key is not an Ed25519 key' };
  const [payload = '', signature = ''] = token.split('.');
  let good: boolean;
  try {
    good = verify(null, Buffer.from(payload, 'ascii'), key, Buffer.from(signature, 'base64url'));
  } catch {
    good = false;
  }
  return good ? parsed : { ok: false, reason: 'bad signature' };
}
