// The TypeBox schemas of names and ids (patterns and validators: patterns.ts, which needs no schema library).

import { Type, type Static } from 'typebox';
import { NAME_MAX_LENGTH, NAME_PATTERN, OBJECT_ID_PATTERN, UUID_PATTERN } from './patterns.ts';

export * from './patterns.ts';

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
