import type { Operation, OperationProgress } from '@roamdesk/api';
import type { Kysely, Selectable } from 'kysely';
import type { Database, OperationKindColumn, OperationStateColumn, OperationsTable } from '../schema.ts';

export type OperationRow = Selectable<OperationsTable>;
export type OperationView = OperationRow & { desktop_name: string; owner_id: string };

/** Finished operations kept per desktop; older ones are pruned when a new one starts. */
export const OPERATIONS_KEPT_PER_DESKTOP = 50;

export const NO_PROGRESS: OperationProgress = {
  phase: 'starting',
  bytesDone: 0,
  bytesTotal: 0,
  bytesOnWire: 0,
  bytesSaved: 0,
  rateBytesPerSec: 0,
  etaSeconds: null,
};

function parseObject(text: string | null): Record<string, unknown> | null {
  if (text === null) return null;
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

export function toApiOperation(row: OperationView): Operation {
  const progress = parseObject(row.progress);
  const error = parseObject(row.error);
  return {
    id: row.id,
    kind: row.kind,
    desktop: row.desktop_name,
    deviceId: row.device_id,
    state: row.state,
    progress: progress === null ? NO_PROGRESS : { ...NO_PROGRESS, ...(progress as Partial<OperationProgress>) },
    result: parseObject(row.result),
    error: error !== null && typeof error['code'] === 'string' && typeof error['message'] === 'string' ? { code: error['code'], message: error['message'] } : null,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

function selectView(db: Kysely<Database>) {
  return db
    .selectFrom('operations')
    .innerJoin('desktops', 'desktops.id', 'operations.desktop_id')
    .selectAll('operations')
    .select(['desktops.name as desktop_name', 'desktops.owner_id as owner_id']);
}

export interface NewOperation {
  id: string;
  kind: OperationKindColumn;
  desktopId: string;
  deviceId: string | null;
  userId: string | null;
  at: string;
  state?: OperationStateColumn;
  result?: Record<string, unknown>;
}

export async function insertOperation(db: Kysely<Database>, op: NewOperation): Promise<void> {
  await db
    .insertInto('operations')
    .values({
      id: op.id,
      kind: op.kind,
      desktop_id: op.desktopId,
      device_id: op.deviceId,
      user_id: op.userId,
      state: op.state ?? 'running',
      progress: JSON.stringify(NO_PROGRESS),
      result: op.result === undefined ? null : JSON.stringify(op.result),
      error: null,
      created_at: op.at,
      updated_at: op.at,
    })
    .execute();
  await pruneOperations(db, op.desktopId);
}

/** Keep the newest OPERATIONS_KEPT_PER_DESKTOP finished operations of a desktop (running ones always stay). */
async function pruneOperations(db: Kysely<Database>, desktopId: string): Promise<void> {
  const old = await db
    .selectFrom('operations')
    .select('id')
    .where('desktop_id', '=', desktopId)
    .where('state', '!=', 'running')
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .offset(OPERATIONS_KEPT_PER_DESKTOP)
    .limit(1000)
    .execute();
  if (old.length > 0) await db.deleteFrom('operations').where('id', 'in', old.map((o) => o.id)).execute();
}

export async function findOperation(db: Kysely<Database>, id: string): Promise<OperationView | undefined> {
  return selectView(db).where('operations.id', '=', id).executeTakeFirst();
}

/** Newest first. */
export async function listOperations(db: Kysely<Database>, f: { ownerId?: string; desktopId?: string; limit: number }): Promise<OperationView[]> {
  let q = selectView(db);
  if (f.ownerId !== undefined) q = q.where('desktops.owner_id', '=', f.ownerId);
  if (f.desktopId !== undefined) q = q.where('operations.desktop_id', '=', f.desktopId);
  return q.orderBy('operations.created_at', 'desc').orderBy('operations.id', 'desc').limit(f.limit).execute();
}

export async function runningOperations(db: Kysely<Database>, desktopId: string, kinds: readonly OperationKindColumn[]): Promise<OperationRow[]> {
  return db
    .selectFrom('operations')
    .selectAll()
    .where('desktop_id', '=', desktopId)
    .where('state', '=', 'running')
    .where('kind', 'in', kinds)
    .orderBy('created_at')
    .execute();
}

/** Progress of a running operation only. False when it is not running (any more). */
export async function setOperationProgress(db: Kysely<Database>, id: string, progress: OperationProgress, at: string): Promise<boolean> {
  const r = await db
    .updateTable('operations')
    .set({ progress: JSON.stringify(progress), updated_at: at })
    .where('id', '=', id)
    .where('state', '=', 'running')
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/** Finish a running operation (compare-and-set from 'running'). False when it had already finished. */
export async function finishOperation(
  db: Pick<Kysely<Database>, 'updateTable'>,
  id: string,
  state: Exclude<OperationStateColumn, 'running'>,
  at: string,
  outcome: { result?: Record<string, unknown>; error?: { code: string; message: string } } = {},
): Promise<boolean> {
  const r = await db
    .updateTable('operations')
    .set({
      state,
      updated_at: at,
      result: outcome.result === undefined ? null : JSON.stringify(outcome.result),
      error: outcome.error === undefined ? null : JSON.stringify({ code: outcome.error.code, message: outcome.error.message.slice(0, 1000) }),
    })
    .where('id', '=', id)
    .where('state', '=', 'running')
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/** Every running operation of a desktop ends (the lease moved under them: rollback, cancel). */
export async function failRunningOperations(db: Kysely<Database>, desktopId: string, at: string, error: { code: string; message: string }, except?: string): Promise<void> {
  let q = db
    .updateTable('operations')
    .set({ state: 'failed', updated_at: at, error: JSON.stringify(error) })
    .where('desktop_id', '=', desktopId)
    .where('state', '=', 'running');
  if (except !== undefined) q = q.where('id', '!=', except);
  await q.execute();
}

/** The newest operation of a desktop (optionally of one kind / device / finished only). */
export async function latestOperation(
  db: Kysely<Database>,
  desktopId: string,
  f: { kind?: OperationKindColumn; deviceId?: string; finished?: boolean } = {},
): Promise<OperationRow | undefined> {
  let q = db.selectFrom('operations').selectAll().where('desktop_id', '=', desktopId);
  if (f.kind !== undefined) q = q.where('kind', '=', f.kind);
  if (f.deviceId !== undefined) q = q.where('device_id', '=', f.deviceId);
  if (f.finished === true) q = q.where('state', '!=', 'running');
  return q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(1).executeTakeFirst();
}
