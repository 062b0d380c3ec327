import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { OperationProgress } from '@roamdesk/api';
import type { TransferProgress } from '@roamdesk/transfer';

import { operationReporter } from '../src/device/operation-reporter.ts';

const progress = (bytesDone: number, phase: TransferProgress['phase'] = 'transferring'): TransferProgress => ({
  direction: 'upload', phase, objectId: null, objectIndex: 0, objectCount: 1, bytesDone, bytesTotal: 100, bytesOnWire: bytesDone,
  bytesSaved: 0, rateBytesPerSec: 1, etaSeconds: null, compression: false,
});
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A server whose answers the test releases one by one. */
function slowServer() {
  const posts: OperationProgress[] = [];
  const answers: Array<() => void> = [];
  return {
    posts,
    post: (p: OperationProgress): Promise<void> => {
      posts.push(p);
      return new Promise<void>((r) => answers.push(r));
    },
    answer: async (): Promise<void> => {
      answers.shift()?.();
      await sleep(1);
    },
  };
}

describe('the operation reporter', () => {
  it('one post in flight; when it returns, the newest progress goes next, not a queue of old ones', async () => {
    const s = slowServer();
    const r = operationReporter(s.post, { everyMs: 0, keepaliveMs: 3_600_000 });
    r.update('upload', progress(10));
    r.update('upload', progress(20));
    r.update('upload', progress(30));
    assert.deepEqual(s.posts.map((p) => p.bytesDone), [10], 'the others wait for the one in flight');
    await s.answer();
    assert.deepEqual(s.posts.map((p) => p.bytesDone), [10, 30], 'then the newest');
    const flushed = r.flush();
    await s.answer();
    await flushed;
    assert.deepEqual(s.posts.map((p) => p.bytesDone), [10, 30], 'flush sends nothing already sent');
  });

  it('at most one post per interval, the final one at once, and flush sends the last progress and waits for it', async () => {
    const posts: number[] = [];
    const r = operationReporter((p) => (posts.push(p.bytesDone), Promise.resolve()), { everyMs: 3_600_000, keepaliveMs: 3_600_000 });
    r.update('upload', progress(10));
    r.update('upload', progress(20));
    await sleep(5);
    assert.deepEqual(posts, [10]);
    r.update('upload', progress(100, 'done'));
    await sleep(5);
    assert.deepEqual(posts, [10, 100], 'the end is reported at once');
    r.update('upload', progress(100, 'done'));
    await r.flush();
    assert.deepEqual(posts, [10, 100, 100]);
  });

  it('keeps the operation alive while progress stands still, and stops at flush; a failed post changes nothing', async () => {
    let n = 0;
    const r = operationReporter(() => (++n === 2 ? Promise.reject(new Error('server away')) : Promise.resolve()), { everyMs: 3_600_000, keepaliveMs: 40 });
    r.update('upload', progress(10));
    await sleep(200);
    assert.ok(n >= 3, `${n} posts in 200 ms with a 40 ms keep-alive (one of them failed)`);
    await r.flush();
    const after = n;
    await sleep(120);
    assert.equal(n, after, 'nothing after flush');
  });
});
