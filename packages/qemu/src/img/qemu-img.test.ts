// Integration tests against the real qemu-img (skipped when it is not installed), plus fake binaries for the
// failure paths that a real qemu-img cannot be made to take on demand (CPU limit, timeout).
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, open, rm, truncate, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  QemuImgAbortedError, QemuImgFailedError, QemuImgInvalidArgumentError, QemuImgLimitError, QemuImgLockedError,
  QemuImgMissingError, QemuImgNoSpaceError,
} from './errors.ts';
import { QemuImg } from './qemu-img.ts';

const haveQemuImg = spawnSync('qemu-img', ['--version']).status === 0;
const haveQemu = spawnSync('qemu-system-x86_64', ['--version']).status === 0;
const haveQemuIo = spawnSync('qemu-io', ['--version']).status === 0;

async function pokeBytes(path: string, offset: number, bytes: number[]): Promise<void> {
  const fh = await open(path, 'r+');
  try { await fh.write(Uint8Array.from(bytes), 0, bytes.length, offset); } finally { await fh.close(); }
}

describe('QemuImg against qemu-img', { skip: haveQemuImg ? false : 'qemu-img not installed' }, () => {
  let dir = '';
  const img = new QemuImg();
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'qemu-img-test-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  it('create, info, infoChain with a relative backing name', async () => {
    await img.create(join(dir, 'base.qcow2'), { size: 64 << 20 });
    await img.create(join(dir, 'ov.qcow2'), { backing: { name: 'base.qcow2', format: 'qcow2' } });
    const info = await img.info(join(dir, 'ov.qcow2'), { format: 'qcow2' });
    assert.equal(info.virtualSize, 64 << 20);
    assert.equal(info.backingFilename, 'base.qcow2', 'the name is written as given, not made absolute');
    assert.equal(info.backingFormat, 'qcow2');
    assert.equal(info.compat, '1.1');
    const chain = await img.infoChain(join(dir, 'ov.qcow2'), { format: 'qcow2', untrusted: true });
    assert.deepEqual(chain.map((c) => c.backingFilename), ['base.qcow2', null]);
  });

  it('check: ok, corrupted (2), leaks (3), unsupported (63); noBacking skips a missing backing file', async () => {
    const t = join(dir, 't.qcow2');
    await img.create(t, { size: 64 << 20 });
    assert.equal((await img.check(t, { untrusted: true })).status, 'ok');
    // A fresh 64 KiB-cluster image: refcount block at 0x20000, 16-bit entries (qcow2 spec, "Host cluster management").
    const corrupt = join(dir, 'corrupt.qcow2');
    await img.create(corrupt, { size: 64 << 20 });
    await pokeBytes(corrupt, 0x20000, [0, 0]); // refcount of cluster 0 (the header) = 0
    const c = await img.check(corrupt);
    assert.equal(c.status, 'corrupted');
    assert.equal(c.exitCode, 2);
    assert.equal(c.report?.corruptions, 1);
    const leaky = join(dir, 'leaky.qcow2');
    await img.create(leaky, { size: 64 << 20 });
    await truncate(leaky, 0x50000);
    await pokeBytes(leaky, 0x20008, [0, 1]); // refcount 1 for unreferenced cluster 4
    const l = await img.check(leaky);
    assert.equal(l.status, 'leaks');
    assert.equal(l.report?.leaks, 1);
    const fixed = await img.check(leaky, { repair: 'leaks' });
    assert.equal(fixed.report?.leaksFixed, 1);
    assert.equal((await img.check(leaky)).status, 'ok');
    const raw = join(dir, 'r.raw');
    await writeFile(raw, Buffer.alloc(65536));
    assert.equal((await img.check(raw, { format: 'raw' })).status, 'unsupported');

    const orphan = join(dir, 'orphan.qcow2');
    await img.create(orphan, { size: 1 << 20, backing: { name: 'gone.qcow2', format: 'qcow2' }, unsafe: true });
    await assert.rejects(img.check(orphan), (e: unknown) => e instanceof QemuImgFailedError && e.data.exitCode === 1);
    assert.equal((await img.check(orphan, { noBacking: true, untrusted: true })).status, 'ok');
  });

  it('compare, convert with progress, map, measure, rebase, commit', { skip: haveQemuIo ? false : 'qemu-io missing' }, async () => {
    const base = join(dir, 'cb.qcow2');
    const ov = join(dir, 'cov.qcow2');
    await img.create(base, { size: 32 << 20 });
    spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 0 8M', base]);
    await img.create(ov, { backing: { name: 'cb.qcow2', format: 'qcow2' } });
    assert.equal(await img.compare(base, ov), true);
    spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xcd 1M 64k', ov]);
    assert.equal(await img.compare(base, ov), false);
    await assert.rejects(img.compare(base, join(dir, 'nonexistent.qcow2')), QemuImgFailedError);

    const seen: number[] = [];
    const flat = join(dir, 'flat.qcow2');
    await img.convert(ov, flat, { sourceFormat: 'qcow2', onProgress: (p) => seen.push(p.percent) });
    assert.equal(await img.compare(ov, flat, { strict: false }), true);
    assert.equal(seen.at(-1), 100);
    assert.equal((await img.info(flat, { format: 'qcow2' })).backingFilename, null);

    const extents = await img.map(ov);
    assert.ok(extents.some((e) => e.depth === 0 && e.data), 'overlay data at depth 0');
    assert.ok(extents.some((e) => e.depth === 1 && e.data), 'base data at depth 1');
    const m = await img.measure({ path: flat, format: 'qcow2' });
    assert.ok(m.required > 8 << 20 && m.fullyAllocated >= 32 << 20);
    assert.ok((await img.measure({ size: 1 << 30 })).fullyAllocated > 1 << 30);

    // -B: only the difference from the base.
    const delta = join(dir, 'delta.qcow2');
    await img.convert(ov, delta, { sourceFormat: 'qcow2', backing: { name: 'cb.qcow2', format: 'qcow2' } });
    assert.equal(await img.compare(ov, delta), true);
    // rebase unsafe onto a copy of the base, then safe rebase onto nothing (standalone), then commit.
    const base2 = join(dir, 'cb2.qcow2');
    await img.convert(base, base2, { sourceFormat: 'qcow2' });
    await img.rebase(delta, { backing: { name: 'cb2.qcow2', format: 'qcow2' }, unsafe: true });
    assert.equal((await img.info(delta, { format: 'qcow2' })).backingFilename, 'cb2.qcow2');
    assert.equal(await img.compare(ov, delta), true);
    await img.rebase(delta, { backing: null, onProgress: () => undefined });
    assert.equal((await img.info(delta, { format: 'qcow2' })).backingFilename, null);
    assert.equal(await img.compare(ov, delta), true);
    await img.commit(ov);
    assert.equal(await img.compare(base, flat), true, 'the base now holds the overlay data');
  });

  it('forceShare reads an image a running VM holds; without it the error is QEMU_ERR_IMG_LOCKED',
    { skip: haveQemu ? false : 'qemu-system-x86_64 missing' }, async () => {
      const held = join(dir, 'held.qcow2');
      await img.create(held, { size: 16 << 20 });
      let vm: ChildProcess | null = null;
      try {
        vm = spawn('qemu-system-x86_64', ['-machine', 'q35', '-nodefaults', '-display', 'none', '-S',
          '-blockdev', JSON.stringify({ driver: 'qcow2', 'node-name': 'd0', file: { driver: 'file', filename: held } }),
          '-device', 'virtio-blk-pci,drive=d0,id=disk0'], { stdio: 'ignore' });
        // Wait until QEMU has opened (and locked) the image.
        let locked = false;
        for (let i = 0; i < 100 && !locked; i++) {
          await new Promise((r) => setTimeout(r, 50));
          locked = await img.info(held, { format: 'qcow2' }).then(() => false, (e: unknown) => e instanceof QemuImgLockedError);
        }
        assert.ok(locked, 'qemu-img info without -U fails with a typed lock error');
        await assert.rejects(img.check(held), (e: unknown) => e instanceof QemuImgLockedError && e.code === 'QEMU_ERR_IMG_LOCKED');
        assert.equal((await img.info(held, { format: 'qcow2', forceShare: true })).virtualSize, 16 << 20);
        assert.equal((await img.check(held, { forceShare: true, noBacking: true })).status, 'ok');
      } finally {
        if (vm?.pid !== undefined) process.kill(vm.pid, 'SIGKILL');
      }
    });

  it('a too small address space is a QEMU_ERR_IMG_LIMIT (address-space)', async () => {
    const t = join(dir, 'as.qcow2');
    await img.create(t, { size: 1 << 20 });
    await assert.rejects(img.info(t, { format: 'qcow2', limits: { addressSpaceBytes: 16 << 20, cpuSeconds: 5 } }),
      (e: unknown) => e instanceof QemuImgLimitError && e.code === 'QEMU_ERR_IMG_LIMIT' && e.limit === 'address-space');
  });

  it('a full disk is QEMU_ERR_IMG_NO_SPACE, saying what to do (a real 1 MiB tmpfs in a mount namespace of its own)', async () => {
    const src = join(dir, 'random.raw');
    await writeFile(src, randomBytes(4 << 20));
    const small = join(dir, 'small');
    await mkdir(small);
    // qemu-img itself, in a mount namespace (unshare -rm) where `small` is a 1 MiB tmpfs.
    const wrapper = join(dir, 'qemu-img-small-disk');
    await writeFile(wrapper, `#!/bin/sh\nexec unshare -rm sh -c 'mount -t tmpfs -o size=1m tmpfs "$0" && exec qemu-img "$@"' '${small}' "$@"\n`);
    await chmod(wrapper, 0o755);
    await assert.rejects(new QemuImg({ binary: wrapper }).convert(src, join(small, 'out.qcow2'), { sourceFormat: 'raw' }), (e: unknown) =>
      e instanceof QemuImgNoSpaceError && e.code === 'QEMU_ERR_IMG_NO_SPACE' && /disk it writes to is full/.test(e.message)
      && /free space/.test(String(e.data['hint'])));
  });

  it('refuses bad arguments before running anything', async () => {
    await assert.rejects(img.create(join(dir, 'x.qcow2'), { backing: { name: 'json:{}', format: 'qcow2' } }), QemuImgInvalidArgumentError);
  });
});

describe('QemuImg failure paths with fake binaries', () => {
  let dir = '';
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'qemu-img-fake-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  async function fake(name: string, body: string): Promise<string> {
    const p = join(dir, name);
    await writeFile(p, `#!/bin/sh\n${body}\n`);
    await chmod(p, 0o755);
    return p;
  }

  it('missing qemu-img says to install qemu-utils, with and without prlimit', async () => {
    const img = new QemuImg({ binary: join(dir, 'no-such-qemu-img') });
    for (const untrusted of [false, true]) {
      await assert.rejects(img.info('/x', { format: 'qcow2', untrusted }), (e: unknown) =>
        e instanceof QemuImgMissingError && e.code === 'QEMU_ERR_IMG_MISSING' && /qemu-utils/.test(e.message));
    }
    const noPrlimit = new QemuImg({ prlimitBinary: join(dir, 'no-such-prlimit') });
    await assert.rejects(noPrlimit.info('/x', { format: 'qcow2', untrusted: true }), (e: unknown) =>
      e instanceof QemuImgMissingError && /util-linux/.test(e.message));
  });

  it('CPU limit kills a spinning qemu-img: QEMU_ERR_IMG_LIMIT (cpu)', async () => {
    const img = new QemuImg({ binary: await fake('spin', 'while :; do :; done'), untrustedLimits: { addressSpaceBytes: 1 << 30, cpuSeconds: 1 } });
    await assert.rejects(img.info('/x', { format: 'qcow2', untrusted: true }),
      (e: unknown) => e instanceof QemuImgLimitError && e.limit === 'cpu' && e.data.args[0] === 'info');
  });

  it('wall-clock timeout and abort', async () => {
    const img = new QemuImg({ binary: await fake('sleepy', 'exec sleep 30') });
    const t0 = Date.now();
    await assert.rejects(img.info('/x', { format: 'qcow2', timeoutMs: 200 }),
      (e: unknown) => e instanceof QemuImgLimitError && e.limit === 'wall-clock');
    assert.ok(Date.now() - t0 < 5000);
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('user cancelled')), 100);
    await assert.rejects(img.convert('/a', '/b', { sourceFormat: 'raw', signal: ac.signal }), QemuImgAbortedError);
    await assert.rejects(img.convert('/a', '/b', { sourceFormat: 'raw', signal: AbortSignal.abort() }), QemuImgAbortedError);
  });

  it('untrusted runs get one malloc arena (a bounded address space under the limit); trusted runs are left alone', async () => {
    const img = new QemuImg({ binary: await fake('arenas', 'echo "arenas=${MALLOC_ARENA_MAX:-default}" >&2; exit 1') });
    await assert.rejects(img.check('/x', { untrusted: true }), (e: unknown) => e instanceof QemuImgFailedError && /arenas=1\b/.test(e.data.stderrTail));
    await assert.rejects(img.check('/x'), (e: unknown) => e instanceof QemuImgFailedError && /arenas=default/.test(e.data.stderrTail));
  });

  it('exit 1 is QEMU_ERR_IMG_FAILED with a stderr tail; garbage JSON is QEMU_ERR_IMG_BAD_OUTPUT', async () => {
    const img = new QemuImg({ binary: await fake('fails', 'echo "qemu-img: Could not open: boom" >&2; exit 1') });
    await assert.rejects(img.check('/x'), (e: unknown) =>
      e instanceof QemuImgFailedError && e.code === 'QEMU_ERR_IMG_FAILED' && e.data.exitCode === 1 && /boom/.test(e.data.stderrTail));
    const garbage = new QemuImg({ binary: await fake('garbage', 'echo "not json"') });
    await assert.rejects(garbage.info('/x', { format: 'qcow2' }), (e: unknown) =>
      e instanceof Error && (e as { code?: string }).code === 'QEMU_ERR_IMG_BAD_OUTPUT');
  });
});
