// POST /desktops (admin), GET /desktops, GET /desktops/:name, DELETE /desktops/:name (admin),
// POST /desktops/:name/start|stop|restart, GET /desktops/:name/log, GET /desktops/:name/export

import {
  ApiError,
  CreateDesktopRequest,
  type EventAction,
  DEFAULT_CPUS,
  DEFAULT_MEMORY_MIB,
  type Desktop,
  DesktopListResponse,
  DesktopResponse,
  NameParams,
  SERIAL_LOG_TAIL_DEFAULT,
  SerialLogQuery,
  StopQuery,
} from '@roamdesk/api';
import { Type } from 'typebox';
import type { AppContext } from '../context.ts';
import { isUniqueViolation } from '../db/constraints.ts';
import { deleteDesktopAtRest, type DesktopView, findDesktopById, insertDesktop, listDesktops, toApiDesktop } from '../db/repositories/desktops.ts';
import { findImageByName } from '../db/repositories/images.ts';
import { findUserByName } from '../db/repositories/users.ts';
import { conflict, notFound } from '../errors.ts';
import { callerOf } from '../http/hooks.ts';
import { visibleDesktop } from '../services/access.ts';
import { checkedOut } from '../services/checked-out.ts';
import { requireRegularFile } from '../services/files.ts';
import { restartDesktop, startDesktop, stopDesktop } from '../services/lifecycle.ts';
import { toRuntimeDesktop } from '../services/paths.ts';
import { errorResponses, NoContent, type RoutePlugin } from './common.ts';

async function createDesktop(ctx: AppContext, body: CreateDesktopRequest): Promise<DesktopView> {
  if (body.initrd !== undefined && body.kernel === undefined) {
    throw new ApiError('VALIDATION_FAILED', 'initrd needs kernel', { in: 'body', issues: [{ path: '/initrd', message: 'initrd needs kernel' }] });
  }
  if (body.kernel !== undefined) await requireRegularFile('kernel', body.kernel);
  if (body.initrd !== undefined) await requireRegularFile('initrd', body.initrd);
  const image = await findImageByName(ctx.db, body.image);
  if (image === undefined) throw notFound('image', body.image);
  const owner = await findUserByName(ctx.db, body.owner);
  if (owner === undefined) throw notFound('user', body.owner);

  const id = ctx.ids.uuid();
  const now = ctx.nowIso();
  try {
    await insertDesktop(ctx.db, {
      id,
      name: body.name,
      owner_id: owner.id,
      image_id: image.id,
      memory_mib: body.memoryMiB ?? DEFAULT_MEMORY_MIB,
      cpus: body.cpus ?? DEFAULT_CPUS,
      kernel: body.kernel ?? null,
      initrd: body.initrd ?? null,
      append: body.append ?? null,
      state: 'stopped',
      location: 'server',
      lease_generation: 1,
      // The image's latest version: its chain is the image plus one layer per later version.
      top_object_id: image.top_object_id,
      overlay_path: null, // created at first start (services/lifecycle.ts)
      created_at: now,
      updated_at: now,
      lease_state: 'server',
      lease_device_id: null,
      lease_since: now,
      replicated_top_object_id: null,
      replicated_at: null,
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict(`desktop "${body.name}" already exists`, { name: body.name });
    throw err;
  }
  const created = await findDesktopById(ctx.db, id);
  if (created === undefined) throw new Error('desktop vanished after insert');
  return created;
}

export const desktopRoutes: RoutePlugin = (ctx) => (app, _options, done) => {
  const view = (d: DesktopView): Desktop => toApiDesktop(d, ctx.runtime.paused?.(d.id) ?? null);
  const tags = ['desktops'];

  app.post(
    '/desktops',
    {
      config: { auth: 'admin' },
      schema: { tags, summary: 'Create a desktop', body: CreateDesktopRequest, response: { 201: DesktopResponse, ...errorResponses } },
    },
    async (request, reply) => {
      const caller = callerOf(request);
      const { name, image, owner } = request.body;
      const desktop = await ctx.audit.run(
        { actor: caller, action: 'desktop.create', target: name, detail: { image, owner } },
        () => createDesktop(ctx, request.body),
        (d) => ({ desktopId: d.id }),
      );
      return reply.status(201).send({ desktop: toApiDesktop(desktop) });
    },
  );

  app.get(
    '/desktops',
    { schema: { tags, summary: 'Desktops: your own, or all for admins', response: { 200: DesktopListResponse, ...errorResponses } } },
    async (request) => {
      const caller = callerOf(request);
      const rows = await listDesktops(ctx.db, caller.role === 'admin' ? {} : { ownerId: caller.userId });
      return { desktops: rows.map(view) };
    },
  );

  app.get(
    '/desktops/:name',
    { schema: { tags, summary: 'One desktop', params: NameParams, response: { 200: DesktopResponse, ...errorResponses } } },
    async (request) => ({ desktop: view(await visibleDesktop(ctx.db, callerOf(request), request.params.name)) }),
  );

  app.delete(
    '/desktops/:name',
    {
      config: { auth: 'admin' },
      schema: { tags, summary: 'Delete a stopped desktop', params: NameParams, response: { 204: NoContent, ...errorResponses } },
    },
    async (request, reply) => {
      const caller = callerOf(request);
      const { name } = request.params;
      const d = await visibleDesktop(ctx.db, caller, name);
      await ctx.audit.run({ actor: caller, action: 'desktop.delete', desktopId: d.id, target: name }, async () => {
        if (d.location !== 'server') throw checkedOut(d);
        if (!(await deleteDesktopAtRest(ctx.db, d.id))) {
          const now = await findDesktopById(ctx.db, d.id);
          throw new ApiError('DESKTOP_RUNNING', `desktop "${name}" is ${now?.state ?? 'busy'}; stop it first`, { state: now?.state ?? null });
        }
        // Row first, then files: a failure here leaves an orphan run directory, never a desktop without disk.
        await ctx.runtime.remove(toRuntimeDesktop(ctx.paths, d)).catch((err: unknown) => {
          ctx.logger.error({ err, desktop: d.id }, 'could not remove the run directory of a deleted desktop');
        });
      });
      return reply.status(204).send(null);
    },
  );

  const actions = [
    ['start', 'desktop.start', startDesktop],
    ['stop', 'desktop.stop', stopDesktop],
    ['restart', 'desktop.restart', restartDesktop],
  ] as const satisfies ReadonlyArray<readonly [string, EventAction, typeof startDesktop]>;

  for (const [verb, action, run] of actions) {
    app.post(
      `/desktops/:name/${verb}`,
      {
        schema: {
          tags, summary: `${verb[0]?.toUpperCase()}${verb.slice(1)} the desktop on the server`, params: NameParams,
          ...(verb === 'start' ? {} : { querystring: StopQuery }), response: { 200: DesktopResponse, ...errorResponses },
        },
      },
      async (request) => {
        const caller = callerOf(request);
        const d = await visibleDesktop(ctx.db, caller, request.params.name);
        const q = request.query as StopQuery | undefined;
        const force = q?.force === true;
        const timeoutSeconds = q?.timeoutSeconds;
        const after = await ctx.audit.run(
          {
            actor: caller, action, desktopId: d.id, target: d.name,
            detail: { from: d.state, ...(force ? { force } : {}), ...(timeoutSeconds !== undefined ? { timeoutSeconds } : {}) },
          },
          () => run(ctx, d, force ? { timeoutMs: 0 } : timeoutSeconds !== undefined ? { timeoutMs: timeoutSeconds * 1000 } : {}),
          (r) => ({ detail: { to: r.state } }),
        );
        return { desktop: view(after) };
      },
    );
  }

  app.get(
    '/desktops/:name/log',
    {
      schema: {
        tags,
        summary: 'The serial console log (text)',
        params: NameParams,
        querystring: SerialLogQuery,
        response: { 200: Type.String(), ...errorResponses },
      },
    },
    async (request, reply) => {
      const d = await visibleDesktop(ctx.db, callerOf(request), request.params.name);
      const text = await ctx.runtime.serialLog(toRuntimeDesktop(ctx.paths, d), request.query.tail ?? SERIAL_LOG_TAIL_DEFAULT);
      return reply.type('text/plain; charset=utf-8').send(text);
    },
  );

  app.get(
    '/desktops/:name/export',
    {
      schema: {
        tags,
        summary: 'Download the current chain as one standalone qcow2 (desktop must be stopped)',
        params: NameParams,
        response: { 200: Type.Unsafe<unknown>({ type: 'string', format: 'binary' }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const caller = callerOf(request);
      const d = await visibleDesktop(ctx.db, caller, request.params.name);
      const stream = await ctx.audit.run({ actor: caller, action: 'desktop.export', desktopId: d.id, target: d.name }, async () => {
        if (d.location !== 'server') throw checkedOut(d);
        // qemu-img must never read a chain a running VM writes to (reliability.md R9).
        if (d.state !== 'stopped' && d.state !== 'error') {
          throw new ApiError('DESKTOP_RUNNING', `desktop "${d.name}" is ${d.state}; stop it to export`, { state: d.state });
        }
        return ctx.runtime.export(toRuntimeDesktop(ctx.paths, d));
      });
      return reply
        .header('content-type', 'application/octet-stream')
        .header('content-disposition', `attachment; filename="${d.name}.qcow2"`)
        .send(stream);
    },
  );
  done();
};
