// Client state in ROAMDESK_HOME: which server this machine talks to and the bearer token after login.
//
// One JSON file, `state.json`, mode 0600 inside a 0700 directory, because the token is a credential.
// It is replaced atomically so a crash or a concurrent `roamdesk` never leaves half a file behind.

import { chmod, mkdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';

import { ClientError } from './errors.ts';
import { writeFileAtomic } from './fsutil.ts';

export const STATE_FILE = 'state.json';
export const STATE_VERSION = 1;
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;

/** The session of a logged-in user. */
export interface Session {
  /** The user name logged in as. */
  user: string;
  role: 'admin' | 'user';
  /** Bearer token (`rdt_…`). */
  token: string;
  /** When the server will stop accepting the token (ISO-8601). */
  expiresAt: string;
}

export interface ClientState {
  version: typeof STATE_VERSION;
  /** Base URL of the server, e.g. `http://127.0.0.1:8760` (no trailing slash). */
  server: string | null;
  session: Session | null;
}

export const EMPTY_STATE: ClientState = { version: STATE_VERSION, server: null, session: null };

type Env = Readonly<Record<string, string | undefined>>;

/**
 * The client state directory: `$ROAMDESK_HOME`, else `$XDG_CONFIG_HOME/roamdesk`, else `~/.config/roamdesk`.
 * Relative XDG values are ignored, as the XDG spec says.
 */
export function resolveHome(env: Env = process.env): string {
  const home = env['ROAMDESK_HOME'];
  if (home !== undefined && home !== '') return home;
  const xdg = env['XDG_CONFIG_HOME'];
  if (xdg !== undefined && isAbsolute(xdg)) return join(xdg, 'roamdesk');
  return join(homedir(), '.config', 'roamdesk');
}

/** Reads and writes the state file of one home directory. */
export class StateStore {
  readonly dir: string;
  readonly file: string;

  constructor(dir: string = resolveHome()) {
    this.dir = dir;
    this.file = join(dir, STATE_FILE);
  }

  /** The current state; a missing file is the empty state. */
  async load(): Promise<ClientState> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ...EMPTY_STATE };
      throw new ClientError('CLIENT_ERR_STATE_INVALID', `cannot read the client state ${this.file}: ${(err as Error).message}`, {
        file: this.file,
        hint: 'check the permissions of the file, or set ROAMDESK_HOME to another directory',
      }, { cause: err });
    }
    return parseState(text, this.file);
  }

  async save(state: ClientState): Promise<void> {
    try {
      await mkdir(this.dir, { recursive: true, mode: DIR_MODE });
      // mkdir leaves an existing directory's mode alone; only tighten one we may have created earlier.
      await chmod(this.dir, DIR_MODE).catch(() => undefined);
      await writeFileAtomic(this.file, `${JSON.stringify(state, null, 2)}\n`, FILE_MODE);
    } catch (err) {
      throw new ClientError('CLIENT_ERR_WRITE_FAILED', `cannot write the client state ${this.file}: ${(err as Error).message}`, {
        file: this.file,
        hint: 'check that the directory is writable, or set ROAMDESK_HOME to another directory',
      }, { cause: err });
    }
  }

  /** Apply `change` to the stored state and save the result. */
  async update(change: (s: ClientState) => ClientState): Promise<ClientState> {
    const next = change(await this.load());
    await this.save(next);
    return next;
  }
}

function parseState(text: string, file: string): ClientState {
  const invalid = (why: string): ClientError =>
    new ClientError('CLIENT_ERR_STATE_INVALID', `the client state ${file} is invalid: ${why}`, {
      file,
      hint: `delete it and log in again (roamdesk login URL --user NAME)`,
    });
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw invalid('not JSON');
  }
  if (!isRecord(raw) || raw['version'] !== STATE_VERSION) throw invalid(`expected {"version": ${STATE_VERSION}, …}`);
  const server = raw['server'];
  if (server !== null && typeof server !== 'string') throw invalid('"server" must be a string or null');
  const session = raw['session'];
  if (session === null || session === undefined) return { version: STATE_VERSION, server, session: null };
  if (
    !isRecord(session) ||
    typeof session['user'] !== 'string' ||
    (session['role'] !== 'admin' && session['role'] !== 'user') ||
    typeof session['token'] !== 'string' ||
    typeof session['expiresAt'] !== 'string'
  ) {
    throw invalid('"session" must have user, role, token and expiresAt');
  }
  return {
    version: STATE_VERSION,
    server,
    session: { user: session['user'], role: session['role'], token: session['token'], expiresAt: session['expiresAt'] },
  };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
