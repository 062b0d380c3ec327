// Names and IDs that reach the server from outside. They are validated here, once, by pattern, so that
// nothing shaped like a path (`../x`, `a/b`, NUL, `%2e%2e` after decoding, unicode look-alike dots) can ever
// reach code that builds a file name. The server never builds a path from a name: it maps a name to a
// validated UUID or object id first (reliability.md §2.4).

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
