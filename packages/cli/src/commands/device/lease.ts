// The lease commands: `roamdesk checkout [--cancel] NAME`, `replicate NAME [--every MINUTES]`,
// `checkin NAME [--stop]`, `rollback NAME`, `quarantine list|export`.

import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';

import type { Command } from 'commander';

import { exportQuarantine, isOffline, listQuarantine, type SendResult } from '@roamdesk/client';

import { CliError } from '../../errors.ts';
import { formatBytes, shortId } from '../../format.ts';
import type { CommandContext } from '../../main.ts';
import { parseIntOption } from '../remote/session.ts';
import { formatTable, shortTime } from '../remote/table.ts';
import { explainLease, progressPrinter, runDevice } from './common.ts';

function sent(r: SendResult, what: string): string {
  if (r.layersSent.length === 0) return `${r.desktop}: nothing new to ${what}; the server holds ${shortId(r.top)}.`;
  const u = r.upload;
  const bytes = u === null ? '' : ` (${formatBytes(u.bytesTotal)}, ${formatBytes(u.bytesOnWire)} on the wire, ${u.seconds.toFixed(1)} s)`;
  return `${r.desktop}: sent ${r.layersSent.length} layer${r.layersSent.length === 1 ? '' : 's'}${bytes}${r.compacted ? ', compacted first' : ''}; top ${shortId(r.top)}.`;
}

/** Ctrl-C stops a transfer cleanly: verified pieces stay, the next run resumes. */
function interruptible(): { signal: AbortSignal; done: () => void } {
  const ac = new AbortController();
  const onSig = (): void => ac.abort(new Error('interrupted'));
  process.once('SIGINT', onSig);
  return { signal: ac.signal, done: () => process.off('SIGINT', onSig) };
}

export function registerLease(program: Command, ctx: CommandContext): void {
  program
    .command('checkout')
    .description('check a desktop out to this device: the server stops and seals it, the missing layers come down, a local overlay is created')
    .argument('<name>', 'desktop name')
    .option('--cancel', 'give the lease back before the check-out completed')
    .addHelpText('after', '\nInterrupted (Ctrl-C, lost connection, killed)? Run the same command again: it resumes where it stopped.')
    .action((name: string, opts: { cancel?: boolean }, cmd: Command) =>
      runDevice(ctx, cmd, async (agent, out) => {
        if (opts.cancel === true) {
          const r = await agent.cancelCheckout(name);
          out.result(r, () => `Cancelled the check-out of ${name}; the server holds the lease (generation ${r.generation}).`);
          return;
        }
        const p = await progressPrinter(out);
        const intr = interruptible();
        try {
          const r = await agent.checkout(name, { onProgress: p.onProgress, signal: intr.signal });
          p.stop();
          out.result(r, () => {
            if (r.already) return `${name} is already checked out to this device (generation ${r.generation}).`;
            const d = r.download;
            const moved = d === null ? '' : ` Downloaded ${formatBytes(d.bytesTransferred)} (${formatBytes(d.bytesSaved)} already local) in ${d.seconds.toFixed(1)} s.`;
            return `Checked out ${name} (generation ${r.generation}).${moved} Start it with: roamdesk start ${name}` +
              (r.grantExpiresAt !== null ? `\nOffline use allowed until ${shortTime(r.grantExpiresAt)} without contacting the server.` : '');
          });
        } finally {
          p.stop();
          intr.done();
        }
      }),
    );

  program
    .command('replicate')
    .description('send the local work to the server as a backup (the local VM may keep running); the lease stays here')
    .argument('<name>', 'desktop name')
    .option('--every <minutes>', 'keep replicating every MINUTES while this command runs (offline rounds are skipped)')
    .action((name: string, opts: { every?: string }, cmd: Command) =>
      runDevice(ctx, cmd, async (agent, out) => {
        const every = parseIntOption(opts.every, '--every', 1, 7 * 24 * 60);
        const p = await progressPrinter(out);
        const intr = interruptible();
        try {
          for (;;) {
            try {
              const r = await agent.replicate(name, { onProgress: p.onProgress, signal: intr.signal });
              p.stop();
              if (every === undefined) {
                out.result(r, () => sent(r, 'replicate'));
                return;
              }
              process.stderr.write(`${new Date().toISOString()} ${sent(r, 'replicate')}\n`);
            } catch (err) {
              p.stop();
              const offline = isOffline(err) || (err as { code?: unknown }).code === 'XFER_ERR_NETWORK';
              if (every === undefined || intr.signal.aborted || !offline) throw err;
              process.stderr.write(`${new Date().toISOString()} ${name}: server unreachable, next try in ${every} min\n`);
            }
            const slept = await new Promise<boolean>((res) => {
              const t = setTimeout(() => res(true), every * 60_000);
              intr.signal.addEventListener('abort', () => {
                clearTimeout(t);
                res(false);
              }, { once: true });
            });
            if (!slept) return;
          }
        } finally {
          p.stop();
          intr.done();
        }
      }),
    );

  program
    .command('checkin')
    .description('check a desktop back in: final seal, send what the server lacks, the lease returns to the server')
    .argument('<name>', 'desktop name')
    .option('--stop', 'shut the local VM down first if it runs (graceful power-down)')
    .action((name: string, opts: { stop?: boolean }, cmd: Command) =>
      runDevice(ctx, cmd, async (agent, out) => {
        const p = await progressPrinter(out);
        const intr = interruptible();
        try {
          const r = await agent.checkin(name, { stop: opts.stop === true, onProgress: p.onProgress, signal: intr.signal });
          p.stop();
          out.result(r, () => `${sent(r, 'send')}\nChecked in ${name}: the server holds the lease (generation ${r.generation}); the local copy was removed.`);
        } finally {
          p.stop();
          intr.done();
        }
      }),
    );

  program
    .command('rollback')
    .description("discard a check-out's unreplicated work: the server takes the lease back at the last replicated state; local unsent work goes to quarantine")
    .argument('<name>', 'desktop name')
    .action((name: string, _opts: unknown, cmd: Command) =>
      runDevice(ctx, cmd, async (agent, out) => {
        const r = await agent.rollback(name);
        out.result(r, () => `Rolled ${name} back; the server holds the lease (generation ${r.generation}).` +
          (r.quarantine !== null ? `\nLocal unsent work kept in quarantine ${r.quarantine.id} (${formatBytes(r.quarantine.bytesUnsent)}).` : ''));
      }),
    );

  const q = program.command('quarantine').description('local work the server no longer accepts (after a rollback or a fenced check-in); never deleted automatically');
  q
    .command('list')
    .description('list quarantined work')
    .action((_opts: unknown, cmd: Command) =>
      runDevice(ctx, cmd, async (agent, out) => {
        const entries = await listQuarantine(agent.home);
        out.result({ quarantine: entries }, () => entries.length === 0 ? 'Nothing in quarantine.' : formatTable(
          ['id', 'desktop', 'when', 'unsent', 'reason'],
          entries.map((e) => [e.id, e.desktop, shortTime(e.createdAt), `${e.unsentLayers.length} layer(s) + ${e.overlay !== null ? 'overlay' : 'no overlay'}, ${formatBytes(e.bytesUnsent)}`, e.reason]),
        ));
      }),
    );
  q
    .command('export')
    .description('write the quarantined disk (the whole chain as the device last saw it) as one standalone qcow2')
    .argument('<id>', 'quarantine id (roamdesk quarantine list)')
    .argument('<file>', 'where to write the qcow2')
    .option('-f, --force', 'overwrite FILE if it exists')
    .action((id: string, file: string, opts: { force?: boolean }, cmd: Command) =>
      runDevice(ctx, cmd, async (agent, out) => {
        const target = resolve(file);
        if (opts.force !== true && (await stat(target).then(() => true, () => false))) {
          throw new CliError('CLI_FILE_EXISTS', `${target} already exists`, { file: target, hint: 'choose another file name, or pass --force' });
        }
        const r = await exportQuarantine(agent.home, id, target).catch((err: unknown) => {
          throw explainLease(err);
        });
        out.result({ id, ...r }, () => `Exported quarantine ${id} to ${r.file}.`);
      }),
    );
}
