/** Runs test/support/device-child.ts (a device's check-out or check-in in its own process) and may SIGKILL it mid-transfer. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { createInterface } from 'node:readline';

/** `killAfter`: SIGKILL once this many bytes moved (and not all); null: let it finish, which it must. */
export async function runChild(home: string, op: 'checkout' | 'checkin', name: string, server: string, token: string, killAfter: number | null): Promise<{ killed: boolean; result: unknown }> {
  const script = new URL('./device-child.ts', import.meta.url).pathname;
  const child = spawn(process.execPath, ['--import', 'tsx', script, home, op, name, server, token], { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  let killed = false;
  let result: unknown = null;
  let error: unknown = null;
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    const msg = JSON.parse(line) as { bytesDone?: number; bytesTotal?: number; step?: string; result?: unknown; error?: unknown };
    if (msg.result !== undefined) result = msg.result;
    if (msg.error !== undefined) error = msg.error;
    if (killAfter !== null && !killed && msg.bytesDone !== undefined && msg.bytesDone >= killAfter && msg.bytesDone < (msg.bytesTotal ?? 0)) {
      killed = true;
      child.kill('SIGKILL');
    }
  }
  const code = await new Promise<number | null>((r) => (child.exitCode !== null || child.signalCode !== null ? r(child.exitCode) : child.once('exit', (c) => r(c))));
  if (!killed) assert.equal(code, 0, `device child ${op} failed: ${JSON.stringify(error)}\n${stderr}`);
  await mkdir(home, { recursive: true });
  return { killed, result };
}
