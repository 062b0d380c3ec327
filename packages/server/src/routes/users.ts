// GET/POST /users, GET/DELETE /users/:name (admin), GET /me

import { CreateUserRequest, NameParams, UserListResponse, UserResponse } from '@roamdesk/api';
import { isForeignKeyViolation, isUniqueViolation } from '../db/constraints.ts';
import {
  countActiveAdmins,
  countDesktopsOwnedBy,
  deleteUser,
  findUserByName,
  insertUser,
  listUsers,
  toApiUser,
} from '../db/repositories/users.ts';
import { conflict, notFound } from '../errors.ts';
import { callerOf } from '../http/hooks.ts';
import { errorResponses, NoContent, type RoutePlugin } from './common.ts';

export const userRoutes: RoutePlugin = (ctx) => (app, _options, done) => {
  app.get(
    '/me',
    { schema: { tags: ['users'], summary: 'The logged-in user', response: { 200: UserResponse, ...errorResponses } } },
    async (request) => {
      const user = await findUserByName(ctx.db, callerOf(request).name);
      if (user === undefined) throw notFound('user', callerOf(request).name);
      return { user: toApiUser(user) };
    },
  );

  app.get(
    '/users',
    { config: { auth: 'admin' }, schema: { tags: ['users'], summary: 'List users', response: { 200: UserListResponse, ...errorResponses } } },
    async () => ({ users: (await listUsers(ctx.db)).map(toApiUser) }),
  );

  app.post(
    '/users',
    {
      config: { auth: 'admin' },
      schema: { tags: ['users'], summary: 'Create a user', body: CreateUserRequest, response: { 201: UserResponse, ...errorResponses } },
    },
    async (request, reply) => {
      const { name, password, role = 'user' } = request.body;
      const user = await ctx.audit.run(
        { actor: callerOf(request), action: 'user.create', target: name, detail: { role } },
        async () => {
          if ((await findUserByName(ctx.db, name)) !== undefined) throw conflict(`user "${name}" already exists`, { name });
          const row = {
            id: ctx.ids.uuid(),
            name,
            password_hash: await ctx.hasher.hash(password),
            role,
            created_at: ctx.nowIso(),
            disabled: 0,
          };
          try {
            await insertUser(ctx.db, row);
          } catch (err) {
            if (isUniqueViolation(err)) throw conflict(`user "${name}" already exists`, { name });
            throw err;
          }
          return row;
        },
      );
      return reply.status(201).send({ user: toApiUser(user) });
    },
  );

  app.get(
    '/users/:name',
    {
      config: { auth: 'admin' },
      schema: { tags: ['users'], summary: 'One user', params: NameParams, response: { 200: UserResponse, ...errorResponses } },
    },
    async (request) => {
      const user = await findUserByName(ctx.db, request.params.name);
      if (user === undefined) throw notFound('user', request.params.name);
      return { user: toApiUser(user) };
    },
  );

  app.delete(
    '/users/:name',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['users'],
        summary: 'Delete a user (not while they own desktops; never the last admin)',
        params: NameParams,
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { name } = request.params;
      await ctx.audit.run({ actor: callerOf(request), action: 'user.delete', target: name }, async () => {
        const user = await findUserByName(ctx.db, name);
        if (user === undefined) throw notFound('user', name);
        const desktops = await countDesktopsOwnedBy(ctx.db, user.id);
        if (desktops > 0) throw conflict(`user "${name}" owns ${desktops} desktop(s)`, { reason: 'owns-desktops', desktops });
        if (user.role === 'admin' && user.disabled === 0 && (await countActiveAdmins(ctx.db)) <= 1) {
          throw conflict('the last administrator cannot be deleted', { reason: 'last-admin' });
        }
        // Tokens go with the user (ON DELETE CASCADE), so their sessions end now.
        try {
          await deleteUser(ctx.db, user.id);
        } catch (err) {
          // A desktop created for this user since the count above: the foreign key refuses the delete.
          if (isForeignKeyViolation(err)) throw conflict(`user "${name}" owns desktops`, { reason: 'owns-desktops' });
          throw err;
        }
      });
      return reply.status(204).send(null);
    },
  );
  done();
};
