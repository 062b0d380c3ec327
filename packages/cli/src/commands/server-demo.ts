/**
 * `roamdesk server --demo`: makes the tiny guest ready to use on a running server — image `demo`, user
 * `demo`, desktop `demo` showing the login-like screen (workload `idle`). It goes through the server's own
 * HTTP API (in process, with a short-lived admin session), so the demo gets the same validation and event
 * log as anything an administrator does. Idempotent: what exists is left as it is.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { ServerHandle } from '@roamdesk/server';

import { CliError } from '../errors.ts';
import { findGuest, guestAppend } from '../guest.ts';

export const DEMO_NAME = 'demo';

export interface DemoReady {
  image: { name: string; created: boolean };
  /** `password`: set at the first start (or from ROAMDESK_DEMO_PASSWORD), and read back from `passwordFile` later. */
  user: { name: string; created: boolean; password?: string; passwordFile?: string };
  desktop: { name: string; created: boolean };
}

interface Reply {
  statusCode: number;
  body: string;
}

export async function provisionDemo(handle: ServerHandle, env: Readonly<Record<string, string | undefined>>): Promise<DemoReady> {
  const guest = await findGuest();
  const session = await handle.adminSession();
  const call = async (method: 'GET' | 'POST', path: string, body?: Record<string, unknown>): Promise<Reply> => {
    const r = await handle.app.inject({
      method,
      url: `/api/v1${path}`,
      headers: { authorization: `Bearer ${session.token}` },
      ...(body !== undefined ? { payload: body } : {}),
    });
    return { statusCode: r.statusCode, body: r.body };
  };
  /** Create `path` with `body` unless `GET existing` finds it. */
  const ensure = async (what: string, existing: string, path: string, body: Record<string, unknown>): Promise<boolean> => {
    const found = await call('GET', existing);
    if (found.statusCode === 200) return false;
    if (found.statusCode !== 404) throw demoFailed(what, found);
    const created = await call('POST', path, body);
    if (created.statusCode !== 201) throw demoFailed(what, created);
    return true;
  };
  try {
    const imageCreated = await ensure('image', `/images/${DEMO_NAME}`, '/images', { name: DEMO_NAME, path: guest.disk, format: 'qcow2' });
    const password = env['ROAMDESK_DEMO_PASSWORD'] !== undefined && env['ROAMDESK_DEMO_PASSWORD'] !== ''
      ? env['ROAMDESK_DEMO_PASSWORD']
      : randomBytes(12).toString('base64url');
    const userCreated = await ensure('user', `/users/${DEMO_NAME}`, '/users', { name: DEMO_NAME, password, role: 'user' });
    const desktopCreated = await ensure('desktop', `/desktops/${DEMO_NAME}`, '/desktops', {
      name: DEMO_NAME,
      image: DEMO_NAME,
      owner: DEMO_NAME,
      memoryMiB: 256,
      cpus: 1,
      kernel: guest.vmlinuz,
      initrd: guest.initrd,
      // idle: the guest draws its login-like screen on the VGA console and waits for the power button.
      append: guestAppend(guest, 'idle'),
    });
    // A generated password is kept (owner-only, next to the database and the grant key) so that every later start
    // can show it again: a demo whose password scrolled away at the first start is a dead end for a new user.
    const passwordFile = join(handle.config.dataDir, 'demo-password');
    const fromEnv = env['ROAMDESK_DEMO_PASSWORD'] !== undefined && env['ROAMDESK_DEMO_PASSWORD'] !== '';
    if (userCreated && !fromEnv) await writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
    const known = userCreated || fromEnv ? password : (await readFile(passwordFile, 'utf8').catch(() => '')).trim();
    return {
      image: { name: DEMO_NAME, created: imageCreated },
      user: known !== ''
        ? { name: DEMO_NAME, created: userCreated, password: known, ...(fromEnv ? {} : { passwordFile }) }
        : { name: DEMO_NAME, created: userCreated },
      desktop: { name: DEMO_NAME, created: desktopCreated },
    };
  } finally {
    await session.revoke();
  }
}

function demoFailed(what: string, r: Reply): CliError {
  let message = r.body.slice(0, 500);
  try {
    const parsed = JSON.parse(r.body) as { error?: { code?: string; message?: string } };
    message = `${parsed.error?.code ?? r.statusCode}: ${parsed.error?.message ?? ''}`;
  } catch {
    // not JSON: show it raw
  }
  return new CliError('CLI_DEMO_FAILED', `could not set up the demo ${what} (HTTP ${r.statusCode}: ${message})`, { status: r.statusCode });
}

/** How to use the demo, printed once the server is ready. */
export function demoInstructions(url: string, ready: DemoReady): string {
  const pw = ready.user.password === undefined
    ? 'password as printed at its first start (or set ROAMDESK_DEMO_PASSWORD before the first start)'
    : ready.user.created || ready.user.passwordFile === undefined
      ? `password ${ready.user.password}`
      : `password ${ready.user.password}, as set at its first start and kept in ${ready.user.passwordFile}`;
  return [
    '',
    `Demo ready: desktop "${ready.desktop.name}" (the tiny guest, idle screen), owned by user "${ready.user.name}".`,
    `  browser:  ${url}/   (user demo, ${pw})`,
    `  CLI:      npx roamdesk login ${url} --user demo`,
    '            npx roamdesk start demo',
    '            npx roamdesk console demo',
    '',
  ].join('\n');
}
