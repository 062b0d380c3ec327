/**
 * Many devices at once: 20 concurrent downloads of one 256 MiB object from one `roamdesk server`, against a
 * single download in the same run. Every copy is verified (published only after its SHA-256 matched) and
 * compared with qemu-img; the server's peak resident memory is logged after each run (it must not grow with the
 * number of clients or the object's size: the server streams pieces through a bounded set of reused buffers).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import { type ObjectInfo, Store } from '@roamdesk/store';
import { downloadObjects } from '@roamdesk/transfer';

import { peakRssOfPid, startMeter } from './cpu.ts';
import { runCommand } from './exec.ts';
import { assertSameGuest } from './qemu-img.ts';
import { startServer } from './roamdesk.ts';
import type { Scenario } from './scenario.ts';

const OBJECT_MIB = 256;

function fanOut(clients: number): Scenario {
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  let object: ObjectInfo | undefined;
  let source = '';
  const stores: Store[] = [];
  return {
    name: clients === 1 ? 'roamdesk 1 download of 256 MiB' : `roamdesk ${clients} concurrent downloads of 256 MiB`,
    group: 'fan-out',
    description: `${clients} device store(s) fetch the same ${OBJECT_MIB} MiB image at once (compression off); MB/s is the aggregate`,
    async prepare(ctx) {
      const data = join(ctx.runDir, 'server');
      await mkdir(data, { recursive: true });
      source = join(ctx.runDir, 'random.raw');
      await runCommand('sh', ['-c', `head -c ${OBJECT_MIB * 1024 * 1024} /dev/urandom > ${source}`]);
      const store = await Store.open(join(data, 'store'));
      object = await store.importImage(source, { format: 'raw' });
      server = await startServer(data);
      await fetch(`${server.remote.apiBase}/objects/${object.id}/manifest`, { headers: { authorization: `Bearer ${server.remote.token}` } }).then((r) => r.arrayBuffer());
    },
    async setup(ctx) {
      stores.length = 0;
      for (let i = 0; i < clients; i++) stores.push(await Store.open(join(ctx.runDir, `device-${i}`)));
    },
    async run(ctx) {
      if (server === undefined || object === undefined) throw new Error('not prepared');
      const desc = { id: object.id, kind: object.kind, parent: object.parent, size: object.size, virtualSize: object.virtualSize };
      const meter = startMeter({ pids: [server.proc.pid] });
      const reports = await Promise.all(stores.map((store) => downloadObjects({ store, remote: server!.remote, objects: [desc], compression: 'off' })));
      const m = await meter.stop();
      const rss = peakRssOfPid(server.proc.pid) ?? 0;
      ctx.log(`server peak RSS so far ${(rss / 2 ** 20).toFixed(0)} MiB`);
      const bytes = reports.reduce((n, r) => n + r.bytesTransferred, 0);
      const wire = reports.reduce((n, r) => n + r.bytesOnWire, 0);
      return { ...m, bytesWritten: bytes, bytesRead: bytes, bytesOnWire: wire, changedBytes: object.size * clients, counters: { serverPeakRssBytes: rss } };
    },
    async verify() {
      if (object === undefined) return;
      for (const s of stores) {
        if (!(await s.has(object.id))) throw new Error('a device does not hold the object after its download');
      }
      await assertSameGuest(stores[0]!.objectPath(object.id), source, { formatB: 'raw' });
    },
    async dispose() {
      await server?.proc.stop();
    },
  };
}

export function fanOutScenarios(): Scenario[] {
  return [fanOut(1), fanOut(20)];
}
