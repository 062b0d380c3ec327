// The user's commands: desktops, start, stop, logs, console, export.

import { resolve } from 'node:path';

import type { Command } from 'commander';

import { SERIAL_LOG_TAIL_MAX, STOP_TIMEOUT_MAX_SECONDS } from '@roamdesk/api/core';
import type { Desktop } from '@roamdesk/api';
import { ApiError } from '@roamdesk/client';

import { CliError, CliUsageError } from '../../errors.ts';
import { localConsole, localLogs, localStart, localStop } from '../device/local.ts';
import { formatBytes } from '../../format.ts';
import type { CommandContext } from '../../main.ts';
import { progressMeter } from './progress.ts';
import { parseIntOption, runRemote } from './session.ts';
import { formatTable } from './table.ts';

export function desktopTable(desktops: readonly Desktop[]): string {
  if (desktops.length === 0) return 'No desktops.';
  return formatTable(
    ['name', 'state', 'location', 'owner', 'image', 'memory', 'cpus'],
    desktops.map((d) => [d.name, d.paused === undefined ? d.state : `paused (${d.paused.reason})`, d.location, d.owner, d.image, `${d.memoryMiB} MiB`, String(d.cpus)]),
  );
}

/** `Desktop NAME is running.`, or why its VM is paused and what to do. */
export function desktopStateText(d: Desktop): string {
  const p = d.paused;
  if (p === undefined) return `Desktop ${d.name} is ${d.state}.`;
  const why = p.reason === 'no-space'
    ? "the server's disk is full; it resumes by itself once there is room again"
    : p.reason === 'disk-error' ? 'its disk reported an I/O error; once that is fixed, roamdesk start resumes it' : `paused on request; roamdesk start ${d.name} resumes it`;
  return `Desktop ${d.name} is running but PAUSED since ${p.since}: ${why}.`;
}

export function registerDesktops(program: Command, ctx: CommandContext): void {
  program
    .command('desktops')
    .description('list your desktops (all desktops for an administrator)')
    .action((_opts: unknown, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const { client } = await remote.connect();
        const desktops = await client.listDesktops();
        out.result({ desktops }, () => desktopTable(desktops));
      }),
    );

  program
    .command('start')
    .description('start a desktop, or resume one a full disk paused (on this device when it is checked out here, else on the server)')
    .argument('<name>', 'desktop name')
    .action((name: string, _opts: unknown, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        if (await localStart(name, out)) return;
        const { client } = await remote.connect();
        const desktop = await client.startDesktop(name);
        out.result({ desktop }, () => desktopStateText(desktop));
      }),
    );

  program
    .command('stop')
    .description('stop a desktop (graceful power-down, killed after a timeout); on this device when it is checked out here')
    .argument('<name>', 'desktop name')
    .option('--force', 'no graceful power-down: the VM quits at once (a hung guest; what the guest had not saved is lost)')
    .option('--timeout <seconds>', `how long the guest gets to power off before its VM is killed (default: the server's, 60 s on this device; at most ${STOP_TIMEOUT_MAX_SECONDS})`)
    .action((name: string, opts: { force?: boolean; timeout?: string }, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const force = opts.force === true;
        const timeoutSeconds = parseIntOption(opts.timeout, '--timeout', 0, STOP_TIMEOUT_MAX_SECONDS);
        if (force && timeoutSeconds !== undefined) throw new CliUsageError('--force and --timeout exclude each other (--force is --timeout 0)');
        if (!force && timeoutSeconds !== 0 && !out.opts.json) {
          const after = timeoutSeconds === undefined ? 'after a timeout' : `after ${timeoutSeconds} s`;
          process.stderr.write(`Asking ${name}'s guest to shut down (it is killed ${after}; --force stops it at once)…\n`);
        }
        const stop = { force, ...(timeoutSeconds !== undefined ? { timeoutSeconds } : {}) };
        if (await localStop(name, out, stop)) return;
        const { client } = await remote.connect();
        const desktop = await client.stopDesktop(name, stop);
        out.result({ desktop }, () => desktopStateText(desktop));
      }),
    );

  program
    .command('logs')
    .description("print the end of a desktop's serial console log")
    .argument('<name>', 'desktop name')
    .option('--tail <bytes>', 'how many bytes from the end (server default: 64 KiB)')
    .action((name: string, opts: { tail?: string }, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const tail = parseIntOption(opts.tail, '--tail', 1, SERIAL_LOG_TAIL_MAX);
        if (await localLogs(name, tail, out)) return;
        const { client } = await remote.connect();
        const log = await client.serialLog(name, tail !== undefined ? { tail } : {});
        // The log verbatim: Output.result would add a newline the guest never wrote.
        if (out.opts.json) out.result({ desktop: name, log });
        else process.stdout.write(log);
      }),
    );

  program
    .command('console')
    .description("open a console session and print the console page's URL (for a desktop running on this device: a local page, served until Ctrl-C)")
    .argument('<name>', 'desktop name')
    .action((name: string, _opts: unknown, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        if (await localConsole(name, out)) return;
        const { client, server } = await remote.connect();
        const session = await client.createConsole(name).catch((err: unknown) => {
          if (err instanceof ApiError && err.isUnknownRoute) {
            throw new CliError('CLI_CONSOLE_UNSUPPORTED', `the server at ${server} does not support remote consoles`, {
              server,
              hint: 'upgrade the server to a version with the console endpoint (POST /api/v1/desktops/:name/console)',
            }, { cause: err });
          }
          throw err;
        });
        // The URL alone on stdout, so `xdg-open "$(roamdesk console NAME)"` works.
        out.result({ desktop: name, ...session }, () => session.url);
        if (!out.opts.json && session.expiresAt !== '') process.stderr.write(`(single use; open it before ${session.expiresAt})\n`);
      }),
    );

  program
    .command('export')
    .description("download a desktop's current disk chain as one standalone qcow2 file (the desktop must be stopped)")
    .argument('<name>', 'desktop name')
    .argument('<file>', 'where to write the qcow2')
    .option('-f, --force', 'overwrite FILE if it exists')
    .action((name: string, file: string, opts: { force?: boolean }, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const target = resolve(file);
        const { client } = await remote.connect();
        const meter = progressMeter(`exporting ${name}`);
        const t0 = performance.now();
        try {
          const r = await client.exportDesktop(name, target, { overwrite: opts.force === true, onProgress: (p) => meter.update(p) });
          meter.done();
          const seconds = (performance.now() - t0) / 1000;
          out.result({ desktop: name, file: r.file, bytes: r.bytes, seconds }, () =>
            `Exported ${name} to ${r.file} (${formatBytes(r.bytes)} in ${seconds.toFixed(1)} s).`,
          );
        } catch (err) {
          meter.done();
          throw err;
        }
      }),
    );
}
