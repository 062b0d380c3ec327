import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { DeviceAgent, keeperPid, keeperPlan, lockDesktop, lockKeeper, runKeeper, SCHEDULED_REPLICATION, type KeeperEvent, type KeeperPlanInput } from '../src/device/index.ts';

const H = 3_600_000;
const base: KeeperPlanInput = {
  now: 10 * H, replicateEverySeconds: 3600, lastReplicationMs: 9.5 * H, lastHeartbeatMs: 10 * H - 60_000, heartbeatEverySeconds: 300,
  lastFailureMs: null, retrySeconds: 60,
};

describe('the keeper beside a local VM', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'roamdesk-keeper-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('plans a replication once the interval since the last one has passed, and a heartbeat otherwise when one is due', () => {
    assert.deepEqual(keeperPlan(base), { heartbeat: false, replicate: false });
    assert.deepEqual(keeperPlan({ ...base, now: 10.5 * H }), { heartbeat: false, replicate: true }, 'due: a replication (it heartbeats itself)');
    assert.deepEqual(keeperPlan({ ...base, lastHeartbeatMs: 10 * H - 300_000 }), { heartbeat: true, replicate: false }, 'five minutes since the last heartbeat');
    assert.deepEqual(keeperPlan({ ...base, lastHeartbeatMs: null }), { heartbeat: true, replicate: false }, 'the first round heartbeats');
    assert.deepEqual(keeperPlan({ ...base, now: 99 * H, replicateEverySeconds: 0 }), { heartbeat: true, replicate: false }, '0 = no scheduled replication');
  });

  it('retries a failed replication after retrySeconds, or sooner when the policy is more frequent', () => {
    const failed = { ...base, now: 10.5 * H, lastFailureMs: 10.5 * H - 30_000 };
    assert.equal(keeperPlan(failed).replicate, false, '30 s after a failure, retry is 60 s');
    assert.equal(keeperPlan({ ...failed, now: 10.5 * H + 30_000 }).replicate, true);
    assert.equal(keeperPlan({ ...failed, replicateEverySeconds: 20, lastReplicationMs: 0 }).replicate, true, 'a 20 s policy retries after 20 s');
  });

  it('one keeper per desktop, apart from the desktop lock; status finds its pid; a dead one is taken over', async () => {
    const home = join(dir, 'locks');
    assert.equal(await keeperPid(home, 'work'), null);
    const k = await lockKeeper(home, 'work');
    assert.equal(await keeperPid(home, 'work'), process.pid);
    await assert.rejects(lockKeeper(home, 'work'), { code: 'DEVICE_ERR_BUSY', message: /already has a keeper/ });
    const op = await lockDesktop(home, 'work', 'replication');
    await op.release();
    await k.release();
    assert.equal(await keeperPid(home, 'work'), null);
    // A keeper that died without releasing (a pid that has exited).
    const gone = spawn(process.execPath, ['-e', '']);
    const pid = gone.pid!;
    await new Promise((r) => gone.once('exit', r));
    await writeFile(join(home, 'locks', 'keepers', 'work.lock'), JSON.stringify({ pid, what: 'keeper' }));
    assert.equal(await keeperPid(home, 'work'), null);
    await (await lockKeeper(home, 'work')).release();
    await assert.rejects(lockKeeper(home, '../x'), { code: 'DEVICE_ERR_STATE_INVALID' });
  });

  it("a user's command waits for a round of scheduled replication, and for nothing else", async () => {
    const home = join(dir, 'wait');
    const round = await lockDesktop(home, 'work', SCHEDULED_REPLICATION);
    const waited: number[] = [];
    const pending = lockDesktop(home, 'work', 'check-in', { waitForScheduledMs: 60_000, onWait: (h) => waited.push(h.pid) });
    await new Promise((r) => setTimeout(r, 700));
    await round.release();
    await (await pending).release();
    assert.deepEqual(waited, [process.pid], 'told once, naming the keeper');
    const other = await lockDesktop(home, 'work', 'replication');
    await assert.rejects(lockDesktop(home, 'work', 'check-in', { waitForScheduledMs: 60_000 }), { code: 'DEVICE_ERR_BUSY', message: /running replication/ });
    await other.release();
    const again = await lockDesktop(home, 'work', SCHEDULED_REPLICATION);
    await assert.rejects(lockDesktop(home, 'work', 'check-in', { waitForScheduledMs: 0 }), { code: 'DEVICE_ERR_BUSY', message: /scheduled replication/ });
    await again.release();
  });

  it('ends at once, lock released, when the desktop is not checked out here', async () => {
    const home = join(dir, 'empty');
    const events: KeeperEvent[] = [];
    const agent = new DeviceAgent({ home, session: null });
    assert.equal(await runKeeper(agent, 'work', { onEvent: (e) => events.push(e) }), 'not-checked-out');
    assert.deepEqual(events, [{ type: 'stopped', reason: 'not-checked-out' }]);
    assert.equal(await keeperPid(home, 'work'), null);
    await (await lockKeeper(home, 'work')).release();
  });
});
