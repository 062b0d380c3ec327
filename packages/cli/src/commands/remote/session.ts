// What every remote command shares: loading the client state, building an ApiClient for the logged-in
// session, and turning errors into "what failed, why, what to do" (a `hint` the Output prints).

import type { Command } from 'commander';

import { ApiClient, ApiError, ClientError, type Session, StateStore } from '@roamdesk/client';

import { CliError, CliUsageError } from '../../errors.ts';
import type { CommandContext } from '../../main.ts';
import { quietHeartbeat } from '../device/heartbeat.ts';
import type { Output } from '../../output.ts';

export const LOGIN_HINT = 'roamdesk login URL --user NAME';

export interface Connected {
  client: ApiClient;
  session: Session;
  server: string;
}

/** Per-invocation helpers handed to a remote command. */
export class Remote {
  readonly store = new StateStore();
  /** Filled by `connect`, so error hints can name the server and user. */
  server: string | undefined;
  user: string | undefined;

  constructor(readonly out: Output) {}

  /** A client for the logged-in session, or CLIENT_ERR_NOT_LOGGED_IN with the command to run. */
  async connect(): Promise<Connected> {
    const state = await this.store.load();
    this.server = state.server ?? undefined;
    if (state.server === null || state.session === null) {
      const login = state.server === null ? LOGIN_HINT : `roamdesk login ${state.server} --user NAME`;
      throw new ClientError('CLIENT_ERR_NOT_LOGGED_IN', `not logged in: run \`${login}\``, {
        home: this.store.dir,
        hint: `log in first; the session is kept in ${this.store.file} (set ROAMDESK_HOME to use another directory)`,
      });
    }
    this.user = state.session.user;
    return { client: new ApiClient({ server: state.server, token: state.session.token }), session: state.session, server: state.server };
  }
}

/** Run a remote command: build its Output and Remote, and explain any error before main.ts prints it. */
export async function runRemote(ctx: CommandContext, cmd: Command, fn: (r: Remote, out: Output) => Promise<void>): Promise<void> {
  const out = ctx.output(cmd);
  const remote = new Remote(out);
  try {
    await fn(remote, out);
  } catch (err) {
    throw explain(err, remote);
  }
  // The command reached the server: renew this device's offline grants too.
  if (remote.server !== undefined) await quietHeartbeat();
}

/** Add a hint saying what to do to a server refusal; other errors pass through unchanged. */
export function explain(err: unknown, who: { server?: string | undefined; user?: string | undefined } = {}): unknown {
  if (!(err instanceof ApiError)) return err;
  const data: Record<string, unknown> = { ...err.data, status: err.status };
  if (typeof data['hint'] !== 'string') {
    const hint = hintFor(err, who);
    if (hint !== undefined) data['hint'] = hint;
  }
  return new CliError(err.code, err.message, data, { cause: err });
}

function hintFor(err: ApiError, who: { server?: string | undefined; user?: string | undefined }): string | undefined {
  const relogin = `log in again: roamdesk login ${who.server ?? 'URL'} --user ${who.user ?? 'NAME'}`;
  const d = err.data ?? {};
  switch (err.code) {
    case 'AUTH_REQUIRED':
    case 'TOKEN_EXPIRED':
      return relogin;
    case 'AUTH_INVALID':
      return who.user === undefined ? 'check the user name and password' : `your session is no longer valid; ${relogin}`;
    case 'FORBIDDEN':
      return `this needs an administrator account${who.user !== undefined ? ` (you are logged in as ${who.user})` : ''}`;
    case 'RATE_LIMITED':
      return typeof d['retryAfterSeconds'] === 'number' ? `wait ${d['retryAfterSeconds']} s and try again` : 'wait a while and try again';
    case 'NOT_FOUND':
      if (typeof d['resource'] === 'string' && d['resource'] !== 'desktop') return `run \`roamdesk admin ${d['resource']} list\` to see what exists`;
      return 'run `roamdesk desktops` to list the desktops you can use';
    case 'DESKTOP_RUNNING':
      return 'stop it first (roamdesk stop NAME)';
    case 'DESKTOP_NOT_RUNNING':
      return 'start it first (roamdesk start NAME)';
    case 'DESKTOP_BUSY':
      return 'it is starting or stopping; retry in a moment';
    case 'CHECKED_OUT':
      return 'it is checked out to a device; check it in first';
    case 'IMAGE_IN_USE':
      return 'remove the desktops that use it first (roamdesk admin desktop list)';
    case 'IMAGE_VERSION_UNCHANGED':
      return 'the latest version already is this disk: nothing to do (roamdesk admin image show NAME lists the versions)';
    case 'IMAGE_SIZE_MISMATCH':
      return 'a new version must have the virtual size of the image (roamdesk admin image show NAME); to change the size, import it as a new image';
    case 'INVALID_PATH':
      return 'the path is read on the server machine: give an absolute path there, or pass --upload to send a local file';
    case 'VALIDATION_FAILED':
      return validationHint(d);
    default:
      if (err.status >= 500) {
        return `the server failed; see its log${typeof d['requestId'] === 'string' ? ` (request ${d['requestId']})` : ''}`;
      }
      return undefined;
  }
}

function validationHint(d: Readonly<Record<string, unknown>>): string {
  const issues = Array.isArray(d['issues']) ? (d['issues'] as unknown[]) : [];
  const parts = issues.slice(0, 3).map((i) => {
    const rec = typeof i === 'object' && i !== null ? (i as Record<string, unknown>) : {};
    return `${typeof rec['path'] === 'string' && rec['path'] !== '' ? `${rec['path']}: ` : ''}${typeof rec['message'] === 'string' ? rec['message'] : 'invalid'}`;
  });
  const names = 'names are lower-case letters, digits, ".", "_" and "-", at most 63 characters';
  return parts.length > 0 ? `${parts.join('; ')} (${names})` : names;
}

/** Parse an integer option in [min, max]; anything else is a usage error (exit 2). */
export function parseIntOption(value: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new CliUsageError(`${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return n;
}
