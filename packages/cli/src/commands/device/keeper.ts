// `roamdesk device keep NAME`: the keeper beside a running local VM (client device/keeper.ts): heartbeats and
// scheduled replication, until the VM stops. `roamdesk start NAME` launches it in the background when the server's
// policy schedules replication, writing its log next to the VM's (`<run dir>/keeper.log`).

import { spawn } from 'node:child_process';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { Command } from 'commander';

import { keeperPid, runKeeper, type DeviceAgent, type KeeperEvent } from '@roamdesk/client';

import { formatBytes, formatDuration } from '../../format.ts';
import type { CommandContext } from '../../main.ts';
import { runDevice } from './common.ts';

/** The CLI's own entry, so the keeper runs the same roamdesk as the command that launched it. */
const BIN = fileURLToPath(new URL('../../../bin/roamdesk.js', import.meta.url));

export const KEEPER_LOG = 'keeper.log';

function eventText(e: KeeperEvent): string {
  switch (e.type) {
    case 'started':
      return `keeping ${e.desktop}: replication every ${formatDuration(e.replicateEverySeconds)}, next at ${e.nextReplicationAt}`;
    case 'heartbeat':
      return e.online ? 'heartbeat: the offline lease is renewed' : `heartbeat: the server is unreachable (${e.error ?? 'no answer'}); working offline`;
    case 'replicated': {
      const sent = e.result.upload === null ? 'nothing new' : `${String(e.result.layersSent.length)} layer(s), ${formatBytes(e.result.upload.bytesOnWire)} on the wire`;
      return `replicated ${e.result.desktop} (generation ${String(e.result.generation)}): ${sent}; next at ${e.nextReplicationAt}`;
    }
    case 'replication-failed':
      return `replication not done now: ${e.message} [${e.code}]; next try at ${e.retryAt}`;
    case 'stopped':
      return `keeper stopped: ${e.reason}`;
  }
}

export function registerKeep(device: Command, ctx: CommandContext): void {
  device
    .command('keep')
    .description('run beside the local VM of NAME until it stops: heartbeats, and replication as often as the server\'s policy says (`roamdesk start` launches it)')
    .argument('<name>', 'a desktop checked out to this device')
    .action((name: string, _opts: unknown, cmd: Command) =>
      runDevice(ctx, cmd, async (agent, out) => {
        const ac = new AbortController();
        const stop = (): void => ac.abort();
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
        try {
          // One line per event, so the log reads as it happened (with --json: one JSON document per line).
          const reason = await runKeeper(agent, name, {
            signal: ac.signal,
            onEvent: (e) => out.info(out.opts.json ? JSON.stringify({ at: new Date().toISOString(), ...e }) : `${new Date().toISOString()} ${eventText(e)}`),
          });
          out.result({ desktop: name, stopped: reason });
        } finally {
          process.off('SIGTERM', stop);
          process.off('SIGINT', stop);
        }
      }),
    );
}

/**
 * Start the keeper of `name` in the background unless one runs or the policy schedules no replication. It
 * outlives this command (its own session, like the VM). Returns its pid and log, or null.
 */
export async function launchKeeper(agent: DeviceAgent, name: string, runDir: string): Promise<{ pid: number; log: string; replicateEverySeconds: number } | null> {
  const rec = await agent.records.require(name);
  const every = rec.replicateEverySeconds ?? 0;
  if (every === 0) return null;
  const running = await keeperPid(agent.home, name);
  const log = join(runDir, KEEPER_LOG);
  if (running !== null) return { pid: running, log, replicateEverySeconds: every };
  const fh = await open(log, 'a', 0o600);
  try {
    const child = spawn(process.execPath, [BIN, 'device', 'keep', name], {
      detached: true,
      stdio: ['ignore', fh.fd, fh.fd],
      env: { ...process.env, ROAMDESK_HOME: agent.home },
    });
    child.on('error', () => undefined);
    child.unref();
    const pid = child.pid;
    if (pid === undefined) return null;
    return { pid, log, replicateEverySeconds: every };
  } finally {
    await fh.close();
  }
}
