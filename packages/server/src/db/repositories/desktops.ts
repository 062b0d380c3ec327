import type { Desktop } from '@roamdesk/api';
import type { Kysely, Selectable } from 'kysely';
import type { Database, DesktopStateColumn, DesktopsTable } from '../schema.ts';

export type DesktopRow = Selectable<DesktopsTable>;
export type DesktopView = DesktopRow & { owner_name: string; image_name: string };

export function toApiDesktop(row: DesktopView): Desktop {
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
    location: row.location,
    leaseGeneration: Number(row.lease_generation),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

function selectView(db: Kysely<Database>) {
  return db
    .selectFrom('desktops')
    .innerJoin('users', 'users.id', 'desktops.owner_id')
    .innerJoin('images', 'images.id', 'desktops.image_id')
    .selectAll('desktops')
    .select(['users.name as owner_name', 'images.name as image_name']);
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
