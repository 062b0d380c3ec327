// A one-line progress meter on stderr (bytes, rate, ETA), redrawn in place. Only on a terminal: in a pipe or
// a log file a stream of carriage returns is noise.

import type { Progress } from '@roamdesk/client';

import { formatBytes } from '../../format.ts';

const REDRAW_MS = 200;
const RATE_WINDOW_MS = 3000;

export interface ProgressMeter {
  update(p: Progress): void;
  /** Clear the line (the caller prints its own summary). */
  done(): void;
}

export function progressMeter(label: string, enabled = process.stderr.isTTY === true): ProgressMeter {
  if (!enabled) return { update: () => undefined, done: () => undefined };
  const samples: Array<{ t: number; bytes: number }> = [{ t: performance.now(), bytes: 0 }];
  let lastDraw = 0;
  let drawn = false;
  return {
    update(p) {
      const t = performance.now();
      samples.push({ t, bytes: p.bytes });
      // The rate over the last few seconds follows changes in link speed; the first sample anchors it.
      while (samples.length > 2 && (samples[1]?.t ?? t) < t - RATE_WINDOW_MS) samples.shift();
      if (t - lastDraw < REDRAW_MS && p.bytes !== p.total) return;
      lastDraw = t;
      const first = samples[0] ?? { t, bytes: 0 };
      const rate = t > first.t ? ((p.bytes - first.bytes) * 1000) / (t - first.t) : 0;
      process.stderr.write(`\r${progressLine(label, p, rate)}\x1b[K`);
      drawn = true;
    },
    done() {
      if (drawn) process.stderr.write('\r\x1b[K');
    },
  };
}

export function progressLine(label: string, p: Progress, bytesPerSecond: number): string {
  const parts = [label];
  if (p.total !== null && p.total > 0) {
    parts.push(`${formatBytes(p.bytes)} / ${formatBytes(p.total)} (${Math.floor((p.bytes * 100) / p.total)}%)`);
  } else {
    parts.push(formatBytes(p.bytes));
  }
  parts.push(`${formatBytes(Math.round(bytesPerSecond))}/s`);
  if (p.total !== null && bytesPerSecond > 0 && p.total > p.bytes) parts.push(`ETA ${formatEta((p.total - p.bytes) / bytesPerSecond)}`);
  return parts.join('  ');
}

export function formatEta(seconds: number): string {
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
