import type { Kysely } from 'kysely';
import type { Database } from '../schema.ts';

/**
 * The top objects whose chains a user may read: every image version (images are a shared catalog), the
 * current state of the user's own desktops, and the objects the user uploaded. Admins may read everything and do not need this.
 */
export async function readableTops(db: Kysely<Database>, userId: string): Promise<string[]> {
  const versions = await db.selectFrom('image_versions').select('top_object_id').execute();
  const desktops = await db.selectFrom('desktops').select('top_object_id').where('owner_id', '=', userId).execute();
  const uploads = await db.selectFrom('uploaded_objects').select('object_id as top_object_id').where('user_id', '=', userId).execute();
  return [...new Set([...versions, ...desktops, ...uploads].map((r) => r.top_object_id))];
}

/** Records that `userId` uploaded `objectId` (idempotent). */
export async function recordUpload(db: Kysely<Database>, objectId: string, userId: string, at: string): Promise<void> {
  await db.insertInto('uploaded_objects').values({ object_id: objectId, user_id: userId, created_at: at })
    .onConflict((oc) => oc.columns(['object_id', 'user_id']).doNothing()).execute();
}
