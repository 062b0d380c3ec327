// GET /operations?desktop=NAME, GET /operations/:id (owner or admin),
// POST /operations/:id/progress, POST /operations/:id/finish (the device that runs it).
// Operations are created by the lease calls (routes/leases.ts); the device reports its transfer progress here.

import {
  ApiError,
  FinishOperationRequest,
  OperationIdParams,
  OperationListResponse,
  OperationProgress,
  OperationResponse,
  OperationsQuery,
} from '@roamdesk/api';
import type { Caller } from '../auth/authenticate.ts';
import type { AppContext } from '../context.ts';
import { findOperation, finishOperation, listOperations, type OperationView, setOperationProgress, toApiOperation } from '../db/repositories/operations.ts';
import { notFound } from '../errors.ts';
import { callerOf } from '../http/hooks.ts';
import { visibleDesktop } from '../services/access.ts';
import { errorResponses, NoContent, type RoutePlugin } from './common.ts';

const tags = ['operations'];
const OPERATIONS_LIMIT_DEFAULT = 100;

/** The operation if the caller may see it (admins: any; users: those of their desktops); else 404 like a missing one. */
async function visibleOperation(ctx: AppContext, caller: Caller, id: string): Promise<OperationView> {
  const op = await findOperation(ctx.db, id);
  if (op === undefined || (caller.role !== 'admin' && op.owner_id !== caller.userId)) throw notFound('operation', id);
  return op;
}

/** Only the device running an operation reports on it, and only while it runs. */
async function deviceOperation(ctx: AppContext, caller: Caller, id: string): Promise<OperationView> {
  const op = await visibleOperation(ctx, caller, id);
  if (op.device_id !== caller.deviceId) throw new ApiError('FORBIDDEN', `operation ${id} is run by another device`);
  return op;
}

function checkProgress(p: OperationProgress): void {
  const issues: Array<{ path: string; message: string }> = [];
  for (const key of ['bytesDone', 'bytesTotal', 'bytesOnWire', 'bytesSaved'] as const) {
    if (!Number.isSafeInteger(p[key])) issues.push({ path: `/${key}`, message: 'must be a safe integer' });
  }
  if (p.bytesDone > p.bytesTotal) issues.push({ path: '/bytesDone', message: 'must not exceed bytesTotal' });
  if (p.bytesSaved > p.bytesTotal) issues.push({ path: '/bytesSaved', message: 'must not exceed bytesTotal' });
  if (!Number.isFinite(p.rateBytesPerSec)) issues.push({ path: '/rateBytesPerSec', message: 'must be finite' });
  if (p.etaSeconds !== null && !Number.isFinite(p.etaSeconds)) issues.push({ path: '/etaSeconds', message: 'must be finite' });
  if (issues.length > 0) throw new ApiError('VALIDATION_FAILED', 'invalid progress', { in: 'body', issues });
}

export const operationRoutes: RoutePlugin = (ctx) => (app, _options, done) => {
  app.get(
    '/operations',
    {
      schema: {
        tags,
        summary: 'Operations (check-out, replicate, check-in, rollback), newest first: of your desktops, or all for admins',
        querystring: OperationsQuery,
        response: { 200: OperationListResponse, ...errorResponses },
      },
    },
    async (request) => {
      const caller = callerOf(request);
      const { desktop, limit = OPERATIONS_LIMIT_DEFAULT } = request.query;
      const desktopId = desktop === undefined ? undefined : (await visibleDesktop(ctx.db, caller, desktop)).id;
      const rows = await listOperations(ctx.db, {
        limit,
        ...(caller.role === 'admin' ? {} : { ownerId: caller.userId }),
        ...(desktopId === undefined ? {} : { desktopId }),
      });
      return { operations: rows.map(toApiOperation) };
    },
  );

  app.get(
    '/operations/:id',
    { schema: { tags, summary: 'One operation', params: OperationIdParams, response: { 200: OperationResponse, ...errorResponses } } },
    async (request) => ({ operation: toApiOperation(await visibleOperation(ctx, callerOf(request), request.params.id)) }),
  );

  app.post(
    '/operations/:id/progress',
    {
      config: { credential: 'device' },
      schema: { tags, summary: "The device's transfer progress", params: OperationIdParams, body: OperationProgress, response: { 204: NoContent, ...errorResponses } },
    },
    async (request, reply) => {
      const op = await deviceOperation(ctx, callerOf(request), request.params.id);
      checkProgress(request.body);
      const p = request.body;
      const progress: OperationProgress = {
        phase: p.phase, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, bytesOnWire: p.bytesOnWire, bytesSaved: p.bytesSaved,
        rateBytesPerSec: p.rateBytesPerSec, etaSeconds: p.etaSeconds,
      };
      if (!(await setOperationProgress(ctx.db, op.id, progress, ctx.nowIso()))) {
        throw new ApiError('CONFLICT', `operation ${op.id} has ended (${op.state})`, { state: op.state });
      }
      return reply.status(204).send(null);
    },
  );

  app.post(
    '/operations/:id/finish',
    {
      config: { credential: 'device' },
      schema: {
        tags,
        summary: "The device gives up on a running operation ('failed' or 'cancelled'; success is recorded by the lease call itself)",
        params: OperationIdParams,
        body: FinishOperationRequest,
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const caller = callerOf(request);
      const op = await deviceOperation(ctx, caller, request.params.id);
      const { state, error } = request.body;
      // Repeating a finish (a lost answer) is not an error.
      if (op.state === state) return reply.status(204).send(null);
      await ctx.audit.run({ actor: caller, action: 'operation.finish', desktopId: op.desktop_id, target: op.desktop_name, detail: { operation: op.id, kind: op.kind, state } }, async () => {
        if (state === 'succeeded') {
          throw new ApiError('CONFLICT', `a ${op.kind} succeeds when its lease call commits; finish it as 'failed' or 'cancelled'`, { state: op.state });
        }
        const outcome = error === undefined ? {} : { error };
        if (!(await finishOperation(ctx.db, op.id, state, ctx.nowIso(), outcome))) {
          throw new ApiError('CONFLICT', `operation ${op.id} has ended (${op.state})`, { state: op.state });
        }
      });
      return reply.status(204).send(null);
    },
  );

  done();
};
