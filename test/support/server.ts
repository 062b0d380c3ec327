/**
 * A real Roamdesk server (real store, real QEMU runtime) in a temp data dir, for end-to-end tests, and the
 * helpers to drive it through its HTTP API and to kill exactly the QEMUs that belong to that data dir.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import type { GuestBuild } from '@roamdesk/cli';
import { isRunning } from '@roamdesk/qemu';
import { startServer, type ServerHandle } from '@roamdesk/server';

import { BIN } from './cli.ts';

export const ADMIN = 'admin-password-e2e';

export interface DesktopBody {
  desktop: { id: string; name: string; state: string };
}

/** `listen`: to come back on the same address after a restart; `lease`: the lease policy; `tls`: serve HTTPS (server config). */
export async function boot(dataDir: string, opts: { listen?: string; lease?: Record<string, unknown>; tls?: { certFile: string; keyFile: string } } = {}): Promise<ServerHandle> {
  return startServer(
    {
      dataDir, listen: opts.listen ?? '127.0.0.1:0', adminPassword: ADMIN, logLevel: 'silent', stopTimeoutMs: 30_000, passwordHash: { memoryKiB: 256, iterations: 1 },
      ...(opts.lease !== undefined ? { lease: opts.lease } : {}),
      ...(opts.tls !== undefined ? { tls: opts.tls } : {}),
    },
    { handleSignals: false },
  );
}

export async function api(h: ServerHandle, method: 'GET' | 'POST' | 'DELETE', url: string, token: string | null, body?: unknown) {
  return h.app.inject({
    method,
    url: `/api/v1${url}`,
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
    ...(body !== undefined ? { payload: body as Record<string, unknown> } : {}),
  });
}

export async function login(h: ServerHandle): Promise<string> {
  const r = await api(h, 'POST', '/auth/login', null, { user: 'admin', password: ADMIN });
  assert.equal(r.statusCode, 200, r.body);
  return r.json<{ token: string }>().token;
}

export async function createDesktop(h: ServerHandle, token: string, guest: GuestBuild, name: string, append: string): Promise<string> {
  const r = await api(h, 'POST', '/desktops', token, { name, image: 'guest', owner: 'admin', memoryMiB: 256, cpus: 1, kernel: guest.vmlinuz, initrd: guest.initrd, append });
  assert.equal(r.statusCode, 201, r.body);
  return r.json<DesktopBody>().desktop.id;
}

export async function state(h: ServerHandle, token: string, name: string): Promise<string> {
  const r = await api(h, 'GET', `/desktops/${name}`, token);
  assert.equal(r.statusCode, 200, r.body);
  return r.json<DesktopBody>().desktop.state;
}

export async function serial(h: ServerHandle, token: string, name: string): Promise<string> {
  const r = await api(h, 'GET', `/desktops/${name}/log?tail=1000000`, token);
  assert.equal(r.statusCode, 200, r.body);
  return r.body;
}

export async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** QEMUs serving a QMP socket in this data dir's vms/ (ours by construction). */
export async function ourQemus(dataDir: string): Promise<number[]> {
  const marker = `unix:${join(dataDir, 'vms')}/`;
  const out: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const argv = await readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '');
    if (argv.startsWith('qemu-system-') || argv.includes('/qemu-system-')) {
      if (argv.split('\0').some((a) => a.startsWith(marker)) && (await isRunning(Number(e)))) out.push(Number(e));
    }
  }
  return out;
}

export async function killOurs(dataDir: string): Promise<void> {
  for (const pid of await ourQemus(dataDir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  await until('our QEMUs to exit', async () => ((await ourQemus(dataDir)).length === 0 ? true : undefined), 10_000);
}

export async function pidOf(dataDir: string, id: string): Promise<number> {
  return Number((await readFile(join(dataDir, 'vms', id, 'qemu.pid'), 'utf8')).trim());
}

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}


/**
 * `roamdesk server ARGS --json` as its own process (so a test can signal or kill it); resolves with the URL it
 * listens on once it says so, and `log()` reads its log (stderr) so far. The caller stops it.
 */
export async function spawnServer(args: string[], env: NodeJS.ProcessEnv, opts: { via?: string[] } = {}): Promise<{ child: ChildProcess; url: string; log: () => string }> {
  const argv = [...(opts.via ?? []), process.execPath, BIN, 'server', ...args, '--json'];
  const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let log = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (log += c));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no start within 60 s: ${out}`)), 60_000);
    child.stdout?.on('data', () => {
      const m = /"url":\s*"(https?:\/\/[^"]+)"/.exec(out);
      if (m?.[1] !== undefined) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${String(code)}) before listening: ${out}`));
    });
  });
  return { child, url, log: () => log };
}
