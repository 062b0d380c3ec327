import { Type, type Static } from 'typebox';
import { Name, Timestamp, Uuid } from '../names.ts';

export const Role = Type.Union([Type.Literal('admin'), Type.Literal('user')]);
export type Role = Static<typeof Role>;

/** New passwords: long enough to matter, short enough that hashing cannot be used to burn CPU. */
export const NewPassword = Type.String({ minLength: 8, maxLength: 1024 });

export const User = Type.Object({
  id: Uuid,
  name: Name,
  role: Role,
  disabled: Type.Boolean(),
  createdAt: Timestamp,
});
export type User = Static<typeof User>;

export const CreateUserRequest = Type.Object(
  { name: Name, password: NewPassword, role: Type.Optional(Role) },
  { additionalProperties: false },
);
export type CreateUserRequest = Static<typeof CreateUserRequest>;

export const UserResponse = Type.Object({ user: User });
export type UserResponse = Static<typeof UserResponse>;

export const UserListResponse = Type.Object({ users: Type.Array(User) });
export type UserListResponse = Static<typeof UserListResponse>;
