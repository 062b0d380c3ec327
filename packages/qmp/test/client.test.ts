/** QmpClient against the fake server: recorded QEMU 7.2 transcripts plus scripted edge cases. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  QmpBadReplyError,
  QmpClient,
  QmpDisconnectedError,
  QmpExecuteError,
  QmpGreetingError,
  QmpNegotiationError,
  QmpServerParseError,
  QmpTimeoutError,
  type QmpEvent,
} from '../src/index.ts';
import { duplexPair } from './duplex-pair.ts';
import { FakeQmpServer, loadTranscript } from './fake-qmp-server.ts';

/** A client connected to a fake server that has done the handshake. */
async function connected(opts: { commandTimeoutMs?: number } = {}): Promise<{ client: QmpClient; server: FakeQmpServer }> {
  const [a, b] = duplexPair();
  const server = new FakeQmpServer(b);
  const handshake = server.handshake();
  const client = await QmpClient.fromStream(a, { timeoutMs: 2000, ...opts });
  await handshake;
  return { client, server };
}

describe('QmpClient handshake (qmp-spec 2.2, 4)', () => {
  it('reads the greeting and negotiates without enabling oob', async () => {
    const [a, b] = duplexPair();
    const server = new FakeQmpServer(b);
    const replay = server.replay(loadTranscript('session').slice(0, 3));
    const client = await QmpClient.fromStream(a);
    await replay;
    assert.deepEqual(client.greeting.version.qemu, { major: 7, minor: 2, micro: 22 });
    assert.deepEqual(client.greeting.capabilities, ['oob']);
    assert.equal(client.runstate, 'running');
    assert.deepEqual(server.received[0], { execute: 'qmp_capabilities', id: 'roamdesk#1' });
    await client.close();
  });

  it('fails with QmpNegotiationError when qmp_capabilities is refused', async () => {
    const recorded = loadTranscript('before-negotiation');
    const [a, b] = duplexPair();
    const server = new FakeQmpServer(b);
    // Answer our qmp_capabilities with the error QEMU gave to a bad `enable` list.
    const replay = server.replay([recorded[0]!, recorded[3]!, recorded[4]!]);
    await assert.rejects(QmpClient.fromStream(a), (err: unknown) => {
      assert.ok(err instanceof QmpNegotiationError);
      assert.equal(err.code, 'QMP_ERR_NEGOTIATION');
      assert.equal(err.data['errorClass'], 'GenericError');
      return true;
    });
    await replay;
  });

  it('rejects a first message that is not a greeting', async () => {
    const [a, b] = duplexPair();
    const server = new FakeQmpServer(b);
    server.send({ return: {} });
    await assert.rejects(QmpClient.fromStream(a), (err: unknown) => err instanceof QmpGreetingError && err.code === 'QMP_ERR_BAD_GREETING');
  });

  it('rejects garbage instead of a greeting', async () => {
    const [a, b] = duplexPair();
    new FakeQmpServer(b).sendRaw('SSH-2.0-OpenSSH_9.2\r\n');
    await assert.rejects(QmpClient.fromStream(a), QmpGreetingError);
  });

  it('rejects when the server hangs up before greeting', async () => {
    const [a, b] = duplexPair();
    new FakeQmpServer(b).end();
    await assert.rejects(QmpClient.fromStream(a), QmpGreetingError);
  });

  it('times out when no greeting comes (e.g. another client holds the monitor)', async () => {
    const [a, b] = duplexPair();
    new FakeQmpServer(b);
    const t0 = Date.now();
    await assert.rejects(QmpClient.fromStream(a, { timeoutMs: 100 }), (err: unknown) => {
      assert.ok(err instanceof QmpTimeoutError);
      assert.equal(err.code, 'QMP_ERR_TIMEOUT');
      return true;
    });
    assert.ok(Date.now() - t0 < 1000);
    assert.ok(a.destroyed, 'the stream is released');
  });

  it('honours an abort signal during the handshake', async () => {
    const [a, b] = duplexPair();
    new FakeQmpServer(b);
    const ac = new AbortController();
    const p = QmpClient.fromStream(a, { signal: ac.signal });
    ac.abort(new Error('stop now'));
    await assert.rejects(p, /stop now/);
  });
});

describe('QmpClient execute', () => {
  it('replays a recorded session: status, version, stop/cont with events, quit', async () => {
    const [a, b] = duplexPair();
    const server = new FakeQmpServer(b);
    const replay = server.replay(loadTranscript('session'));
    const client = await QmpClient.fromStream(a);
    const events: string[] = [];
    client.onEvent((e) => events.push(e.event));

    assert.equal((await client.execute('query-status')).status, 'running');
    const version = await client.execute('query-version');
    assert.equal(version.qemu.major, 7);
    assert.match(version.package, /Debian/);

    // QEMU sends STOP *before* the reply to `stop`: wait first, then execute.
    const stopped = client.waitForEvent('STOP', { timeoutMs: 1000 });
    assert.deepEqual(await client.execute('stop'), {});
    const stop = await stopped;
    assert.deepEqual(stop.data, {}, 'missing data becomes {}');
    assert.ok(stop.timestamp.seconds > 1_700_000_000);
    assert.equal((await client.execute('query-status')).status, 'paused');
    await client.execute('cont');
    assert.equal((await client.execute('query-status')).status, 'running');

    const shutdown = client.waitForEvent('SHUTDOWN');
    await client.execute('quit');
    assert.equal((await shutdown).data.reason, 'host-qmp-quit');
    await client.closed;
    await replay;
    assert.deepEqual(events, ['STOP', 'RESUME', 'SHUTDOWN']);
    assert.ok(client.isClosed);
    assert.deepEqual(
      server.received.map((m) => m.id),
      Array.from({ length: 8 }, (_, i) => `roamdesk#${i + 1}`),
      'every command carries a unique id',
    );
  });

  it('turns error replies into QmpExecuteError and stays usable (recorded)', async () => {
    const [a, b] = duplexPair();
    const server = new FakeQmpServer(b);
    const replay = server.replay(loadTranscript('errors'));
    const client = await QmpClient.fromStream(a);

    await assert.rejects(client.executeUntyped('no-such-command'), (err: unknown) => {
      assert.ok(err instanceof QmpExecuteError);
      assert.equal(err.code, 'QMP_ERR_EXECUTE');
      assert.equal(err.command, 'no-such-command');
      assert.equal(err.errorClass, 'CommandNotFound');
      assert.equal(err.data['id'], 'roamdesk#2');
      assert.match(err.message, /no-such-command.*CommandNotFound/);
      return true;
    });
    await assert.rejects(client.execute('blockdev-del', { 'node-name': 'nope' }), {
      errorClass: 'GenericError',
      desc: "Failed to find node with node-name='nope'",
    });
    await assert.rejects(client.executeUntyped('query-status', { bogus: 1 }), { errorClass: 'GenericError' });
    const hmp: string = await client.execute('human-monitor-command', { 'command-line': 'info status' });
    assert.equal(hmp, 'VM status: running\r\n');
    assert.equal((await client.execute('query-status')).running, true);
    await replay;
    await client.close();
  });

  it('matches replies by id when they arrive out of order (qmp-spec 2.3.1)', async () => {
    const { client, server } = await connected();
    const p1 = client.execute('query-status');
    const p2 = client.execute('query-version');
    const p3 = client.execute('human-monitor-command', { 'command-line': 'info version' });
    const cmds = [await server.nextCommand(), await server.nextCommand(), await server.nextCommand()];
    server.send({ return: 'hmp', id: cmds[2]!.id });
    server.send({ return: { qemu: { major: 7, minor: 2, micro: 22 }, package: '' }, id: cmds[1]!.id });
    server.send({ return: { status: 'paused', running: false, singlestep: false }, id: cmds[0]!.id });
    assert.equal((await p1).status, 'paused');
    assert.equal((await p2).qemu.minor, 2);
    assert.equal(await p3, 'hmp');
    await client.close();
  });

  it('delivers events interleaved with replies, in order, in one chunk', async () => {
    const { client, server } = await connected();
    const seen: QmpEvent[] = [];
    client.onEvent((e) => seen.push(e));
    const p = client.execute('system_reset');
    const resetWaiter = client.waitForEvent('RESET');
    const cmd = await server.nextCommand();
    const ts = { seconds: 1, microseconds: 2 };
    server.sendRaw(
      [
        { event: 'RESET', data: { guest: false, reason: 'host-qmp-system-reset' }, timestamp: ts },
        { return: {}, id: cmd.id },
        { event: 'RESUME', timestamp: ts },
      ]
        .map((m) => JSON.stringify(m) + '\r\n')
        .join(''),
    );
    await p;
    assert.equal((await resetWaiter).data.reason, 'host-qmp-system-reset');
    await sleep(10);
    assert.deepEqual(
      seen.map((e) => e.event),
      ['RESET', 'RESUME'],
    );
    await client.close();
  });

  it('drops replies with unknown ids (qmp-spec 2.4)', async () => {
    const { client, server } = await connected();
    const p = client.execute('query-status');
    const cmd = await server.nextCommand();
    server.send({ return: { status: 'bogus' }, id: 'stranger' });
    server.send({ return: {}, id: 42 });
    server.send({ error: { class: 'GenericError', desc: 'not yours' }, id: 'roamdesk#999' });
    server.send({ return: { status: 'running', running: true, singlestep: false }, id: cmd.id });
    assert.equal((await p).status, 'running');
    assert.equal(client.droppedReplies, 3);
    assert.equal(client.runstate, 'running');
    await client.close();
  });

  it('parses lines split across chunks, including a split UTF-8 sequence', async () => {
    const { client, server } = await connected();
    const p = client.execute('human-monitor-command', { 'command-line': 'echo' });
    const cmd = await server.nextCommand();
    const bytes = Buffer.from(`${JSON.stringify({ return: 'naïve ✓', id: cmd.id })}\r\n`, 'utf8');
    for (let i = 0; i < bytes.length; i++) server.sendRaw(bytes.subarray(i, i + 1));
    assert.equal(await p, 'naïve ✓');
    await client.close();
  });

  it('ignores blank lines and unknown message kinds (qmp-spec 5: be liberal)', async () => {
    const { client, server } = await connected();
    const p = client.execute('cont');
    const cmd = await server.nextCommand();
    server.sendRaw('\r\n');
    server.send({ future: 'message kind' });
    server.send({ return: {}, id: cmd.id });
    assert.deepEqual(await p, {});
    await client.close();
  });
});

describe('QmpClient failures', () => {
  it('a garbage line fails every pending call and closes the connection', async () => {
    const { client, server } = await connected();
    const p1 = client.execute('query-status');
    const p2 = client.execute('query-block');
    await server.nextCommand();
    server.sendRaw('this is not json\r\n');
    for (const [p, name] of [
      [p1, 'query-status'],
      [p2, 'query-block'],
    ] as const) {
      await assert.rejects(p, (err: unknown) => {
        assert.ok(err instanceof QmpDisconnectedError);
        assert.equal(err.code, 'QMP_ERR_DISCONNECTED');
        assert.equal(err.data['command'], name);
        assert.ok(err.message.includes(`'${name}'`), err.message);
        assert.ok(err.cause instanceof QmpServerParseError);
        return true;
      });
    }
    await client.closed;
    assert.ok(client.closeReason instanceof QmpServerParseError);
    assert.equal(client.closeReason.code, 'QMP_ERR_SERVER_PARSE');
  });

  it('a reply without id is a protocol error (qmp-spec 2.4.2 NOTE)', async () => {
    const { client, server } = await connected();
    const p = client.execute('query-status');
    await server.nextCommand();
    server.send({ error: { class: 'GenericError', desc: 'JSON parse error' } });
    await assert.rejects(p, (err: unknown) => err instanceof QmpDisconnectedError && err.cause instanceof QmpBadReplyError);
    await client.closed;
    assert.equal((client.closeReason as QmpBadReplyError).code, 'QMP_ERR_BAD_REPLY');
  });

  it('a line over the limit closes the connection instead of buffering forever', async () => {
    const [a, b] = duplexPair();
    const server = new FakeQmpServer(b);
    const handshake = server.handshake();
    const client = await QmpClient.fromStream(a, { maxLineLength: 1000 });
    await handshake;
    server.sendRaw('x'.repeat(2000));
    await client.closed;
    assert.ok(client.closeReason instanceof QmpServerParseError);
  });

  it('on disconnect, every pending call, waiter and iterator ends; later calls fail at once', async () => {
    const { client, server } = await connected();
    const pending = [client.execute('query-status'), client.execute('stop'), client.executeUntyped('x-custom', { a: 1 })];
    const waiter = client.waitForEvent('SHUTDOWN');
    const iterator = client.events();
    const next = iterator.next();
    for (let i = 0; i < 3; i++) await server.nextCommand();
    server.end();
    const results = await Promise.allSettled(pending);
    assert.deepEqual(
      results.map((r) => (r.status === 'rejected' && r.reason instanceof QmpDisconnectedError ? r.reason.data['command'] : r.status)),
      ['query-status', 'stop', 'x-custom'],
    );
    await assert.rejects(waiter, QmpDisconnectedError);
    assert.deepEqual(await next, { value: undefined, done: true });
    await client.closed;
    assert.ok(client.isClosed);
    await assert.rejects(client.execute('cont'), (err: unknown) => err instanceof QmpDisconnectedError && /'cont'.*closed/.test(err.message));
  });

  it('a timeout rejects only that call; its late reply is dropped', async () => {
    const { client, server } = await connected();
    const slow = client.execute('query-status', undefined, { timeoutMs: 50 });
    const slowCmd = await server.nextCommand();
    await assert.rejects(slow, (err: unknown) => {
      assert.ok(err instanceof QmpTimeoutError);
      assert.equal(err.data['command'], 'query-status');
      return true;
    });
    server.send({ return: { status: 'running' }, id: slowCmd.id });
    const fast = client.execute('cont');
    const fastCmd = await server.nextCommand();
    server.send({ return: {}, id: fastCmd.id });
    assert.deepEqual(await fast, {});
    assert.equal(client.droppedReplies, 1);
    await client.close();
  });

  it('applies the client-wide commandTimeoutMs', async () => {
    const { client, server } = await connected({ commandTimeoutMs: 30 });
    const p = client.execute('query-vnc');
    await server.nextCommand();
    await assert.rejects(p, QmpTimeoutError);
    await client.close();
  });

  it('an aborted call rejects with the signal reason', async () => {
    const { client, server } = await connected();
    const ac = new AbortController();
    const p = client.execute('query-migrate', undefined, { signal: ac.signal });
    await server.nextCommand();
    ac.abort(new Error('user gave up'));
    await assert.rejects(p, /user gave up/);
    await client.close();
  });

  it('close() fails pending calls, resolves closed, and ends the stream', async () => {
    const { client, server } = await connected();
    const p = client.execute('query-status');
    await server.nextCommand();
    const closing = client.close();
    await assert.rejects(p, (err: unknown) => err instanceof QmpDisconnectedError && /client closed/.test(err.message));
    await closing;
    assert.equal(client.closeReason, null, 'a clean close has no error reason');
    await sleep(5);
    assert.ok(server.clientEnded);
  });
});

describe('QmpClient events', () => {
  const ts = { seconds: 10, microseconds: 0 };

  it('waitForEvent filters by predicate and times out', async () => {
    const { client, server } = await connected();
    const job = client.waitForEvent('JOB_STATUS_CHANGE', { predicate: (e) => e.data.status === 'concluded' });
    server.send({ event: 'JOB_STATUS_CHANGE', data: { id: 'j1', status: 'running' }, timestamp: ts });
    server.send({ event: 'JOB_STATUS_CHANGE', data: { id: 'j1', status: 'concluded' }, timestamp: ts });
    assert.equal((await job).data.status, 'concluded');
    await assert.rejects(client.waitForEvent('POWERDOWN', { timeoutMs: 30 }), (err: unknown) => err instanceof QmpTimeoutError);
    const ac = new AbortController();
    const aborted = client.waitForEvent('POWERDOWN', { signal: ac.signal });
    ac.abort();
    await assert.rejects(aborted, { name: 'AbortError' });
    await client.close();
  });

  it('does not miss an event that arrives right after waitForEvent is called', async () => {
    const { client, server } = await connected();
    server.send({ event: 'STOP', timestamp: ts });
    // The event is already in flight; registering synchronously is enough.
    const e = await client.waitForEvent('STOP', { timeoutMs: 500 });
    assert.equal(e.event, 'STOP');
    await client.close();
  });

  it('events() yields everything from the call on, and break unsubscribes', async () => {
    const { client, server } = await connected();
    const iterator = client.events();
    for (const event of ['STOP', 'RESUME', 'POWERDOWN']) server.send({ event, timestamp: ts });
    const names: string[] = [];
    for await (const e of iterator) {
      names.push(e.event);
      if (names.length === 3) break;
    }
    assert.deepEqual(names, ['STOP', 'RESUME', 'POWERDOWN']);
    const unsub = client.onEvent(() => {
      throw new Error('must not be called');
    });
    unsub();
    server.send({ event: 'STOP', timestamp: ts });
    await client.waitForEvent('STOP');
    await client.close();
  });

  it('events() drains buffered events, then ends on disconnect', async () => {
    const { client, server } = await connected();
    const iterator = client.events();
    server.send({ event: 'STOP', timestamp: ts });
    server.send({ event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' }, timestamp: ts });
    server.end();
    await client.closed;
    const names: string[] = [];
    for await (const e of iterator) names.push(e.event);
    assert.deepEqual(names, ['STOP', 'SHUTDOWN']);
  });
});
