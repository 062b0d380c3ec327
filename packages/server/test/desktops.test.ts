import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EngineError } from './fakes.ts';
import { createTestApp, errorCode, type TestApp } from './harness.ts';

type DesktopBody = { desktop: { id: string; name: string; owner: string; image: string; state: string; location: string; memoryMiB: number; cpus: number; kernel: string | null; leaseGeneration: number } };
type EventsBody = { events: Array<{ action: string; target: string | null; desktop: string | null; result: string; actor: string | null; detail: Record<string, unknown> }> };

describe('desktops', () => {
  let t: TestApp;
  let hana: string;
  let ivan: string;
  let kernel: string;
  before(async () => {
    t = await createTestApp({ stopTimeoutMs: 1234 });
    hana = await t.createUser('hana');
    ivan = await t.createUser('ivan');
    assert.equal((await t.importImage('base')).statusCode, 201);
    kernel = join(t.dir, 'vmlinuz');
    await writeFile(kernel, 'kernel');
  });
  after(() => t.close());

  it('creates a desktop with defaults and with boot config', async () => {
    const r = await t.createDesktop('hana-1', 'hana', 'base');
    assert.equal(r.statusCode, 201, r.body);
    const { desktop } = r.json<DesktopBody>();
    assert.equal(desktop.state, 'stopped');
    assert.equal(desktop.location, 'server');
    assert.equal(desktop.memoryMiB, 1024);
    assert.equal(desktop.cpus, 1);
    assert.equal(desktop.leaseGeneration, 1);
    assert.equal(desktop.owner, 'hana');
    assert.equal(desktop.image, 'base');
    const withKernel = await t.createDesktop('ivan-1', 'ivan', 'base', { memoryMiB: 256, cpus: 2, kernel, initrd: kernel, append: 'console=ttyS0' });
    assert.equal(withKernel.statusCode, 201, withKernel.body);
    assert.equal(withKernel.json<DesktopBody>().desktop.kernel, kernel);
    const row = await t.db.selectFrom('desktops').select(['overlay_path', 'top_object_id', 'image_id']).where('name', '=', 'ivan-1').executeTakeFirstOrThrow();
    assert.equal(row.overlay_path, null, 'the overlay is created at first start');
    assert.equal(row.top_object_id, row.image_id);
  });

  it('validates ranges, references and paths', async () => {
    const cases: Array<[Record<string, unknown>, number, string]> = [
      [{ memoryMiB: 63 }, 400, 'VALIDATION_FAILED'],
      [{ memoryMiB: 65537 }, 400, 'VALIDATION_FAILED'],
      [{ memoryMiB: 512.5 }, 400, 'VALIDATION_FAILED'],
      [{ cpus: 0 }, 400, 'VALIDATION_FAILED'],
      [{ cpus: 65 }, 400, 'VALIDATION_FAILED'],
      [{ kernel: 'vmlinuz' }, 400, 'VALIDATION_FAILED'],
      [{ kernel: '/nonexistent/vmlinuz' }, 400, 'INVALID_PATH'],
      [{ kernel: t.dir }, 400, 'INVALID_PATH'],
      [{ initrd: kernel }, 400, 'VALIDATION_FAILED'],
      [{ append: 'a\nb' }, 400, 'VALIDATION_FAILED'],
      [{ image: 'nope' }, 404, 'NOT_FOUND'],
      [{ owner: 'nope' }, 404, 'NOT_FOUND'],
      [{ unknown: 1 }, 400, 'VALIDATION_FAILED'],
    ];
    for (const [extra, status, code] of cases) {
      const r = await t.request('POST', '/api/v1/desktops', { token: t.adminToken, body: { name: 'v', owner: 'hana', image: 'base', ...extra } });
      assert.equal(r.statusCode, status, JSON.stringify(extra));
      assert.equal(errorCode(r), code, JSON.stringify(extra));
    }
    const dup = await t.createDesktop('hana-1', 'hana', 'base');
    assert.equal(dup.statusCode, 409);
    assert.equal(errorCode(dup), 'CONFLICT');
  });

  it('lists own desktops for users and all for admins', async () => {
    const names = async (token: string) => (await t.request('GET', '/api/v1/desktops', { token })).json<{ desktops: Array<{ name: string }> }>().desktops.map((d) => d.name);
    assert.deepEqual(await names(hana), ['hana-1']);
    assert.deepEqual(await names(ivan), ['ivan-1']);
    assert.deepEqual(await names(t.adminToken), ['hana-1', 'ivan-1']);
    assert.equal((await t.request('GET', '/api/v1/desktops/hana-1', { token: hana })).statusCode, 200);
  });

  it('starts, stops and restarts through the runtime, refusing wrong states', async () => {
    const start = await t.request('POST', '/api/v1/desktops/hana-1/start', { token: hana });
    assert.equal(start.statusCode, 200, start.body);
    assert.equal(start.json<DesktopBody>().desktop.state, 'running');
    const id = start.json<DesktopBody>().desktop.id;
    assert.ok(t.runtime.running.has(id));
    const running = t.runtime.running.get(id);
    assert.equal(running?.runDir, join(t.dir, 'vms', id));
    // A store overlay (sealable by link), recorded relative to the data dir before the VM runs.
    assert.match(running?.overlayPath ?? '', new RegExp(`^${join(t.dir, 'store', 'objects')}/overlay-desktop-[0-9a-f]{8}-[0-9a-f]{16}\\.qcow2$`));
    const row = await t.db.selectFrom('desktops').select('overlay_path').where('id', '=', id).executeTakeFirstOrThrow();
    assert.equal(row.overlay_path === null ? null : join(t.dir, row.overlay_path), running?.overlayPath);

    const again = await t.request('POST', '/api/v1/desktops/hana-1/start', { token: hana });
    assert.equal(again.statusCode, 409);
    assert.equal(errorCode(again), 'DESKTOP_RUNNING');

    const restart = await t.request('POST', '/api/v1/desktops/hana-1/restart', { token: hana });
    assert.equal(restart.statusCode, 200);
    assert.deepEqual(t.runtime.calls.slice(-3), ['start hana-1', 'stop hana-1 1234', 'start hana-1']);
    // force: no graceful power-down, the runtime gets no time to wait; a malformed flag changes nothing.
    const bad = await t.request('POST', '/api/v1/desktops/hana-1/restart?force=maybe', { token: hana });
    assert.equal(bad.statusCode, 400);
    assert.equal(t.runtime.calls.at(-1), 'start hana-1');
    const forced = await t.request('POST', '/api/v1/desktops/hana-1/restart?force=true', { token: hana });
    assert.equal(forced.statusCode, 200, forced.body);
    assert.deepEqual(t.runtime.calls.slice(-2), ['stop hana-1 0', 'start hana-1']);
    // timeoutSeconds: the guest's time to power off, within 0…3600; anything else is refused and changes nothing.
    for (const q of ['-1', '3601', 'soon', '', '1.5', '1e3']) {
      const refused = await t.request('POST', `/api/v1/desktops/hana-1/restart?timeoutSeconds=${q}`, { token: hana });
      assert.equal(refused.statusCode, 400, `${q}: ${refused.statusCode} ${refused.body} ${t.runtime.calls.slice(-2).join(',')}`);
    }
    assert.equal(t.runtime.calls.at(-1), 'start hana-1');
    const patient = await t.request('POST', '/api/v1/desktops/hana-1/restart?timeoutSeconds=240', { token: hana });
    assert.equal(patient.statusCode, 200, patient.body);
    assert.deepEqual(t.runtime.calls.slice(-2), ['stop hana-1 240000', 'start hana-1']);

    const stop = await t.request('POST', '/api/v1/desktops/hana-1/stop', { token: hana });
    assert.equal(stop.json<DesktopBody>().desktop.state, 'stopped');
    assert.ok(!t.runtime.running.has(id));
    const stopAgain = await t.request('POST', '/api/v1/desktops/hana-1/stop', { token: hana });
    assert.equal(stopAgain.statusCode, 409);
    assert.equal(errorCode(stopAgain), 'DESKTOP_NOT_RUNNING');
    assert.equal(errorCode(await t.request('POST', '/api/v1/desktops/hana-1/restart', { token: hana })), 'DESKTOP_NOT_RUNNING');
  });

  it('a VM a disk error paused: the API shows why; stop and restart are refused unless forced; start resumes it (or says there is no room)', async () => {
    assert.equal((await t.createDesktop('hana-paused', 'hana', 'base')).statusCode, 201);
    const start = await t.request('POST', '/api/v1/desktops/hana-paused/start', { token: hana });
    const id = start.json<DesktopBody>().desktop.id;
    const since = '2026-12-02T10:00:00.000Z';
    t.runtime.pauses.set(id, { reason: 'no-space', since });
    type Paused = { desktop: { state: string; paused?: { reason: string; since: string } } };
    const shown = await t.request('GET', '/api/v1/desktops/hana-paused', { token: hana });
    assert.deepEqual([shown.json<Paused>().desktop.state, shown.json<Paused>().desktop.paused], ['running', { reason: 'no-space', since }]);
    const listed = (await t.request('GET', '/api/v1/desktops', { token: hana })).json<{ desktops: Array<{ name: string; paused?: unknown }> }>().desktops;
    assert.deepEqual(listed.find((d) => d.name === 'hana-paused')?.paused, { reason: 'no-space', since });
    assert.equal(listed.find((d) => d.name === 'hana-1')?.paused, undefined);
    // A graceful stop would wait for a guest that cannot run, then lose its pending writes: refused, nothing changes.
    const calls = t.runtime.calls.length;
    for (const verb of ['stop', 'restart', 'stop?timeoutSeconds=30']) {
      const refused = await t.request('POST', `/api/v1/desktops/hana-paused/${verb}`, { token: hana });
      assert.equal(refused.statusCode, 409, `${verb}: ${refused.body}`);
      assert.equal(errorCode(refused), 'DESKTOP_PAUSED');
      assert.match(refused.json<{ error: { data: { hint: string } } }>().error.data.hint, /resumes by itself/);
    }
    assert.equal(t.runtime.calls.length, calls);
    // Still no room: the runtime refuses the resume, the answer says so (507), the desktop stays running and paused.
    t.runtime.failResume = new EngineError('NO_SPACE', 'the disk has 1.0 MB free');
    const full = await t.request('POST', '/api/v1/desktops/hana-paused/start', { token: hana });
    assert.equal(full.statusCode, 507, full.body);
    assert.equal(errorCode(full), 'NO_SPACE');
    t.runtime.failResume = undefined;
    const resumed = await t.request('POST', '/api/v1/desktops/hana-paused/start', { token: hana });
    assert.equal(resumed.statusCode, 200, resumed.body);
    assert.deepEqual([resumed.json<Paused>().desktop.state, resumed.json<Paused>().desktop.paused], ['running', undefined]);
    assert.deepEqual(t.runtime.calls.slice(-2), ['resume hana-paused', 'resume hana-paused']);
    // Forced, a paused VM stops (a power cut for the guest): the way out of a disk that cannot be fixed.
    t.runtime.pauses.set(id, { reason: 'disk-error', since });
    const forced = await t.request('POST', '/api/v1/desktops/hana-paused/stop?force=true', { token: hana });
    assert.equal(forced.json<Paused>().desktop.state, 'stopped', forced.body);
  });

  it('two concurrent starts: exactly one wins', async () => {
    const [a, b] = await Promise.all([
      t.request('POST', '/api/v1/desktops/ivan-1/start', { token: ivan }),
      t.request('POST', '/api/v1/desktops/ivan-1/start', { token: ivan }),
    ]);
    assert.deepEqual([a.statusCode, b.statusCode].sort(), [200, 409]);
    assert.equal((await t.request('POST', '/api/v1/desktops/ivan-1/stop', { token: ivan })).statusCode, 200);
  });

  it('a runtime failure leaves the desktop in error, answers with a code, and is logged as an event', async () => {
    t.runtime.failStart = new Error('qemu exploded at /var/secret');
    const r = await t.request('POST', '/api/v1/desktops/hana-1/start', { token: hana });
    assert.equal(r.statusCode, 500);
    assert.equal(errorCode(r), 'RUNTIME_FAILED');
    assert.ok(!r.body.includes('/var/secret'));
    assert.equal((await t.request('GET', '/api/v1/desktops/hana-1', { token: hana })).json<DesktopBody>().desktop.state, 'error');

    t.runtime.failStart = new EngineError('QMP_ERR_TIMEOUT', 'no greeting', { ms: 5000 });
    const qmp = await t.request('POST', '/api/v1/desktops/hana-1/start', { token: hana });
    assert.equal(qmp.statusCode, 502);
    assert.equal(errorCode(qmp), 'QMP_ERR_TIMEOUT');

    // From error, start works again.
    assert.equal((await t.request('POST', '/api/v1/desktops/hana-1/start', { token: hana })).statusCode, 200);
    assert.equal((await t.request('POST', '/api/v1/desktops/hana-1/stop', { token: hana })).statusCode, 200);
  });

  it('serves the serial log with ?tail and exports the chain while stopped', async () => {
    const log = await t.request('GET', '/api/v1/desktops/hana-1/log?tail=7', { token: hana });
    assert.equal(log.statusCode, 200);
    assert.match(String(log.headers['content-type']), /^text\/plain/);
    assert.equal(log.body, 'login: ');
    assert.equal((await t.request('GET', '/api/v1/desktops/hana-1/log?tail=0', { token: hana })).statusCode, 400);
    assert.equal((await t.request('GET', '/api/v1/desktops/hana-1/log?tail=abc', { token: hana })).statusCode, 400);

    const exp = await t.request('GET', '/api/v1/desktops/hana-1/export', { token: hana });
    assert.equal(exp.statusCode, 200);
    assert.equal(exp.headers['content-disposition'], 'attachment; filename="hana-1.qcow2"');
    assert.match(exp.body, /chain of hana-1/);

    await t.request('POST', '/api/v1/desktops/hana-1/start', { token: hana });
    const busy = await t.request('GET', '/api/v1/desktops/hana-1/export', { token: hana });
    assert.equal(busy.statusCode, 409);
    assert.equal(errorCode(busy), 'DESKTOP_RUNNING');
  });

  it('deletes only stopped desktops, removing their files through the runtime', async () => {
    const running = await t.request('DELETE', '/api/v1/desktops/hana-1', { token: t.adminToken });
    assert.equal(running.statusCode, 409);
    assert.equal(errorCode(running), 'DESKTOP_RUNNING');
    await t.request('POST', '/api/v1/desktops/hana-1/stop', { token: hana });
    const id = (await t.request('GET', '/api/v1/desktops/hana-1', { token: hana })).json<DesktopBody>().desktop.id;
    assert.equal((await t.request('DELETE', '/api/v1/desktops/hana-1', { token: t.adminToken })).statusCode, 204);
    assert.deepEqual(t.runtime.removed, [id]);
    assert.equal((await t.request('GET', '/api/v1/desktops/hana-1', { token: t.adminToken })).statusCode, 404);
  });

  it('refuses to start a checked-out desktop', async () => {
    await t.db.updateTable('desktops').set({ location: 'device-1' }).where('name', '=', 'ivan-1').execute();
    const r = await t.request('POST', '/api/v1/desktops/ivan-1/start', { token: ivan });
    assert.equal(r.statusCode, 409);
    assert.equal(errorCode(r), 'CHECKED_OUT');
    assert.equal(errorCode(await t.request('DELETE', '/api/v1/desktops/ivan-1', { token: t.adminToken })), 'CHECKED_OUT');
    await t.db.updateTable('desktops').set({ location: 'server' }).where('name', '=', 'ivan-1').execute();
  });

  it('writes an event for every action, failures included, and filters them by owner and desktop', async () => {
    const all = (await t.request('GET', '/api/v1/events?limit=1000', { token: t.adminToken })).json<EventsBody>().events;
    const starts = all.filter((e) => e.action === 'desktop.start' && e.target === 'hana-1');
    assert.ok(starts.some((e) => e.result === 'ok' && e.actor === 'hana' && e.detail['to'] === 'running'));
    assert.ok(starts.some((e) => e.result === 'error' && (e.detail['error'] as { code: string }).code === 'RUNTIME_FAILED'));
    assert.ok(starts.some((e) => e.result === 'error' && (e.detail['error'] as { code: string }).code === 'DESKTOP_RUNNING'));
    assert.ok(all.some((e) => e.action === 'desktop.stop' && e.result === 'error'));
    assert.ok(all.some((e) => e.action === 'desktop.restart' && e.result === 'ok'));
    assert.ok(all.some((e) => e.action === 'desktop.export' && e.result === 'ok'));
    assert.ok(all.some((e) => e.action === 'desktop.delete' && e.target === 'hana-1' && e.result === 'ok'));
    const created = all.find((e) => e.action === 'desktop.create' && e.target === 'ivan-1' && e.result === 'ok');
    assert.match(created?.desktop ?? '', /^[0-9a-f-]{36}$/);
    // Newest first, ids strictly decreasing.
    const ids = (all as unknown as Array<{ id: number }>).map((e) => e.id);
    assert.deepEqual(ids, [...ids].sort((a, b) => b - a));

    // ivan sees only events of ivan's desktops.
    const mine = (await t.request('GET', '/api/v1/events', { token: ivan })).json<EventsBody>().events;
    assert.ok(mine.length > 0);
    assert.ok(mine.every((e) => e.target === 'ivan-1'));
    const byName = (await t.request('GET', '/api/v1/events?desktop=ivan-1&limit=2', { token: ivan })).json<EventsBody>().events;
    assert.equal(byName.length, 2);
    // Someone else's desktop, or a deleted one, is not found for a user; admins still see deleted history.
    assert.equal((await t.request('GET', '/api/v1/events?desktop=hana-1', { token: ivan })).statusCode, 404);
    const history = (await t.request('GET', '/api/v1/events?desktop=hana-1', { token: t.adminToken })).json<EventsBody>().events;
    assert.ok(history.length > 0 && history.every((e) => e.target === 'hana-1'));
    const page = (await t.request(`GET`, `/api/v1/events?before=${(all[0] as unknown as { id: number }).id}&limit=1`, { token: t.adminToken })).json<EventsBody>().events;
    assert.equal(page.length, 1);
  });
});
