// Authorization: who may see which desktop. One function, used by every desktop route, so no route can
// forget the check.

import type { Kysely } from 'kysely';
import type { Caller } from '../auth/authenticate.ts';
import { type DesktopView, findDesktopByName } from '../db/repositories/desktops.ts';
import type { Database } from '../db/schema.ts';
import { notFound } from '../errors.ts';

/**
 * The desktop of this name if the caller may act on it (admins: any; users: their own). Someone else's
 * desktop fails exactly like a missing one (same error, same message, one query either way), so a user
 * cannot probe which desktop names exist.
 */
export async function visibleDesktop(db: Kysely<Database>, caller: Caller, name: string): Promise<DesktopView> {
  const desktop = await findDesktopByName(db, name);
  if (desktop === undefined || (caller.role !== 'admin' && desktop.owner_id !== caller.userId)) {
    throw notFound('desktop', name);
  }
  return desktop;
}
