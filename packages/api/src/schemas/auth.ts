import { Type, type Static } from 'typebox';
import { Name, Timestamp } from '../names.ts';
import { User } from './users.ts';

export const LoginRequest = Type.Object(
  {
    user: Name,
    // Any non-empty password up to the same bound as new passwords; the policy is not revealed at login.
    password: Type.String({ minLength: 1, maxLength: 1024 }),
  },
  { additionalProperties: false },
);
export type LoginRequest = Static<typeof LoginRequest>;

export const LoginResponse = Type.Object({
  token: Type.String({ description: 'bearer token; send as `Authorization: Bearer <token>`' }),
  expiresAt: Timestamp,
  user: User,
});
export type LoginResponse = Static<typeof LoginResponse>;

/** The bearer token format: a prefix that secret scanners can spot, then 32 random bytes in base64url. */
export const TOKEN_PREFIX = 'rdt_';
export const TOKEN_PATTERN = '^rdt_[A-Za-z0-9_-]{43}$';
