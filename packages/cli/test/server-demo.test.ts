// `roamdesk server --demo` run as a user runs it, twice on one data directory: the first start creates the demo
// user with a generated password and keeps it (owner-only); the second start shows the same password again, and
// it logs in. Needs the tiny guest (`npm run guest`, built by scripts/setup.sh --test).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { findGuest } from '../src/guest.ts';

const BIN = fileURLToPath(new URL('../bin/roamdesk.js', import.meta.url));
const guest = await findGuest().then(() => true, () => false);

interface Summary {
  url: string;
  demo: { user: { name: string; created: boolean; password?: string; passwordFile?: string } };
}

/** Starts the server on a free port, reads its --json summary (printed once it is ready), stops it with SIGTERM. */
async function startOnce(dataDir: string): Promise<{ summary: Summary; stderr: string; login: number }> {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  delete env['ROAMDESK_DEMO_PASSWORD'];
  const child = spawn(process.execPath, [BIN, 'server', '--data', dataDir, '--listen', '127.0.0.1:0', '--demo', '--log-level', 'warn', '--json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  try {
    const summary = await new Promise<Summary>((resolve, reject) => {
      child.stdout.setEncoding('utf8').on('data', (s: string) => {
        stdout += s;
        try {
          resolve(JSON.parse(stdout) as Summary);
        } catch {
          // not complete yet
        }
      });
      child.once('close', (code) => reject(new Error(`the server exited (${code}) before it was ready: ${stdout}\n${stderr}`)));
    });
    const r = await fetch(`${summary.url}/api/v1/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'demo', password: summary.demo.user.password ?? '' }),
    });
    return { summary, stderr, login: r.status };
  } finally {
    child.kill('SIGTERM');
    if (child.exitCode === null) await new Promise((r) => child.once('close', r));
  }
}

describe('roamdesk server --demo', { skip: guest ? false : 'the tiny guest is not built (npm run guest)' }, () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'roamdesk-demo-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('shows the demo password at every start, not only the first, and it logs in', async () => {
    const first = await startOnce(dir);
    assert.equal(first.summary.demo.user.created, true);
    const password = first.summary.demo.user.password;
    assert.ok(password !== undefined && password.length >= 12);
    assert.equal(first.login, 200);
    const file = join(dir, 'demo-password');
    assert.equal(first.summary.demo.user.passwordFile, file);
    assert.equal((await stat(file)).mode & 0o777, 0o600);

    const second = await startOnce(dir);
    assert.equal(second.summary.demo.user.created, false);
    assert.equal(second.summary.demo.user.password, password);
    assert.equal(second.login, 200);
    assert.ok(second.stderr.includes(`password ${password}, as set at its first start`), second.stderr);
  });
});
