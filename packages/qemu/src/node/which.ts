/** Finds an executable as the shell would: a path with a slash is taken as is, else PATH is searched. */
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

export async function findExecutable(name: string): Promise<string | null> {
  const candidates = name.includes('/')
    ? [name]
    : (process.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter).filter(Boolean).map((dir) => join(dir, name));
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next one
    }
  }
  return null;
}
