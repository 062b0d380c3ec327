/**
 * Records real QMP sessions with QEMU into test/transcripts/*.jsonl, for the fake server to replay.
 * Run by hand when QEMU changes:  node --import tsx packages/qmp/test/record-transcripts.ts
 *
 * It speaks raw JSON lines over the socket (not through QmpClient), so the recordings are
 * independent of the code under test. Each line of a transcript is one of
 *   {"dir":"c","msg":{…}}   the client sent this
 *   {"dir":"s","msg":{…}}   the server sent this
 *   {"dir":"s","eof":true}  the server closed the connection
 * Hand-written transcripts may also use {"dir":"s","raw":"…"} for bytes that are not JSON.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

type Entry = { dir: 'c' | 's'; msg?: unknown; eof?: true };
type Step = { send: Record<string, unknown>; settleMs?: number } | { waitMs: number };

async function record(name: string, qemuArgs: string[], steps: Step[]): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'qmp-rec-'));
  const sock = join(dir, 'qmp.sock');
  const qemu = spawn('qemu-system-x86_64', [...qemuArgs, '-qmp', `unix:${sock},server=on,wait=off`], { stdio: 'ignore' });
  try {
    let socket: Socket;
    for (let i = 0; ; i++) {
      try {
        socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect({ path: sock });
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        break;
      } catch (err) {
        if (i > 200) throw err;
        await sleep(20);
      }
    }
    const entries: Entry[] = [];
    let buf = '';
    let eof = false;
    socket.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) entries.push({ dir: 's', msg: JSON.parse(line) as unknown });
      }
    });
    socket.on('end', () => {
      eof = true;
      entries.push({ dir: 's', eof: true });
    });
    await sleep(300); // the greeting
    let n = 1;
    for (const step of steps) {
      if ('waitMs' in step) {
        await sleep(step.waitMs);
        continue;
      }
      const msg = { ...step.send, id: `roamdesk#${n++}` };
      entries.push({ dir: 'c', msg });
      socket.write(`${JSON.stringify(msg)}\n`);
      await sleep(step.settleMs ?? 150);
    }
    // After `quit` QEMU closes the socket: record that EOF too.
    const quits = steps.some((s) => 'send' in s && s.send['execute'] === 'quit');
    for (let i = 0; i < 100 && !eof && (quits || entries.at(-1)?.dir === 'c'); i++) await sleep(20);
    socket.destroy();
    const path = new URL(`./transcripts/${name}.jsonl`, import.meta.url);
    await writeFile(path, entries.map((e) => JSON.stringify(e)).join('\n') + '\n');
    console.log(`recorded ${name}: ${entries.length} messages`);
  } finally {
    qemu.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

const base = ['-machine', 'none', '-nodefaults', '-display', 'none'];

await record('session', base, [
  { send: { execute: 'qmp_capabilities' } },
  { send: { execute: 'query-status' } },
  { send: { execute: 'query-version' } },
  { send: { execute: 'stop' } },
  { send: { execute: 'query-status' } },
  { send: { execute: 'cont' } },
  { send: { execute: 'query-status' } },
  { send: { execute: 'quit' }, settleMs: 400 },
]);

await record('errors', base, [
  { send: { execute: 'qmp_capabilities' } },
  { send: { execute: 'no-such-command' } },
  { send: { execute: 'blockdev-del', arguments: { 'node-name': 'nope' } } },
  { send: { execute: 'query-status', arguments: { bogus: 1 } } },
  { send: { execute: 'human-monitor-command', arguments: { 'command-line': 'info status' } } },
  { send: { execute: 'query-status' } },
]);

await record('before-negotiation', base, [
  { send: { execute: 'query-status' } },
  { send: { execute: 'qmp_capabilities', arguments: { enable: ['bogus'] } } },
]);

await record('paused-start', [...base, '-S'], [
  { send: { execute: 'qmp_capabilities' } },
  { send: { execute: 'query-status' } },
  { send: { execute: 'cont' } },
  { send: { execute: 'query-status' } },
  { send: { execute: 'system_reset' } },
  { send: { execute: 'quit' }, settleMs: 400 },
]);
