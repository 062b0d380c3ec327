import type { Kysely } from 'kysely';
import type { Database } from '../schema.ts';

/**
 * The top objects whose chains a user may read: every image version (images are a shared catalog) and the
 * current state of the user's own desktops. Admins may read everything and do not need this.
 */
export async function readableTops(db: Kysely<Database>, userId: string): Promise<string[]> {
  const versions = await db.selectFrom('image_versions').select('top_object_id').execute();
  const desktops = await db.selectFrom('desktops').select('top_object_id').where('owner_id', '=', userId).execute();
  return [...new Set([...versions, ...desktops].map((r) => r.top_object_id))];
}
