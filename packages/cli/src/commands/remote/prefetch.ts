// `roamdesk prefetch NAME`: download a desktop's image and current layers into the local store ahead of any
// check-out (resumable, with progress). `roamdesk status NAME`: the desktop's chain and how much of it is local.

import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';

import { type Command, Option } from 'commander';

import { ClientError, type DesktopStatus, desktopStatus, type LocalObjectStatus, prefetchDesktop, type PrefetchResult } from '@roamdesk/client';
import type { CompressionMode, TransferError } from '@roamdesk/transfer';

import { CliError, CliUsageError } from '../../errors.ts';
import { formatBytes, shortId } from '../../format.ts';
import type { CommandContext } from '../../main.ts';
import { localStatus } from '../device/status.ts';
import { LOGIN_HINT, runRemote } from './session.ts';
import { formatTable, shortTime } from './table.ts';
import type { TransferBars } from './transfer-progress.ts';

interface PrefetchOpts {
  seed?: string[];
  compression: CompressionMode;
}

export function registerPrefetch(program: Command, ctx: CommandContext): void {
  program
    .command('prefetch')
    .description("download a desktop's image and current layers into the local store, ahead of any check-out (resumable)")
    .argument('<name>', 'desktop name')
    .option('--seed <dir>', 'a folder that may already hold some of the objects (an old store, a USB copy); repeatable; every piece is verified', collect)
    .addOption(new Option('--compression <mode>', 'zstd on the wire: auto (measure the link), on, off').choices(['auto', 'on', 'off']).default('auto'))
    .addHelpText('after', [
      '',
      'Only what the local store lacks is downloaded; every piece is checked against its hash before it counts.',
      'Ctrl-C (or a lost connection) keeps the verified pieces: run the same command again to resume.',
      'The local store is $ROAMDESK_HOME/store; `roamdesk status NAME` shows how much of a desktop is local.',
      'Progress goes to stderr (bars on a terminal, a line every 5 s otherwise). With --json, stdout gets',
      '{ desktop, store, chain: { objects, bytes }, report } where report is the transfer report (bytesTotal,',
      'bytesTransferred, bytesOnWire, bytesSaved, piecesRetried, seconds, compression, compressionReason, objects).',
    ].join('\n'))
    .action((name: string, opts: PrefetchOpts, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const seeds = await checkSeeds(opts.seed ?? []);
        const { client } = await remote.connect();
        // Loaded here, not at the top: the bars (cli-progress) and the transfer engine only matter to this command.
        const [{ transferBars }, { isTransferError }] = await Promise.all([import('./transfer-progress.ts'), import('@roamdesk/transfer')]);
        const abort = new AbortController();
        // The first Ctrl-C stops cleanly (verified pieces kept); the handlers are `once`, so a second one kills.
        const onSignal = (signal: NodeJS.Signals): void => abort.abort(new Error(`stopped by ${signal}`));
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        const bars: { current: TransferBars | null } = { current: null };
        try {
          const r = await prefetchDesktop({
            client, home: remote.store.dir, desktop: name, seeds, compression: opts.compression, signal: abort.signal,
            onChain: (chain) => {
              process.stderr.write(`Prefetching ${name}: ${chain.objects.length} object${chain.objects.length === 1 ? '' : 's'}, ${formatBytes(chain.bytes)}\n`);
              bars.current = transferBars(name, chain.objects);
            },
            onProgress: (p) => bars.current?.update(p),
          });
          bars.current?.stop();
          out.result({ desktop: r.desktop, store: r.store, chain: r.chain, report: r.report }, () => prefetchSummary(r));
        } catch (err) {
          bars.current?.stop();
          throw explainPrefetch(err, name, remote.server, isTransferError);
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      }),
    );

  program
    .command('status')
    .description("show a desktop's chain and how much of it is in the local store; for a desktop checked out here (or, without NAME, all of them): the lease, layers, pending upload, offline lease and disk files")
    .argument('[name]', 'desktop name')
    .addHelpText('after', [
      '',
      'When the server cannot be reached, the chain recorded by the last prefetch or status is shown, with a note.',
      'JSON: { desktop, location, source, asOf, objects: [{ id, kind, size, local, localBytes, path? }], bytesTotal, bytesLocal }',
      '  local is complete | partial | missing; source is server | last-known (then `unreachable` says why).',
      'Checked out to this device (works offline): { desktop, location: "this-device", generation, state, layerCounts, bytesPendingUpload,',
      '  lastReplication, offlineLease, vm, server, image, layers: [paths], overlay } — image, layers and overlay are the local disk files.',
    ].join('\n'))
    .action((name: string | undefined, _opts: unknown, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        // Checked out to this device (or no NAME): the device's view, offline too (device/status.ts).
        if (await localStatus(name, out)) return;
        if (name === undefined) return;
        const { client } = await remote.connect();
        const s = await desktopStatus({ client, home: remote.store.dir, desktop: name });
        out.result(s, () => statusText(s));
      }),
    );
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

async function checkSeeds(seeds: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const s of seeds) {
    const dir = resolve(s);
    const isDir = await stat(dir).then((st) => st.isDirectory(), () => false);
    if (!isDir) throw new CliUsageError(`--seed ${s}: not a directory`);
    out.push(dir);
  }
  return out;
}

function resumeHint(name: string): string {
  return `run \`roamdesk prefetch ${name}\` again to resume: verified pieces are kept`;
}

/** Interrupts and transfer-engine failures get a "what now"; server refusals pass to runRemote's hints. */
function explainPrefetch(err: unknown, name: string, server: string | undefined, isTransferError: (e: unknown) => e is TransferError): unknown {
  if (err instanceof ClientError && err.code === 'CLIENT_ERR_INTERRUPTED') {
    const done = typeof err.data['bytesLocal'] === 'number' ? err.data['bytesLocal'] : 0;
    const total = typeof err.data['bytesTotal'] === 'number' ? err.data['bytesTotal'] : 0;
    return new CliError(err.code, `prefetch of ${name} interrupted: ${formatBytes(done)} of ${formatBytes(total)} local`, err.data, { cause: err });
  }
  if (!isTransferError(err)) return err;
  const data: Record<string, unknown> = { ...err.data };
  const status = typeof data['status'] === 'number' ? data['status'] : undefined;
  const remoteCode = typeof data['code'] === 'string' ? data['code'] : undefined;
  if (typeof data['hint'] === 'string') {
    // The engine already says what to do (an untrusted certificate, a full or failing disk).
  } else if (err.code === 'XFER_ERR_NETWORK') {
    data['hint'] = `the connection to ${server ?? 'the server'} failed; when it is reachable, ${resumeHint(name)}`;
  } else if (err.code === 'XFER_ERR_REMOTE' && (status === 401 || remoteCode === 'AUTH_REQUIRED' || remoteCode === 'TOKEN_EXPIRED')) {
    data['hint'] = `the session ended: log in again (${server !== undefined ? `roamdesk login ${server} --user NAME` : LOGIN_HINT}), then ${resumeHint(name)}`;
  } else if (err.code === 'XFER_ERR_REMOTE' && (status === 404 || status === 403)) {
    data['hint'] = `the desktop's chain changed on the server during the download; ${resumeHint(name)}`;
  } else if (err.code === 'XFER_ERR_REMOTE' && status !== undefined && status >= 500) {
    data['hint'] = `the server failed (see its log); ${resumeHint(name)}`;
  } else {
    data['hint'] = resumeHint(name);
  }
  return new CliError(err.code, err.message, data, { cause: err });
}

function prefetchSummary(r: PrefetchResult): string {
  const rep = r.report;
  const alreadyLocal = rep.objects.filter((o) => o.action === 'present').reduce((n, o) => n + o.size, 0);
  const derived = rep.objects.filter((o) => o.action === 'derived').reduce((n, o) => n + o.size, 0);
  const rate = rep.seconds > 0 ? rep.bytesTransferred / rep.seconds : 0;
  const n = rep.objects.length;
  const lines = [
    `Prefetched ${r.desktop}: ${n} object${n === 1 ? '' : 's'}, ${formatBytes(rep.bytesTotal)}, all local in ${r.store}.`,
    rep.bytesTransferred === 0
      ? `  transferred  0 B (${rep.seconds.toFixed(1)} s); on the wire ${formatBytes(rep.bytesOnWire)}`
      : `  transferred  ${formatBytes(rep.bytesTransferred)} in ${rep.seconds.toFixed(1)} s (${formatBytes(Math.round(rate))}/s); on the wire ${formatBytes(rep.bytesOnWire)}`,
    `  saved        ${formatBytes(rep.bytesSaved)} (already local ${formatBytes(alreadyLocal)}${derived > 0 ? `, derived here ${formatBytes(derived)}` : ''}, resumed or seeded ${formatBytes(rep.bytesSaved - alreadyLocal - derived)})`,
    `  compression  ${rep.compression ? 'on' : 'off'}: ${rep.compressionReason}`,
  ];
  if (rep.piecesRetried > 0) lines.push(`  retried      ${rep.piecesRetried} pieces (refused or cut off, fetched again)`);
  lines.push(formatTable(['object', 'kind', 'size', 'result'], rep.objects.map((o) => [
    shortId(o.id), o.kind, formatBytes(o.size),
    o.action === 'present' ? 'already local' : o.action === 'derived' ? 'derived from objects already local' : `downloaded: ${o.piecesSent} of ${o.piecesTotal} pieces sent, ${o.piecesResumed} resumed, ${o.piecesSeeded} seeded`,
  ])));
  return lines.join('\n');
}

function localText(o: LocalObjectStatus): string {
  if (o.local === 'partial') return `partial: ${formatBytes(o.localBytes)} verified (${percent(o.localBytes, o.size)}%)`;
  return o.local;
}

function percent(part: number, whole: number): number {
  if (whole === 0 || part >= whole) return 100;
  return Math.floor((part * 100) / whole);
}

export function statusText(s: DesktopStatus): string {
  const lines: string[] = [];
  if (s.unreachable !== undefined) {
    lines.push(`The server ${s.unreachable.server} cannot be reached: showing the chain recorded at ${shortTime(s.asOf)} UTC (last prefetch or status).`);
  }
  lines.push(`Desktop ${s.desktop} (lease: ${s.location}): ${formatBytes(s.bytesLocal)} of ${formatBytes(s.bytesTotal)} local (${percent(s.bytesLocal, s.bytesTotal)}%).`);
  lines.push(formatTable(['object', 'kind', 'size', 'local'], s.objects.map((o) => [shortId(o.id), o.kind, formatBytes(o.size), localText(o)])));
  if (s.bytesLocal < s.bytesTotal) lines.push(`Run \`roamdesk prefetch ${s.desktop}\` to download the rest.`);
  return lines.join('\n');
}
