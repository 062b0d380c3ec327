import type { Image, ImageVersion } from '@roamdesk/api';
import type { Kysely, Selectable } from 'kysely';
import type { Database, ImagesTable, ImageVersionsTable } from '../schema.ts';

export type ImageRow = Selectable<ImagesTable>;
export type ImageVersionRow = Selectable<ImageVersionsTable>;
export type ImageVersionView = ImageVersionRow & { created_by_name: string | null };

/** An image with its usage and its latest version (`version`, `top_object_id`: where new desktops start). */
export type ImageWithUsage = ImageRow & { usage: number; created_by_name: string | null; version: number; top_object_id: string };
/** …and every version, oldest first. */
export type ImageView = ImageWithUsage & { versions: ImageVersionView[] };

export function toApiImageVersion(row: ImageVersionView): ImageVersion {
  return {
    version: Number(row.version),
    topObjectId: row.top_object_id,
    diffSize: Number(row.diff_size),
    createdAt: row.created_at,
    createdBy: row.created_by_name,
  };
}

export function toApiImage(row: ImageView): Image {
  return {
    id: row.id,
    name: row.name,
    format: row.format,
    size: Number(row.size),
    virtualSize: Number(row.virtual_size),
    usage: Number(row.usage),
    createdAt: row.created_at,
    createdBy: row.created_by_name,
    version: row.version,
    topObjectId: row.top_object_id,
    versions: row.versions.map(toApiImageVersion),
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
      eb
        .selectFrom('image_versions')
        .select('image_versions.version')
        .whereRef('image_versions.image_id', '=', 'images.id')
        .orderBy('image_versions.version', 'desc')
        .limit(1)
        .as('latest_version'),
      eb
        .selectFrom('image_versions')
        .select('image_versions.top_object_id')
        .whereRef('image_versions.image_id', '=', 'images.id')
        .orderBy('image_versions.version', 'desc')
        .limit(1)
        .as('latest_top_object_id'),
    ]);
}

type SelectedImage = ImageRow & {
  created_by_name: string | null;
  usage: number | null;
  latest_version: number | null;
  latest_top_object_id: string | null;
};

/**
 * Every image has its version-1 row (insertImage writes it in the same transaction; migration 0002 backfilled
 * older images). A row written around the repository would have none: it then reads as version 1 = itself.
 */
function normalise(r: SelectedImage, versions: readonly ImageVersionView[]): ImageView {
  const { latest_version, latest_top_object_id, ...image } = r;
  return {
    ...image,
    usage: Number(r.usage ?? 0),
    version: latest_version === null ? 1 : Number(latest_version),
    top_object_id: latest_top_object_id ?? r.id,
    versions: versions.length > 0 ? [...versions] : [{
      image_id: r.id, version: 1, top_object_id: r.id, diff_size: Number(r.size), created_at: r.created_at, created_by: r.created_by,
      created_by_name: r.created_by_name,
    }],
  };
}

function selectVersions(db: Kysely<Database>) {
  return db
    .selectFrom('image_versions')
    .leftJoin('users', 'users.id', 'image_versions.created_by')
    .selectAll('image_versions')
    .select('users.name as created_by_name')
    .orderBy('image_versions.image_id')
    .orderBy('image_versions.version');
}

export async function listImages(db: Kysely<Database>): Promise<ImageView[]> {
  const rows = await selectWithUsage(db).orderBy('images.name').execute();
  const byImage = new Map<string, ImageVersionView[]>();
  for (const v of await selectVersions(db).execute()) {
    const list = byImage.get(v.image_id);
    if (list === undefined) byImage.set(v.image_id, [v]);
    else list.push(v);
  }
  return rows.map((r) => normalise(r, byImage.get(r.id) ?? []));
}

export async function findImageByName(db: Kysely<Database>, name: string): Promise<ImageView | undefined> {
  const r = await selectWithUsage(db).where('images.name', '=', name).executeTakeFirst();
  if (r === undefined) return undefined;
  return normalise(r, await selectVersions(db).where('image_versions.image_id', '=', r.id).execute());
}

export async function findImageById(db: Kysely<Database>, id: string): Promise<ImageRow | undefined> {
  return db.selectFrom('images').selectAll().where('id', '=', id).executeTakeFirst();
}

/** The image row and its version-1 row (the image is its own top object), in one transaction. */
export async function insertImage(db: Kysely<Database>, row: ImageRow): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx.insertInto('images').values(row).execute();
    await trx
      .insertInto('image_versions')
      .values({ image_id: row.id, version: 1, top_object_id: row.id, diff_size: row.size, created_at: row.created_at, created_by: row.created_by })
      .execute();
  });
}

/**
 * A new version row. The primary key (image_id, version) makes two publishers racing for the same number
 * collide (unique violation) instead of both winning; a deleted image fails the foreign key.
 */
export async function insertImageVersion(db: Kysely<Database>, row: ImageVersionRow): Promise<void> {
  await db.insertInto('image_versions').values(row).execute();
}

/** The top objects of every version of an image, newest first (the order in which they can be removed). */
export async function versionTopObjects(db: Kysely<Database>, imageId: string): Promise<string[]> {
  const rows = await db
    .selectFrom('image_versions')
    .select('top_object_id')
    .where('image_id', '=', imageId)
    .orderBy('version', 'desc')
    .execute();
  return rows.map((r) => r.top_object_id);
}

/** Deletes the image and (foreign key cascade) its versions. */
export async function deleteImage(db: Kysely<Database>, id: string): Promise<boolean> {
  const r = await db.deleteFrom('images').where('id', '=', id).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

/**
 * True when no image row, no image version and no desktop chain refers to this object: only then may the store
 * drop it.
 */
export async function isObjectUnreferenced(db: Kysely<Database>, objectId: string): Promise<boolean> {
  const image = await db.selectFrom('images').select('id').where('id', '=', objectId).executeTakeFirst();
  if (image !== undefined) return false;
  const version = await db.selectFrom('image_versions').select('image_id').where('top_object_id', '=', objectId).executeTakeFirst();
  if (version !== undefined) return false;
  const desktop = await db
    .selectFrom('desktops')
    .select('id')
    .where((eb) => eb.or([eb('image_id', '=', objectId), eb('top_object_id', '=', objectId)]))
    .executeTakeFirst();
  return desktop === undefined;
}
