// Progress of a transfer engine run (prefetch; later check-out and check-in) on stderr, so stdout stays clean for
// --json. On a terminal: two cli-progress bars, the whole chain and the object being worked on, with bytes
// done/total, rate, ETA, bytes saved (already local, resumed, seeded) and bytes on the wire. Elsewhere (a pipe,
// a log file, CI) redrawn bars are noise: one plain line every few seconds instead.

import { MultiBar, type SingleBar } from 'cli-progress';

import type { TransferProgress } from '@roamdesk/transfer';

import { formatBytes, shortId } from '../../format.ts';
import { formatEta } from './progress.ts';

export interface ProgressObject {
  readonly id: string;
  readonly kind: 'image' | 'layer';
  readonly size: number;
}

export interface TransferBars {
  update(p: TransferProgress): void;
  /** Stop drawing (a terminal keeps the last frame); safe to call twice. */
  stop(): void;
}

export interface TransferBarsOptions {
  /** Draw bars (default: stderr is a terminal). */
  tty?: boolean;
  /** Without a terminal: at most one line per this many ms (default 5000). */
  lineEveryMs?: number;
  write?: (line: string) => void;
  now?: () => number;
}

/** Bytes of object `i` that are done, given the chain-wide count (objects are worked on in order). */
export function objectBytesDone(objects: readonly ProgressObject[], p: TransferProgress): number {
  const before = objects.slice(0, p.objectIndex).reduce((n, o) => n + o.size, 0);
  return Math.max(0, Math.min(objects[p.objectIndex]?.size ?? 0, p.bytesDone - before));
}

export function objectLabel(objects: readonly ProgressObject[], index: number, idChars = 12): string {
  const o = objects[index];
  if (o === undefined) return '';
  return `${o.kind} ${index + 1}/${objects.length} ${shortId(o.id).slice(0, idChars)}`;
}

/** `label: 12.0 MiB / 38.0 MiB (31%), image 1/2 3f2a9c1b0000 transferring, 45.2 MiB/s, ETA 1s, saved 0 B, on the wire 12.0 MiB` */
export function progressText(label: string, objects: readonly ProgressObject[], p: TransferProgress): string {
  const pct = p.bytesTotal > 0 ? Math.floor((p.bytesDone * 100) / p.bytesTotal) : 100;
  return [
    `${label}: ${formatBytes(p.bytesDone)} / ${formatBytes(p.bytesTotal)} (${pct}%)`,
    `${objectLabel(objects, p.objectIndex)} ${p.phase}`,
    `${rateText(p)}`,
    `ETA ${etaText(p)}`,
    `saved ${formatBytes(p.bytesSaved)}`,
    `on the wire ${formatBytes(p.bytesOnWire)}${p.compression ? ' (zstd)' : ''}`,
  ].join(', ');
}

function rateText(p: TransferProgress): string {
  return `${formatBytes(Math.round(p.rateBytesPerSec))}/s`;
}

function etaText(p: TransferProgress): string {
  if (p.etaSeconds === null) return '?';
  return p.etaSeconds === 0 ? '0s' : formatEta(p.etaSeconds);
}

export function transferBars(label: string, objects: readonly ProgressObject[], opts: TransferBarsOptions = {}): TransferBars {
  const tty = opts.tty ?? process.stderr.isTTY === true;
  return tty ? terminalBars(label, objects) : plainLines(label, objects, opts);
}

function plainLines(label: string, objects: readonly ProgressObject[], opts: TransferBarsOptions): TransferBars {
  const every = opts.lineEveryMs ?? 5000;
  const now = opts.now ?? (() => performance.now());
  const write = opts.write ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const start = now();
  let last = start;
  return {
    update(p) {
      const t = now();
      // The summary follows a finished transfer: no line for 'done', and none before the first interval.
      if (p.phase === 'done' || t - last < every) return;
      last = t;
      write(progressText(label, objects, p));
    },
    stop: () => undefined,
  };
}

function terminalBars(label: string, objects: readonly ProgressObject[]): TransferBars {
  const labels = [label, ...objects.map((_, i) => objectLabel(objects, i, 8))];
  const width = Math.max(...labels.map((l) => l.length));
  // Fit an 80-column terminal with a short bar; wider terminals get a longer one.
  const columns = process.stderr.columns ?? 80;
  const multi = new MultiBar({
    stream: process.stderr,
    barsize: Math.max(10, Math.min(30, columns - width - 56)),
    hideCursor: true,
    clearOnComplete: false,
    autopadding: true,
    fps: 8,
  });
  const total = objects.reduce((n, o) => n + o.size, 0);
  const totalBar: SingleBar = multi.create(Math.max(1, total), 0, { name: label.padEnd(width), done: formatBytes(0), size: formatBytes(total), speed: '0 B/s', remaining: '?' }, {
    format: '{name} [{bar}] {percentage}% {done} / {size}  {speed}  ETA {remaining}',
  });
  const objectPayload = (i: number, done: number, phase: string) => ({
    name: objectLabel(objects, i, 8).padEnd(width), done: formatBytes(done), size: formatBytes(objects[i]?.size ?? 0), phase,
  });
  const objectBar: SingleBar = multi.create(Math.max(1, objects[0]?.size ?? 1), 0, objectPayload(0, 0, 'planning'), {
    format: '{name} [{bar}] {percentage}% {done} / {size}  {phase}',
  });
  // A line without a bar: what did not have to cross the network, and what did.
  const infoLine: SingleBar = multi.create(1, 0, { pad: ''.padEnd(width), saved: formatBytes(0), wire: formatBytes(0), zstd: 'off' }, {
    format: '{pad} saved {saved} (already local, resumed or seeded), on the wire {wire}, zstd {zstd}',
  });
  let index = 0;
  let stopped = false;
  return {
    update(p) {
      if (stopped) return;
      totalBar.update(p.bytesDone, { done: formatBytes(p.bytesDone), size: formatBytes(p.bytesTotal), speed: rateText(p), remaining: etaText(p) });
      infoLine.update(0, { saved: formatBytes(p.bytesSaved), wire: formatBytes(p.bytesOnWire), zstd: p.compression ? 'on' : 'off' });
      const o = objects[p.objectIndex];
      if (o === undefined) return;
      if (index !== p.objectIndex) {
        index = p.objectIndex;
        objectBar.setTotal(Math.max(1, o.size));
      }
      const done = objectBytesDone(objects, p);
      objectBar.update(done, objectPayload(p.objectIndex, done, p.phase));
    },
    stop() {
      if (stopped) return;
      stopped = true;
      multi.stop();
    },
  };
}
