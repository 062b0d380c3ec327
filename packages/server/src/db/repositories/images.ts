import type { Image } from '@roamdesk/api';
import type { Kysely, Selectable } from 'kysely';
import type { Database, ImagesTable } from '../schema.ts';

export type ImageRow = Selectable<ImagesTable>;
export type ImageWithUsage = ImageRow & { usage: number; created_by_name: string | null };

export function toApiImage(row: ImageWithUsage): Image {
  return {
    id: row.id,
    name: row.name,
    format: row.format,
    size: Number(row.size),
    virtualSize: Number(row.virtual_size),
    usage: Number(row.usage),
    createdAt: row.created_at,
    createdBy: row.created_by_name,
  };
}

function selectWithUsage(db: Kysely<Database>) {
  return db
    .selectFrom('images')
    .leftJoin('users', 'users.id', 'images.created_by')
    .selectAll('images')
    .select((eb) => [
      'users.name as created_by_name',
      eb
        .selectFrom('desktops')
        .select((e) => e.fn.countAll<number>().as('n'))
        .whereRef('desktops.image_id', '=', 'images.id')
        .as('usage'),
    ]);
}

function normalise(r: Omit<ImageWithUsage, 'usage'> & { usage: number | null }): ImageWithUsage {
  return { ...r, usage: Number(r.usage ?? 0) };
}

export async function listImages(db: Kysely<Database>): Promise<ImageWithUsage[]> {
  const rows = await selectWithUsage(db).orderBy('images.name').execute();
  return rows.map(normalise);
}

export async function findImageByName(db: Kysely<Database>, name: string): Promise<ImageWithUsage | undefined> {
  const r = await selectWithUsage(db).where('images.name', '=', name).executeTakeFirst();
  return r === undefined ? undefined : normalise(r);
}

export async function findImageById(db: Kysely<Database>, id: string): Promise<ImageRow | undefined> {
  return db.selectFrom('images').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function insertImage(db: Kysely<Database>, row: ImageRow): Promise<void> {
  await db.insertInto('images').values(row).execute();
}

export async function deleteImage(db: Kysely<Database>, id: string): Promise<boolean> {
  const r = await db.deleteFrom('images').where('id', '=', id).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

/** True when no image row and no desktop chain refers to this object: only then may the store drop it. */
export async function isObjectUnreferenced(db: Kysely<Database>, objectId: string): Promise<boolean> {
  const image = await db.selectFrom('images').select('id').where('id', '=', objectId).executeTakeFirst();
  if (image !== undefined) return false;
  const desktop = await db
    .selectFrom('desktops')
    .select('id')
    .where((eb) => eb.or([eb('image_id', '=', objectId), eb('top_object_id', '=', objectId)]))
    .executeTakeFirst();
  return desktop === undefined;
}
