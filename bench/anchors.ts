/**
 * The machine's physical limits, measured in the same invocation as the scenarios they judge (a shared 2-core VM
 * with a host-cached disk varies by ±30 % from hour to hour: notes/performance.md). T_phys of every scenario comes
 * from these medians:
 * - disk write + fsync: buffered 1 MiB writes, fsync at the end (the bound of every copy);
 * - disk read: the base image, 4 reads of 8 MiB in flight, cold (page cache dropped) and warm;
 * - loopback TCP between two processes: iperf3 when installed, else `dd` into bash's /dev/tcp with a `dd` reading
 *   the accepted socket (tools with large reads, as iperf3); plus, for information only, a Node socket pump into
 *   tcp-sink.ts: Node reads 64 KiB per callback and reaches about a quarter of the tools' speed on these VMs, which is
 *   the ceiling a Node transfer engine starts from.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { open, rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';

import { startMeter } from './cpu.ts';
import { freePort, hasCommand, runCommand, startProcess, waitForPort, type ManagedProcess } from './exec.ts';
import { Rng } from './prng.ts';
import type { AnchorSpeeds, RunResult, Scenario } from './scenario.ts';
import { summarize } from './stats.ts';

const MiB = 1024 * 1024;
const WRITE_CHUNK = MiB;
const READ_CHUNK = 8 * MiB;
const READS_IN_FLIGHT = 4;

export const ANCHOR_WRITE = 'disk write+fsync';
export const ANCHOR_READ_COLD = 'disk read, cold';
export const ANCHOR_READ_WARM = 'disk read, warm';
export const ANCHOR_TCP = 'loopback TCP';
export const ANCHOR_TCP_NODE = 'loopback TCP, Node sockets';

export interface AnchorSizes {
  /** Bytes written by the write+fsync anchor ("a few hundred MiB": enough to pass the disk's cache bursts). */
  readonly writeBytes: number;
  /** Largest read of the base image. */
  readonly readBytes: number;
  /** Bytes pushed through loopback TCP by the tools. */
  readonly tcpBytes: number;
  /** Bytes pushed through loopback TCP by the Node pump (slower: fewer bytes keep the run short). */
  readonly nodeTcpBytes: number;
}

/** Buffers filled once: memory touched for the first time is slow on these VMs and would be measured instead. */
let writeBuffer: Buffer | undefined;
let readBuffers: Buffer[] | undefined;

function getWriteBuffer(): Buffer {
  writeBuffer ??= new Rng('anchors', 'write').bytes(WRITE_CHUNK);
  return writeBuffer;
}

function getReadBuffers(): Buffer[] {
  readBuffers ??= Array.from({ length: READS_IN_FLIGHT }, () => Buffer.alloc(READ_CHUNK, 1));
  return readBuffers;
}

export function anchorScenarios(sizes: AnchorSizes): Scenario[] {
  return [
    writeAnchor(sizes.writeBytes),
    readAnchor('cold', sizes.readBytes),
    readAnchor('warm', sizes.readBytes),
    hasCommand('iperf3') ? iperfAnchor(sizes.tcpBytes) : ddTcpAnchor(sizes.tcpBytes),
    nodeTcpAnchor(sizes.nodeTcpBytes),
  ];
}

function writeAnchor(bytes: number): Scenario {
  return {
    name: ANCHOR_WRITE,
    group: 'anchors',
    description: `${bytes / MiB} MiB in 1 MiB buffered writes, then fsync`,
    cache: 'warm',
    async run(ctx) {
      const buf = getWriteBuffer();
      const path = join(ctx.runDir, 'write-anchor');
      const meter = startMeter();
      const fh = await open(path, 'w');
      try {
        for (let at = 0; at < bytes; at += WRITE_CHUNK) await fh.write(buf, 0, Math.min(WRITE_CHUNK, bytes - at));
        await fh.sync();
      } finally {
        await fh.close();
      }
      const m = await meter.stop();
      await rm(path);
      return { ...m, bytesWritten: bytes, bytesRead: 0, bytesOnWire: 0, changedBytes: bytes };
    },
  };
}

function readAnchor(mode: 'cold' | 'warm', maxBytes: number): Scenario {
  return {
    name: mode === 'cold' ? ANCHOR_READ_COLD : ANCHOR_READ_WARM,
    group: 'anchors',
    description: `sequential read of the base image (at most ${maxBytes / MiB} MiB), ${READS_IN_FLIGHT} × ${READ_CHUNK / MiB} MiB in flight, ${mode}`,
    cache: mode,
    async setup(ctx) {
      if (mode === 'warm') await readFile(ctx.workload.base.path, maxBytes);
    },
    async run(ctx) {
      const meter = startMeter();
      const bytes = await readFile(ctx.workload.base.path, maxBytes);
      const m = await meter.stop();
      return { ...m, bytesWritten: 0, bytesRead: bytes, bytesOnWire: 0, changedBytes: bytes };
    },
  };
}

/** Reads up to `maxBytes` of a file with several positional reads in flight; returns the bytes read. */
async function readFile(path: string, maxBytes: number): Promise<number> {
  const fh = await open(path, 'r');
  try {
    const size = Math.min(maxBytes, (await fh.stat()).size);
    let next = 0;
    const worker = async (buf: Buffer): Promise<void> => {
      for (;;) {
        const at = next;
        next += READ_CHUNK;
        if (at >= size) return;
        await fh.read(buf, 0, Math.min(READ_CHUNK, size - at), at);
      }
    };
    await Promise.all(getReadBuffers().map(worker));
    return size;
  } finally {
    await fh.close();
  }
}

function iperfAnchor(bytes: number): Scenario {
  let server: ManagedProcess | undefined;
  let port = 0;
  return {
    name: ANCHOR_TCP,
    group: 'anchors',
    description: `iperf3, one stream, ${bytes / MiB} MiB`,
    cache: 'warm',
    async setup() {
      port = await freePort();
      server = startProcess('iperf3', ['-s', '-B', '127.0.0.1', '-p', String(port)]);
      await waitForPort(port, 15_000, server);
    },
    async run() {
      if (!server) throw new Error('tcp anchor: no iperf3 server');
      const meter = startMeter({ pids: [server.pid] });
      const r = await runCommand('iperf3', ['-c', '127.0.0.1', '-p', String(port), '-n', String(bytes), '-l', '1M', '-J']);
      const m = await meter.stop();
      const received = (JSON.parse(r.stdout) as { end: { sum_received: { bytes: number; seconds: number } } }).end.sum_received;
      // iperf3's own clock leaves out process start and the control connection: that is the link's speed.
      return { seconds: received.seconds, cpuSeconds: m.cpuSeconds, bytesWritten: 0, bytesRead: 0, bytesOnWire: received.bytes, changedBytes: received.bytes };
    },
    async teardown() {
      await server?.stop();
      server = undefined;
    },
  };
}

/**
 * Without iperf3: bash writes `dd if=/dev/zero` into /dev/tcp/127.0.0.1/PORT; this process accepts the connection
 * (paused, so it never reads) and hands the socket to `dd of=/dev/null` as its stdin. Both ends are plain tools doing
 * 1 MiB reads and writes; timed from the sender's start to the receiver's exit.
 */
function ddTcpAnchor(bytes: number): Scenario {
  let server: Server | undefined;
  return {
    name: ANCHOR_TCP,
    group: 'anchors',
    description: `dd → bash /dev/tcp → dd, ${bytes / MiB} MiB in 1 MiB blocks`,
    cache: 'warm',
    async setup() {
      server = createServer({ pauseOnConnect: true });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
    },
    async run() {
      const address = server?.address();
      if (!server || address === null || typeof address !== 'object') throw new Error('tcp anchor: no listener');
      const accepted = once(server, 'connection') as Promise<[Socket]>;
      const meter = startMeter();
      const sender = spawn('bash', ['-c', `exec dd if=/dev/zero bs=1M count=${bytes / MiB} status=none > /dev/tcp/127.0.0.1/${address.port}`], { stdio: 'ignore' });
      const senderDone = once(sender, 'close') as Promise<[number | null]>;
      const socket = await Promise.race([accepted.then(([s]) => s), senderDone.then(() => undefined)]);
      if (!socket) throw new Error('tcp anchor: the sender exited before it connected');
      const receiver = spawn('dd', ['of=/dev/null', 'bs=1M'], { stdio: [socket, 'ignore', 'pipe'] });
      // dd holds its own copy of the socket; closing ours does not end the connection.
      socket.destroy();
      let report = '';
      receiver.stderr?.setEncoding('utf8').on('data', (t: string) => {
        report += t;
      });
      const [[sendCode], [recvCode]] = await Promise.all([senderDone, once(receiver, 'close') as Promise<[number | null]>]);
      const m = await meter.stop();
      const received = Number(/^(\d+) bytes/m.exec(report)?.[1] ?? NaN);
      if (sendCode !== 0 || recvCode !== 0 || received !== bytes) {
        throw new Error(`tcp anchor: sender ${sendCode}, receiver ${recvCode}, received ${received} of ${bytes} bytes`);
      }
      return { ...m, bytesWritten: 0, bytesRead: 0, bytesOnWire: bytes, changedBytes: bytes };
    },
    async teardown() {
      if (server) await new Promise<void>((r) => server?.close(() => r()));
      server = undefined;
    },
  };
}

function nodeTcpAnchor(bytes: number): Scenario {
  let sink: ManagedProcess | undefined;
  let port = 0;
  return {
    name: ANCHOR_TCP_NODE,
    group: 'anchors',
    description: `(information only) Node socket pump: ${bytes / MiB} MiB in 1 MiB writes to tcp-sink.ts in another process`,
    cache: 'warm',
    async setup() {
      port = await freePort();
      sink = startProcess(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'tcp-sink.ts'), String(port)]);
      await waitForPort(port, 15_000, sink);
    },
    async run() {
      if (!sink) throw new Error('tcp anchor: no sink');
      return pumpRun(port, bytes, sink.pid);
    },
    async teardown() {
      await sink?.stop();
      sink = undefined;
    },
  };
}

async function pumpRun(port: number, bytes: number, sinkPid: number): Promise<RunResult> {
  const buf = getWriteBuffer();
  const meter = startMeter({ pids: [sinkPid] });
  const socket = connect({ port, host: '127.0.0.1', noDelay: true });
  let reply = '';
  socket.setEncoding('utf8').on('data', (s: string) => {
    reply += s;
  });
  const done = new Promise<void>((resolve, reject) => {
    socket.once('end', resolve);
    socket.once('error', reject);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  for (let sent = 0; sent < bytes; sent += buf.length) {
    if (!socket.write(buf.subarray(0, Math.min(buf.length, bytes - sent)))) {
      await new Promise((r) => socket.once('drain', r));
    }
  }
  socket.end();
  await done;
  const m = await meter.stop();
  const received = Number(reply.trim());
  if (received !== bytes) throw new Error(`tcp anchor: sink received ${received} of ${bytes} bytes`);
  return { ...m, bytesWritten: 0, bytesRead: 0, bytesOnWire: bytes, changedBytes: bytes };
}

/** Throughput of one run of an anchor, in bytes/s. */
function throughput(name: string, r: RunResult): number {
  if (name === ANCHOR_WRITE) return r.bytesWritten / r.seconds;
  if (name === ANCHOR_TCP || name === ANCHOR_TCP_NODE) return r.bytesOnWire / r.seconds;
  return r.bytesRead / r.seconds;
}

/** Median throughput of each anchor; undefined when one of the needed anchors has no successful run. */
export function anchorSpeeds(runs: ReadonlyMap<string, readonly RunResult[]>, cacheDropped: boolean): AnchorSpeeds | undefined {
  const median = (name: string): number | undefined => summarize((runs.get(name) ?? []).map((r) => throughput(name, r)))?.median;
  const writeFsync = median(ANCHOR_WRITE);
  const readCold = median(ANCHOR_READ_COLD);
  const readWarm = median(ANCHOR_READ_WARM);
  const loopbackTcp = median(ANCHOR_TCP);
  const loopbackTcpNode = median(ANCHOR_TCP_NODE);
  if (writeFsync === undefined || loopbackTcp === undefined || (readCold ?? readWarm) === undefined) return undefined;
  return {
    writeFsync,
    read: readCold ?? readWarm ?? 0,
    readCold: cacheDropped && readCold !== undefined,
    readWarm: readWarm ?? readCold ?? 0,
    loopbackTcp,
    ...(loopbackTcpNode === undefined ? {} : { loopbackTcpNode }),
  };
}

/** Per-run throughputs of an anchor (for the report's min–max). */
export function anchorThroughputs(name: string, runs: readonly RunResult[]): number[] {
  return runs.map((r) => throughput(name, r));
}
