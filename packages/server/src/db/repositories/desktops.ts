import type { Desktop, DesktopPause, Lease } from '@roamdesk/api';
import type { Kysely, Selectable, Updateable } from 'kysely';
import type { Database, DesktopStateColumn, DesktopsTable, LeaseStateColumn } from '../schema.ts';

export type DesktopRow = Selectable<DesktopsTable>;
export type DesktopView = DesktopRow & { owner_name: string; image_name: string; lease_device_name: string | null };

export function toApiLease(row: DesktopView): Lease {
  return {
    generation: Number(row.lease_generation),
    deviceId: row.lease_device_id,
    deviceName: row.lease_device_name,
    since: row.lease_since ?? row.created_at,
    state: row.lease_state,
    replicatedTopObjectId: row.replicated_top_object_id ?? row.top_object_id,
    replicatedAt: row.replicated_at,
  };
}

/** `paused`: what the runtime says of a running VM (not stored: a pause lasts as long as the VM). */
export function toApiDesktop(row: DesktopView, paused: DesktopPause | null = null): Desktop {
  return {
    id: row.id,
    name: row.name,
    owner: row.owner_name,
    image: row.image_name,
    memoryMiB: row.memory_mib,
    cpus: row.cpus,
    kernel: row.kernel,
    initrd: row.initrd,
    append: row.append,
    state: row.state,
    ...(paused !== null && row.state === 'running' ? { paused } : {}),
    location: row.location,
    leaseGeneration: Number(row.lease_generation),
    lease: toApiLease(row),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

function selectView(db: Kysely<Database>) {
  return db
    .selectFrom('desktops')
    .innerJoin('users', 'users.id', 'desktops.owner_id')
    .innerJoin('images', 'images.id', 'desktops.image_id')
    .leftJoin('devices', 'devices.id', 'desktops.lease_device_id')
    .selectAll('desktops')
    .select(['users.name as owner_name', 'images.name as image_name', 'devices.name as lease_device_name']);
}

/** All desktops, or only those of one owner. */
export async function listDesktops(db: Kysely<Database>, filter: { ownerId?: string } = {}): Promise<DesktopView[]> {
  let q = selectView(db);
  if (filter.ownerId !== undefined) q = q.where('desktops.owner_id', '=', filter.ownerId);
  return q.orderBy('desktops.name').execute();
}

export async function findDesktopByName(db: Kysely<Database>, name: string): Promise<DesktopView | undefined> {
  return selectView(db).where('desktops.name', '=', name).executeTakeFirst();
}

export async function findDesktopById(db: Kysely<Database>, id: string): Promise<DesktopView | undefined> {
  return selectView(db).where('desktops.id', '=', id).executeTakeFirst();
}

export async function insertDesktop(db: Kysely<Database>, row: DesktopRow): Promise<void> {
  await db.insertInto('desktops').values(row).execute();
}

/**
 * Compare-and-set the state: moves to `to` only from one of `from`, and only while the server holds the
 * lease. Two concurrent starts cannot both win: exactly one UPDATE matches.
 */
export async function transitionState(
  db: Kysely<Database>,
  id: string,
  from: readonly DesktopStateColumn[],
  to: DesktopStateColumn,
  at: string,
): Promise<boolean> {
  const r = await db
    .updateTable('desktops')
    .set({ state: to, updated_at: at })
    .where('id', '=', id)
    .where('state', 'in', from)
    .where('location', '=', 'server')
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

export async function setState(db: Kysely<Database>, id: string, to: DesktopStateColumn, at: string): Promise<void> {
  await db.updateTable('desktops').set({ state: to, updated_at: at }).where('id', '=', id).execute();
}

/** Record the desktop's writable overlay (relative to the data dir) once it exists. */
export async function setOverlayPath(db: Kysely<Database>, id: string, overlayPath: string | null, at: string): Promise<void> {
  await db.updateTable('desktops').set({ overlay_path: overlayPath, updated_at: at }).where('id', '=', id).execute();
}

/** Delete only a desktop at rest on the server, so a concurrent start cannot lose its row. */
export async function deleteDesktopAtRest(db: Kysely<Database>, id: string): Promise<boolean> {
  const r = await db
    .deleteFrom('desktops')
    .where('id', '=', id)
    .where('state', 'in', ['stopped', 'error'])
    .where('location', '=', 'server')
    .executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

/** What a lease move expects to find: the generation and state it was decided on (and more, when given). */
export interface LeaseExpectation {
  generation: number;
  state: LeaseStateColumn;
  deviceId?: string | null;
  /** The replicated top the move was validated against (replicate, check-in). */
  replicatedTop?: string | null;
  /** Only when the server VM is in one of these states. */
  desktopStates?: readonly DesktopStateColumn[];
  /** Only when the desktop has no writable overlay on the server (it was sealed at check-out). */
  noOverlay?: boolean;
  /** Only on this top object (a check-out records it as the replicated top; compaction may move it). */
  top?: string;
}

/**
 * Move the lease: ONE compare-and-set UPDATE on (id, generation, lease state, …), like transitionState. Of two
 * racing moves exactly one matches; the caller of the other reloads the row to say why it lost.
 */
export async function moveLease(
  db: Pick<Kysely<Database>, 'updateTable'>,
  id: string,
  expect: LeaseExpectation,
  set: Updateable<DesktopsTable>,
): Promise<boolean> {
  let q = db
    .updateTable('desktops')
    .set(set)
    .where('id', '=', id)
    .where('lease_generation', '=', expect.generation)
    .where('lease_state', '=', expect.state);
  if (expect.deviceId !== undefined) {
    q = expect.deviceId === null ? q.where('lease_device_id', 'is', null) : q.where('lease_device_id', '=', expect.deviceId);
  }
  if (expect.replicatedTop !== undefined) {
    q = expect.replicatedTop === null ? q.where('replicated_top_object_id', 'is', null) : q.where('replicated_top_object_id', '=', expect.replicatedTop);
  }
  if (expect.desktopStates !== undefined) q = q.where('state', 'in', expect.desktopStates);
  if (expect.noOverlay === true) q = q.where('overlay_path', 'is', null);
  if (expect.top !== undefined) q = q.where('top_object_id', '=', expect.top);
  const r = await q.executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/**
 * Check-out sealed the overlay at `overlayPath` into `layerId` (whose parent is the old top): the chain moves up
 * by one layer, and that layer is the state the server holds a copy of (what the device receives). Conditional
 * on the overlay still being the recorded one; the lease cannot move meanwhile (services/leases.ts refuses
 * cancel and rollback while a check-out prepares).
 */
export async function recordSealedOverlay(db: Kysely<Database>, id: string, overlayPath: string, layerId: string, at: string): Promise<boolean> {
  const r = await db
    .updateTable('desktops')
    .set({ top_object_id: layerId, overlay_path: null, replicated_top_object_id: layerId, updated_at: at })
    .where('id', '=', id)
    .where('overlay_path', '=', overlayPath)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/**
 * Chain compaction (services/compaction.ts) moved the desktop's top to an equivalent shorter chain: only while
 * the server holds the lease at the same generation, on the same top, with no overlay (nothing runs on it).
 */
export async function replaceTopAtRest(db: Kysely<Database>, id: string, expect: { top: string; generation: number }, top: string, at: string): Promise<boolean> {
  const r = await db
    .updateTable('desktops')
    .set({ top_object_id: top, updated_at: at })
    .where('id', '=', id)
    .where('top_object_id', '=', expect.top)
    .where('lease_generation', '=', expect.generation)
    .where('lease_state', '=', 'server')
    .where('overlay_path', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}
