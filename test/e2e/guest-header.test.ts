/**
 * A guest writes a qcow2 header into its own disk (reliability.md T28): at guest offset 0, a complete qcow2 header
 * whose backing file is a file on the host (by path, and as a `json:` filename). Every layer that later holds those
 * bytes is opened by QEMU and qemu-img with its format given, never probed, so the bytes stay guest data: through
 * the server VM, a check-out, the local VM, a live replication, a check-in (the server's checks of the layer) and
 * the server VM again, the host file is never read, and the guest reads back exactly what it wrote.
 *
 * The host file is a canary whose access time lies before its modification time: on a relatime file system any read
 * of it moves its atime. The test first shows that it does (qemu-img following a backing file to it).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { findGuest, guestAppend, type GuestBuild } from '@roamdesk/cli';
import { DeviceAgent, localSerialLog } from '@roamdesk/client';
import type { ServerHandle } from '@roamdesk/server';

import { tempDir } from '../support/guest-vm.ts';
import { api, boot, createDesktop, killOurs, login, serial, state, until } from '../support/server.ts';

const HEADER_BYTES = 1024;

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

describe('a guest writes a qcow2 header into its own disk (a real guest chain, server and device)', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let h: ServerHandle;
  let token = '';
  let guest: GuestBuild;
  const dataDir = (): string => join(tmp.dir, 'server');
  const home = (): string => join(tmp.dir, 'device');
  const canary = (): string => join(tmp.dir, 'canary.raw');

  /** The canary's atime, after setting it a day before its mtime (so that a read moves it). */
  async function armCanary(): Promise<number> {
    const m = (await stat(canary())).mtimeMs;
    await utimes(canary(), new Date(m - 86_400_000), new Date(m));
    return (await stat(canary())).atimeMs;
  }
  async function untouched(what: string, armed: number): Promise<void> {
    assert.equal((await stat(canary())).atimeMs, armed, `${what}: the host file was read`);
  }

  before(async () => {
    tmp = await tempDir('roamdesk-e2e-guest-header-');
    process.env['ROAMDESK_DISPLAY'] = 'none';
    guest = await findGuest();
    h = await boot(dataDir());
    token = await login(h);
    const img = await api(h, 'POST', '/images', token, { name: 'guest', path: guest.disk, format: 'qcow2' });
    assert.equal(img.statusCode, 201, img.body);
    await writeFile(canary(), Buffer.alloc(1024 * 1024, 0x42));
  });

  after(async () => {
    await h.close();
    await killOurs(dataDir());
    await killOurs(home()).catch(() => undefined);
    await tmp.remove();
  });

  it('the header stays guest data through every step, and the host file it names is never read', async () => {
    // The canary works: qemu-img opening an image whose backing file it is reads it.
    const probe = join(tmp.dir, 'probe.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', canary(), '-F', 'raw', probe]);
    let armed = await armCanary();
    sh('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', probe, canary()]);
    assert.notEqual((await stat(canary())).atimeMs, armed, 'a read of the canary moves its atime');

    // The bytes the guest writes: the first KiB of a real qcow2 image naming the canary, by path and through a json:
    // filename (a prober reads the header and follows its backing name; both fit in the first KiB, which ext4 — the
    // guest's file system on the whole disk — leaves unused, so the guest still boots).
    const headerOf = async (name: string, backing: string): Promise<{ bytes: Buffer; file: string }> => {
      const image = join(tmp.dir, `${name}.qcow2`);
      sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', backing, '-F', 'raw', image, '64M']);
      const bytes = (await readFile(image)).subarray(0, HEADER_BYTES);
      assert.equal(bytes.subarray(0, 4).toString('latin1'), 'QFI\xfb');
      assert.ok(bytes.readBigUInt64BE(8) + BigInt(bytes.readUInt32BE(16)) <= BigInt(HEADER_BYTES), 'the backing name is in the first KiB');
      const file = join(tmp.dir, `${name}.bin`);
      await writeFile(file, bytes);
      return { bytes, file };
    };
    const byPath = await headerOf('by-path', canary());
    const byJson = await headerOf('by-json', `json:{"driver":"raw","file":{"driver":"file","filename":"${canary()}"}}`);
    /** What the guest reads at offset 0 of the chain topped by `top`, with the format given (as Roamdesk opens it). */
    const guestBytes = (top: string): Buffer => {
      const out = join(tmp.dir, 'readback.raw');
      sh('qemu-img', ['dd', '-U', '-f', 'qcow2', '-O', 'raw', `bs=${HEADER_BYTES}`, 'count=1', `if=${top}`, `of=${out}`]);
      return readFileSync(out);
    };
    /** The guest's write at offset 0, made through the qcow2 driver as its own would be (its VM is not running). */
    const guestWrites = (overlay: string, file: string): void => void sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${file} 0 ${HEADER_BYTES}`, overlay]);

    armed = await armCanary();
    const desktopId = await createDesktop(h, token, guest, 'evil', guestAppend(guest, 'idle'));
    const agent = new DeviceAgent({ home: home(), session: { server: h.url, token }, callTimeoutMs: 120_000 });
    await agent.register({ name: 'laptop' });
    await agent.checkout('evil');
    guestWrites((await agent.records.require('evil')).overlay!.path, byPath.file);

    // The local VM boots on it (QEMU opens the chain; the guest mounts its disk), and a live replication seals the
    // layer and sends it: the server parses its header in TypeScript and runs qemu-img check on it before storing it.
    await agent.start('evil');
    await until('the local idle guest', async () => (/ROAMDESK idle/.test(await localSerialLog(home(), desktopId, 1024 * 1024)) ? true : undefined), 120_000);
    const rep = await agent.replicate('evil');
    await untouched('local VM, live seal, replication', armed);
    await agent.stop('evil');
    // The guest writes the json: form over it; the check-in seals that and the server checks and commits it.
    guestWrites((await agent.records.require('evil')).overlay!.path, byJson.file);
    const checkin = await agent.checkin('evil');
    await untouched('check-in', armed);

    // The server VM boots on the checked-in chain.
    assert.equal((await api(h, 'POST', '/desktops/evil/start', token)).statusCode, 200);
    await until('the server idle guest', async () => (/ROAMDESK idle/.test(await serial(h, token, 'evil')) ? true : undefined), 120_000);
    assert.equal((await api(h, 'POST', '/desktops/evil/stop?force=true', token)).statusCode, 200);
    await until('the server VM to stop', async () => ((await state(h, token, 'evil')) === 'stopped' ? true : undefined), 60_000);
    await untouched('server VM', armed);
    // Each layer holds, as guest data, exactly the header the guest wrote.
    const objects = join(dataDir(), 'store', 'objects');
    assert.ok(guestBytes(join(objects, `${rep.top}.qcow2`)).equals(byPath.bytes), 'the replicated layer');
    assert.ok(guestBytes(join(objects, `${checkin.top}.qcow2`)).equals(byJson.bytes), 'the checked-in layer');
    await untouched('reading the layers back', armed);
  });
});
