// Names and IDs that reach the server from outside. They are validated here, once, by pattern, so that
// nothing shaped like a path (`../x`, `a/b`, NUL, `%2e%2e` after decoding, unicode look-alike dots) can ever
// reach code that builds a file name. The server never builds a path from a name: it maps a name to a
// validated UUID or object id first (reliability.md §2.4).

import { Type, type Static } from 'typebox';

/**
 * Desktop, user and image names: lower-case ASCII letters, digits, `.`, `_`, `-`; starts with a letter or
 * digit; at most 63 characters (a DNS label, so a name can become a host name later); never contains `..`.
 * The look-ahead rejects `..` anywhere, which a plain character class cannot.
 */
export const NAME_PATTERN = '^(?!.*\\.\\.)[a-z0-9][a-z0-9._-]{0,62}$';
export const NAME_MAX_LENGTH = 63;

/** Object ids (images and layers) are the SHA-256 of the object's bytes, in lower-case hex. */
export const OBJECT_ID_PATTERN = '^[0-9a-f]{64}$';

/** Desktop, user and token ids: canonical lower-case UUIDs (as `crypto.randomUUID()` writes them). */
export const UUID_PATTERN = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';

const nameRe = new RegExp(NAME_PATTERN);
const objectIdRe = new RegExp(OBJECT_ID_PATTERN);
const uuidRe = new RegExp(UUID_PATTERN);

/** True when `value` is a valid desktop, user or image name. The length check runs first, so a 10 MB string costs nothing. */
export function isValidName(value: unknown): value is string {
  return typeof value === 'string' && value.length <= NAME_MAX_LENGTH && nameRe.test(value);
}

/** True when `value` is a 64-hex object id. */
export function isObjectId(value: unknown): value is string {
  return typeof value === 'string' && value.length === 64 && objectIdRe.test(value);
}

/** True when `value` is a canonical lower-case UUID. */
export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && value.length === 36 && uuidRe.test(value);
}

export const Name = Type.String({
  minLength: 1,
  maxLength: NAME_MAX_LENGTH,
  pattern: NAME_PATTERN,
  description: 'lower-case letters, digits, ".", "_", "-"; starts with a letter or digit; no ".."; at most 63 characters',
  examples: ['alice', 'debian-12.desktop'],
});
export type Name = Static<typeof Name>;

export const ObjectId = Type.String({
  minLength: 64,
  maxLength: 64,
  pattern: OBJECT_ID_PATTERN,
  description: 'SHA-256 of the object bytes, lower-case hex',
});
export type ObjectId = Static<typeof ObjectId>;

export const Uuid = Type.String({ minLength: 36, maxLength: 36, pattern: UUID_PATTERN, description: 'lower-case UUID' });
export type Uuid = Static<typeof Uuid>;

/**
 * An absolute path on the server (image import source, kernel, initrd). Only admins send these. The schema
 * only bounds the shape; the server checks that the file exists and is a regular file.
 */
export const ServerPath = Type.String({
  minLength: 2,
  maxLength: 4096,
  pattern: '^/[^\\u0000]*$',
  description: 'absolute path of a regular file on the server',
});
export type ServerPath = Static<typeof ServerPath>;

/** ISO-8601 UTC timestamp as `Date.prototype.toISOString()` writes it. */
export const Timestamp = Type.String({ description: 'ISO-8601 UTC timestamp, e.g. 2025-01-31T12:00:00.000Z' });
export type Timestamp = Static<typeof Timestamp>;

export const NameParams = Type.Object({ name: Name }, { additionalProperties: false });
export type NameParams = Static<typeof NameParams>;
