// What the device commands share: the DeviceAgent for this ROAMDESK_HOME (with the logged-in session, if any,
// for registration and rollback), hints for the lease errors, and progress on stderr.

import type { Command } from 'commander';

import { ApiError, DeviceAgent, type AgentProgress, StateStore } from '@roamdesk/client';

import { CliError } from '../../errors.ts';
import type { CommandContext } from '../../main.ts';
import type { Output } from '../../output.ts';
import { explain } from '../remote/session.ts';
import type { TransferBars } from '../remote/transfer-progress.ts';

export async function openAgent(): Promise<DeviceAgent> {
  const state = new StateStore();
  const s = await state.load();
  const session = s.server !== null && s.session !== null ? { server: s.server, token: s.session.token } : null;
  // The agent opens the local store itself, as its writer only while it holds the store lock (shared with prefetch).
  return new DeviceAgent({ home: state.dir, session });
}

/** Run a device command: its Output, errors explained (what failed, why, what to do). */
export async function runDevice(ctx: CommandContext, cmd: Command, fn: (agent: DeviceAgent, out: Output) => Promise<void>): Promise<void> {
  const out = ctx.output(cmd);
  const agent = await openAgent();
  try {
    await fn(agent, out);
  } catch (err) {
    throw explainLease(err);
  }
}

function hint(code: string, data: Readonly<Record<string, unknown>>): string | undefined {
  switch (code) {
    case 'LEASE_STALE':
      return 'the lease moved away from this device (rolled back or checked in elsewhere); unsent local work is kept in quarantine (roamdesk quarantine list)';
    case 'DEVICE_REVOKED':
      return 'an administrator revoked this device; register it again (roamdesk device register --force) and check the desktop out again';
    case 'LEASE_BUSY':
      return typeof data['operation'] === 'string' ? `another operation (${data['operation']}) holds the lease; wait for it, then retry` : 'another lease operation is running; retry in a moment';
    case 'CHECKED_OUT':
      return 'it is checked out to another device: check it in there, or ask an administrator to roll it back';
    case 'CHAIN_MISMATCH':
      return 'the local chain does not continue the server\'s replicated state; check the desktop status (roamdesk status NAME)';
    default:
      return undefined;
  }
}

export function explainLease(err: unknown): unknown {
  if (err instanceof ApiError) {
    const h = hint(err.code, err.data ?? {});
    if (h !== undefined && typeof err.data?.['hint'] !== 'string') {
      return new CliError(err.code, err.message, { ...err.data, status: err.status, hint: h }, { cause: err });
    }
  }
  return explain(err);
}

/** Step lines and transfer bars on stderr (stdout stays for the result). The bars are loaded only by commands that move data. */
export async function progressPrinter(out: Output): Promise<{
  onProgress: (p: AgentProgress) => void;
  stop: () => void;
}> {
  const { transferBars } = await import('../remote/transfer-progress.ts');
  let bars: TransferBars | null = null;
  let lastStep = '';
  const words: Record<string, string> = {
    heartbeat: 'contacting the server', checkout: 'asking the server for the lease (it stops and seals the desktop)', download: 'downloading',
    verify: 'verifying the chain', overlay: 'creating the local overlay', confirm: 'confirming the check-out', stop: 'shutting the local VM down',
    seal: 'sealing local writes into a layer', compact: 'compacting unsent layers', upload: 'uploading', commit: 'committing on the server',
    quarantine: 'moving local work to quarantine', cleanup: 'cleaning up', wait: 'waiting for the scheduled replication now running to finish',
  };
  return {
    onProgress(p) {
      if (p.transfer !== undefined) {
        bars ??= transferBars(p.step === 'download' ? `check-out ${p.desktop}` : `upload ${p.desktop}`, p.objects ?? []);
        bars.update(p.transfer);
        return;
      }
      if (bars !== null) {
        bars.stop();
        bars = null;
      }
      if (p.step !== lastStep && !out.opts.json) process.stderr.write(`${p.desktop}: ${words[p.step] ?? p.step}…\n`);
      lastStep = p.step;
    },
    stop() {
      bars?.stop();
      bars = null;
    },
  };
}
