// A long operation's transfer progress, posted to the server (POST /operations/:id/progress) while it runs: the
// API and UI show it, and the server knows the device is still at work.
//   - at most one post in flight; when it returns, the newest progress if a post fell due meanwhile (chained posts
//     made a slow link's check-in wait for a queue of round trips at its end);
//   - a post at most every `everyMs`, and the final one (phase 'done') at once;
//   - at least every `keepaliveMs` even when progress has not moved (a batch on a slow link reports only when it is
//     answered): the server gives up an operation silent for OPERATION_STALE_MS (15 minutes) when another wants
//     to start;
//   - `flush()` at the end: sends what is not sent yet and waits for it. A failed post is dropped (best effort).

import type { OperationProgress } from '@roamdesk/api';
import type { TransferProgress } from '@roamdesk/transfer';

export interface OperationReporter {
  update(phase: string, t: TransferProgress): void;
  flush(): Promise<void>;
}

export function operationReporter(post: (p: OperationProgress) => Promise<void>, opts: { everyMs: number; keepaliveMs: number }): OperationReporter {
  let last = Number.NEGATIVE_INFINITY;
  let latest: OperationProgress | null = null;
  let posted: OperationProgress | null = null;
  /** A post is due but waits for the one in flight. */
  let due = false;
  let inFlight: Promise<void> | null = null;
  let keepalive: NodeJS.Timeout | null = null;
  const pump = (): void => {
    if (inFlight !== null || !due || latest === null) return;
    due = false;
    const p = latest;
    posted = p;
    inFlight = post(p).catch(() => undefined).finally(() => {
      inFlight = null;
      pump();
    });
  };
  return {
    update(phase, t) {
      latest = {
        phase, bytesDone: t.bytesDone, bytesTotal: t.bytesTotal, bytesOnWire: t.bytesOnWire, bytesSaved: t.bytesSaved,
        rateBytesPerSec: t.rateBytesPerSec, etaSeconds: t.etaSeconds,
      };
      const now = performance.now();
      if (now - last >= opts.everyMs || t.phase === 'done') {
        last = now;
        due = true;
        pump();
      }
      keepalive ??= setInterval(() => {
        due = true;
        pump();
      }, opts.keepaliveMs).unref();
    },
    async flush() {
      if (keepalive !== null) clearInterval(keepalive);
      keepalive = null;
      if (latest !== posted) due = true;
      pump();
      while (inFlight !== null) await inFlight;
    },
  };
}
