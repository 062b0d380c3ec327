// The device's local store and what the client remembers about desktops, all under ROAMDESK_HOME:
//
//   store/                 a @roamdesk/store Store: images and layers downloaded from the server (and, with
//                          check-out, the device's own layers); interrupted downloads wait in store/incoming/
//   store.lock             held by the one roamdesk process that writes the store (a prefetch): {pid, purpose, since}
//   desktops/<name>.json   the last chain read from the server for a desktop (so `status` can answer offline)
//
// Paths are built only from validated desktop names (`isValidName`), never from raw input. @roamdesk/store is
// loaded only when a store is opened: every other command starts faster without it.

import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { isObjectId, isValidName } from '@roamdesk/api/core';
import type { StoredObject } from '@roamdesk/api';
import type { Store } from '@roamdesk/store';

import { ClientError } from './errors.ts';
import { writeFileAtomic } from './fsutil.ts';

export const STORE_DIR = 'store';
export const STORE_LOCK_FILE = 'store.lock';
export const DESKTOPS_DIR = 'desktops';
const DIR_MODE = 0o700;
/** A lock file younger than this whose content cannot be read yet is being created, not stale. */
const LOCK_CREATE_GRACE_MS = 5000;

export function localStorePath(home: string): string {
  return join(home, STORE_DIR);
}

/** Opens (creating if needed) the local store in `home`. One process writes it at a time: see lockLocalStore. */
export async function localStore(home: string): Promise<Store> {
  await mkdir(home, { recursive: true, mode: DIR_MODE });
  const { Store } = await import('@roamdesk/store');
  return Store.open(localStorePath(home));
}

/**
 * The local store if one was ever created in `home`, else null (nothing is created). Opened as a reader: a
 * prefetch or check-out in another process may be writing it.
 */
export async function existingLocalStore(home: string): Promise<Store | null> {
  const exists = await stat(localStorePath(home)).then((s) => s.isDirectory(), () => false);
  if (!exists) return null;
  const { Store } = await import('@roamdesk/store');
  return Store.open(localStorePath(home), { reader: true });
}

export interface LocalStoreLock {
  readonly file: string;
  release(): Promise<void>;
}

interface LockHolder {
  pid: number;
  purpose: string;
  since: string;
}

/**
 * Takes the local store's lock for `purpose` (e.g. `prefetch work`), or fails with CLIENT_ERR_BUSY naming the
 * process that holds it. A lock left by a process that no longer runs (kill -9, power loss) is taken over.
 */
export async function lockLocalStore(home: string, purpose: string): Promise<LocalStoreLock> {
  const file = join(home, STORE_LOCK_FILE);
  await mkdir(home, { recursive: true, mode: DIR_MODE });
  for (let attempt = 0; ; attempt++) {
    try {
      const fh = await open(file, 'wx', 0o600);
      try {
        await fh.writeFile(JSON.stringify({ pid: process.pid, purpose, since: new Date().toISOString() } satisfies LockHolder));
      } finally {
        await fh.close();
      }
      return { file, release: () => rm(file, { force: true }) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new ClientError('CLIENT_ERR_WRITE_FAILED', `cannot create ${file}: ${(err as Error).message}`, { file, hint: 'check that ROAMDESK_HOME is writable' }, { cause: err });
      }
      const holder = await readHolder(file);
      if (attempt > 0 || holder === 'busy' || (holder !== null && isAlive(holder.pid))) {
        const who = holder !== null && holder !== 'busy' ? `roamdesk ${holder.purpose} (pid ${holder.pid}, since ${holder.since})` : 'another roamdesk process';
        throw new ClientError('CLIENT_ERR_BUSY', `the local store is in use by ${who}`, {
          file,
          ...(holder !== null && holder !== 'busy' ? { pid: holder.pid, purpose: holder.purpose } : {}),
          hint: `wait for it to finish or stop it; if no roamdesk is running, delete ${file}`,
        });
      }
      await rm(file, { force: true }); // its process is gone
    }
  }
}

async function readHolder(file: string): Promise<LockHolder | 'busy' | null> {
  try {
    const [text, st] = await Promise.all([readFile(file, 'utf8'), stat(file)]);
    try {
      const v = JSON.parse(text) as Partial<LockHolder>;
      if (typeof v.pid === 'number' && Number.isSafeInteger(v.pid) && v.pid > 0) {
        return { pid: v.pid, purpose: typeof v.purpose === 'string' ? v.purpose : 'unknown', since: typeof v.since === 'string' ? v.since : '?' };
      }
    } catch {
      // unreadable content: being written right now, or garbage left by a crash
    }
    return Date.now() - st.mtimeMs < LOCK_CREATE_GRACE_MS ? 'busy' : null;
  } catch {
    return null; // removed meanwhile
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** What the client last read from the server about a desktop's chain. */
export interface KnownChain {
  version: 1;
  /** The server it came from (a chain of another server's desktop of the same name is not this one). */
  server: string;
  desktop: string;
  /** Who held the lease then: "server" or a device. */
  location: string;
  objects: StoredObject[];
  bytes: number;
  /** When it was read (ISO-8601). */
  asOf: string;
}

function knownChainFile(home: string, desktop: string): string | null {
  return isValidName(desktop) ? join(home, DESKTOPS_DIR, `${desktop}.json`) : null;
}

/** Records a chain read from the server (mode 0600, replaced atomically). Names that are not desktop names are skipped. */
export async function saveKnownChain(home: string, chain: KnownChain): Promise<void> {
  const file = knownChainFile(home, chain.desktop);
  if (file === null) return;
  await mkdir(join(home, DESKTOPS_DIR), { recursive: true, mode: DIR_MODE });
  await writeFileAtomic(file, `${JSON.stringify(chain, null, 2)}\n`, 0o600);
}

/** The last chain recorded for `desktop` from `server`, or null (none, another server's, or unreadable). */
export async function loadKnownChain(home: string, desktop: string, server: string): Promise<KnownChain | null> {
  const file = knownChainFile(home, desktop);
  if (file === null) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch {
    return null;
  }
  if (typeof raw !== 'object' || raw === null) return null;
  const c = raw as Partial<Record<keyof KnownChain, unknown>>;
  if (c.version !== 1 || c.server !== server || c.desktop !== desktop || typeof c.location !== 'string' || typeof c.asOf !== 'string') return null;
  if (!Array.isArray(c.objects) || !c.objects.every(isStoredObject)) return null;
  const objects = c.objects;
  return { version: 1, server, desktop, location: c.location, objects, bytes: objects.reduce((n, o) => n + o.size, 0), asOf: c.asOf };
}

function isStoredObject(v: unknown): v is StoredObject {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  const size = (n: unknown): boolean => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
  return isObjectId(o['id']) && (o['kind'] === 'image' || o['kind'] === 'layer') && (o['parent'] === null || isObjectId(o['parent']))
    && size(o['size']) && size(o['virtualSize']);
}
