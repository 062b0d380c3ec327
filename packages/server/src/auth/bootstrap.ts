// First start: create the `admin` user when the database has no users at all.

import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.ts';
import { countUsers, insertUser } from '../db/repositories/users.ts';
import type { Clock, Ids, PasswordHasher } from '../ports.ts';
import { generatePassword } from './secrets.ts';

export const INITIAL_ADMIN_NAME = 'admin';

export interface BootstrapResult {
  /** True when this call created the admin. */
  created: boolean;
  /** The generated password, when none was configured: the CLI prints it once; it is stored nowhere. */
  generatedPassword?: string;
}

export async function ensureInitialAdmin(
  deps: { db: Kysely<Database>; hasher: PasswordHasher; clock: Clock; ids: Ids },
  configuredPassword: string | undefined,
): Promise<BootstrapResult> {
  if ((await countUsers(deps.db)) > 0) return { created: false };
  const password = configuredPassword ?? generatePassword();
  await insertUser(deps.db, {
    id: deps.ids.uuid(),
    name: INITIAL_ADMIN_NAME,
    password_hash: await deps.hasher.hash(password),
    role: 'admin',
    created_at: new Date(deps.clock.now()).toISOString(),
    disabled: 0,
  });
  return configuredPassword === undefined ? { created: true, generatedPassword: password } : { created: true };
}
