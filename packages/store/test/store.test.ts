// Store against the real qemu-img: import, overlays, seal, chain, export, verify, remove, hostile inputs.
import assert from 'node:assert/strict';
import fsp, { chmod, cp, open, readdir, rm, stat, writeFile, readFile } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { after, before, describe, it, mock } from 'node:test';

import { QemuImg } from '@roamdesk/qemu';

import {
  DiskError, HashMismatchError, ImportFailedError, InvalidObjectIdError, NoSpaceError, ObjectInUseError, ParentMissingError, Store,
  UnsupportedSourceError, type ObjectInfo,
} from '../src/index.ts';
import {
  haveQemuImg, haveQemuIo, mustSh, poke, recordingQemuImg, setIncompatibleBits, sh, sha256File, snapshotDir, tempDir,
} from './helpers.ts';
import { readBackingName, readHeader } from '../src/header-io.ts';

const MiB = 1024 * 1024;

function codeOf(e: unknown): string {
  return String((e as { code?: unknown }).code);
}

describe('Store', { skip: haveQemuImg && haveQemuIo ? false : 'qemu-img / qemu-io not installed' }, () => {
  let dir = '';
  let store: Store;
  let image: ObjectInfo;
  before(async () => {
    dir = await tempDir('store-test-');
    store = await Store.open(join(dir, 'store'));
    mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '64M']);
    mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 2M', join(dir, 'base.qcow2')]);
  });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  it('open() creates the layout and removes stale temp files', async () => {
    const root = join(dir, 'fresh');
    const s = await Store.open(root);
    await writeFile(join(root, 'objects', '.tmp-deadbeef'), 'partial');
    await writeFile(join(root, 'meta', '.tmp-deadbeef'), 'partial');
    await Store.open(root);
    assert.deepEqual(await readdir(join(root, 'objects')), []);
    assert.deepEqual(await readdir(join(root, 'meta')), []);
    assert.deepEqual(await s.list(), []);
  });

  it('importImage (qcow2): id = sha256 of the stored bytes, 0444, idempotent, with progress', async () => {
    let last = 0;
    image = await store.importImage(join(dir, 'base.qcow2'), { onProgress: (p) => { last = p.bytesDone; } });
    assert.equal(image.kind, 'image');
    assert.equal(image.parent, null);
    assert.equal(image.virtualSize, 64 * MiB);
    const path = store.objectPath(image.id);
    assert.equal(await sha256File(path), image.id);
    assert.equal(await sha256File(join(dir, 'base.qcow2')), image.id, 'stored bytes = source bytes');
    assert.equal((await stat(path)).mode & 0o777, 0o444);
    assert.equal(last, image.size);
    const again = await store.importImage(join(dir, 'base.qcow2'));
    assert.deepEqual(again, image);
    assert.deepEqual((await store.list()).map((o) => o.id), [image.id]);
    assert.deepEqual(await store.get(image.id), image);
    assert.equal(await store.has(image.id), true);
    assert.equal(await store.get('f'.repeat(64)), null);
    await assert.rejects(store.get('../x'), InvalidObjectIdError);
  });

  it('importImage (raw): converted to qcow2 by qemu-img, then hashed', async () => {
    const raw = join(dir, 'disk.raw');
    const data = Buffer.alloc(4 * MiB, 0x5a);
    await writeFile(raw, data);
    const info = await store.importImage(raw, { format: 'raw' });
    assert.equal(info.virtualSize, 4 * MiB);
    assert.equal(await sha256File(store.objectPath(info.id)), info.id);
    assert.equal(mustSh('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', raw, store.objectPath(info.id)]).trim(), 'Images are identical.');
    // detection: an unknown first sector is raw too
    const detected = await store.importImage(raw);
    assert.equal(detected.id, info.id);
    await store.remove(info.id);
  });

  it('refuses bad images with typed errors and leaves the store unchanged', async () => {
    const bad = join(dir, 'bad');
    await rm(bad, { recursive: true, force: true });
    mustSh('mkdir', ['-p', bad]);
    const mk = (name: string, args: string[]): string => {
      const p = join(bad, name);
      mustSh('qemu-img', ['create', '-q', ...args.map((a) => a.replace('@', p))]);
      return p;
    };
    const cases: Array<[string, string, (e: unknown) => boolean]> = [];
    const empty = join(bad, 'empty');
    await writeFile(empty, '');
    cases.push(['empty file', empty, (e) => e instanceof UnsupportedSourceError]);
    const truncated = join(bad, 'truncated.qcow2');
    await writeFile(truncated, (await readFile(join(dir, 'base.qcow2'))).subarray(0, 50));
    cases.push(['truncated qcow2', truncated, (e) => codeOf(e).startsWith('QCOW2_ERR_')]);
    cases.push(['backing file', mk('backed.qcow2', ['-f', 'qcow2', '-u', '-b', '/etc/passwd', '-F', 'raw', '@', '64M']), (e) => codeOf(e).startsWith('QCOW2_ERR_')]);
    await writeFile(join(bad, 'data.raw'), '');
    cases.push(['external data file', mk('datafile.qcow2', ['-f', 'qcow2', '-o', `data_file=${join(bad, 'data.raw')}`, '@', '64M']), (e) => codeOf(e).startsWith('QCOW2_ERR_')]);
    const dirty = mk('dirty.qcow2', ['-f', 'qcow2', '@', '64M']);
    await setIncompatibleBits(dirty, 1);
    cases.push(['dirty bit', dirty, (e) => codeOf(e).startsWith('QCOW2_ERR_')]);
    const corrupt = mk('corrupt.qcow2', ['-f', 'qcow2', '@', '64M']);
    await setIncompatibleBits(corrupt, 2);
    cases.push(['corrupt bit', corrupt, (e) => codeOf(e).startsWith('QCOW2_ERR_')]);
    const huge = mk('huge.qcow2', ['-f', 'qcow2', '@', '64M']);
    await poke(huge, 24, [0x40, 0, 0, 0, 0, 0, 0, 0]); // virtual size 2^62
    cases.push(['absurd virtual size', huge, (e) => codeOf(e).startsWith('QCOW2_ERR_')]);
    const luks = join(bad, 'luks.qcow2');
    // qemu-img's LUKS PBKDF benchmark sometimes fails on a busy machine ("Unable to get accurate CPU usage"): retry.
    for (let attempt = 1; ; attempt++) {
      try {
        mustSh('qemu-img', ['create', '-q', '--object', 'secret,id=s0,data=pw', '-f', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=200', luks, '16M']);
        break;
      } catch (e) {
        if (attempt === 5) throw e;
      }
    }
    cases.push(['encryption', luks, (e) => codeOf(e).startsWith('QCOW2_ERR_')]);
    cases.push(['vmdk', mk('x.vmdk', ['-f', 'vmdk', '@', '16M']), (e) => codeOf(e).startsWith('QCOW2_ERR_')]);
    const refcountBroken = mk('refcount.qcow2', ['-f', 'qcow2', '@', '64M']);
    await poke(refcountBroken, 0x20000, [0, 0]); // cluster 0 refcount = 0: qemu-img check exit 2
    cases.push(['qemu-img check: corrupted', refcountBroken, (e) => e instanceof ImportFailedError]);
    cases.push(['a directory', bad, (e) => e instanceof UnsupportedSourceError]);

    const before = await snapshotDir(store.root);
    const listed = await store.list();
    for (const [what, path, isExpected] of cases) {
      await assert.rejects(store.importImage(path), (e: unknown) => {
        assert.ok(isExpected(e), `${what}: unexpected ${String(e)}`);
        return true;
      }, what);
      assert.deepEqual(await snapshotDir(store.root), before, `${what}: store directory unchanged`);
    }
    assert.deepEqual(await store.list(), listed);
    await assert.rejects(store.importImage(join(dir, 'base.qcow2'), { expectedId: 'e'.repeat(64) }), HashMismatchError);
    assert.deepEqual(await snapshotDir(store.root), before);
  });

  it('overlay → seal → chain → export; identical seal dedups; remove refuses dependents', async () => {
    const ov = await store.createOverlay(image.id, { label: 'desk1' });
    assert.equal(mustSh('qemu-img', ['info', '-f', 'qcow2', '--output=json', ov.path]).includes(`"backing-filename": "${image.id}.qcow2"`), true);
    mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xa1 1M 128k', ov.path]);
    const layer = await store.seal(ov);
    assert.equal(layer.kind, 'layer');
    assert.equal(layer.parent, image.id);
    assert.equal(await sha256File(store.objectPath(layer.id)), layer.id);
    await assert.rejects(stat(ov.path), 'the overlay name is gone');
    assert.deepEqual((await store.chain(layer.id)).map((o) => o.id), [image.id, layer.id]);
    sh('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0xa1 1M 128k', store.objectPath(layer.id)]);
    assert.equal(sh('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0xa1 1M 128k', store.objectPath(layer.id)]).stdout.includes('Pattern verification failed'), false);

    const out = join(dir, 'export', 'flat.qcow2');
    mustSh('mkdir', ['-p', join(dir, 'export')]);
    let pct = 0;
    await store.exportChain(layer.id, out, { onProgress: (p) => { pct = p.bytesDone / p.bytesTotal; } });
    assert.equal(pct, 1);
    assert.equal(sh('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', store.objectPath(layer.id), out]).status, 0);
    assert.equal((JSON.parse(mustSh('qemu-img', ['info', '-f', 'qcow2', '--output=json', out])) as Record<string, unknown>)['backing-filename'], undefined);
    assert.deepEqual((await readdir(join(dir, 'export'))), ['flat.qcow2']);

    // Sealing an empty overlay twice gives the same layer (same bytes); the second overlay is dropped. The second
    // seal hashes elsewhere (as a transfer's hashing worker does) while its own pass feeds onData: same id.
    const e1 = await store.createOverlay(layer.id);
    const e2 = await store.createOverlay(layer.id);
    const l1 = await store.seal(e1);
    let seen = 0;
    const offloaded: string[] = [];
    const l2 = await store.seal(e2, {
      onData: (d) => (seen += d.length),
      sha256Offload: async (path, size) => {
        offloaded.push(path);
        assert.equal((await stat(path)).size, size);
        return sha256File(path);
      },
    });
    assert.equal(l1.id, l2.id);
    assert.deepEqual([offloaded, seen], [[e2.path], l2.size]);
    await assert.rejects(stat(e2.path));

    await assert.rejects(store.remove(image.id), (e: unknown) => e instanceof ObjectInUseError && (e.data['dependents'] as string[]).includes(`${layer.id}.qcow2`));
    const pending = await store.createOverlay(l1.id);
    await assert.rejects(store.remove(l1.id), ObjectInUseError, 'an overlay depends on it');
    await rm(pending.path);
    await store.remove(l1.id);
    assert.equal(await store.has(l1.id), false);
    assert.equal((await store.verify()).ok, true);
  });

  it('verify re-hashes everything and reports bad hashes, missing parents, orphans and temp files', async () => {
    const root = join(dir, 'v');
    const s = await Store.open(root);
    const img = await s.importImage(join(dir, 'base.qcow2'));
    const ov = await s.createOverlay(img.id);
    mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xb2 0 64k', ov.path]);
    const layer = await s.seal(ov);
    const clean = await s.verify();
    assert.equal(clean.ok, true, JSON.stringify(clean.problems));
    assert.equal(clean.objects, 2);

    // Flip a data byte of the image (data cluster; header intact).
    const p = s.objectPath(img.id);
    await chmod(p, 0o644);
    const off = (JSON.parse(mustSh('qemu-img', ['map', '-f', 'qcow2', '--output=json', p])) as Array<{ offset: number }>)[0]!.offset;
    await poke(p, off + 100, [0xff]);
    await writeFile(join(root, 'objects', '.tmp-leftover'), 'x');
    await writeFile(join(root, 'objects', 'notes.txt'), 'x');
    await cp(join(dir, 'base.qcow2'), join(root, 'objects', 'overlay-0123456789abcdef.qcow2'));
    await writeFile(join(root, 'meta', `${'9'.repeat(64)}.json`), '{}');
    const r = await s.verify();
    const kinds = r.problems.map((x) => x.kind).sort();
    assert.deepEqual(kinds, ['bad-hash', 'orphan-overlay', 'orphan-sidecar', 'stray-file', 'temp-file']);

    // A layer whose parent vanished.
    const moved = join(dir, 'moved.qcow2');
    await cp(p, moved);
    await rm(p);
    const r2 = await s.verify();
    assert.ok(r2.problems.some((x) => x.kind === 'missing-parent' && x.name === `${layer.id}.qcow2`));
    await assert.rejects(s.chain(layer.id), ParentMissingError);
  });
});

describe('importLayer with hostile layers', { skip: haveQemuImg ? false : 'qemu-img not installed' }, () => {
  let dir = '';
  let store: Store;
  let parent: ObjectInfo;
  let calls: () => Promise<string[]>;
  before(async () => {
    dir = await tempDir('store-layer-');
    const rec = await recordingQemuImg(dir);
    calls = rec.calls;
    store = await Store.open(join(dir, 'store'), { qemuImg: new QemuImg({ binary: rec.binary }) });
    mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '64M']);
    parent = await store.importImage(join(dir, 'base.qcow2'));
  });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  const layer = (name: string, extra: string[], size = '64M'): string => {
    const p = join(dir, name);
    mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', ...extra, p, size]);
    return p;
  };

  it('accepts a well-formed layer, checked by qemu-img with the backing disabled', async () => {
    const good = layer('good.qcow2', ['-u', '-b', `${parent.id}.qcow2`, '-F', 'qcow2']);
    if (haveQemuIo) mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 0 64k', `json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"${good}"}}`]);
    const before = (await calls()).length;
    const info = await store.importLayer(good, parent.id);
    assert.equal(info.parent, parent.id);
    assert.equal(await sha256File(store.objectPath(info.id)), info.id);
    const ran = (await calls()).slice(before);
    assert.equal(ran.length, 1);
    assert.match(ran[0]!, /^check -f qcow2 --output=json json:\{"driver":"qcow2","backing":null/);
    assert.ok(!ran[0]!.includes(good), 'qemu-img checked the temp copy, never the source');
    assert.deepEqual((await store.chain(info.id)).map((o) => o.id), [parent.id, info.id]);
  });

  it('rejects malicious layers before any QEMU tool runs, and publishes nothing', async () => {
    const p = `${parent.id}.qcow2`;
    const cases: Array<[string, string]> = [
      ['backing /etc/passwd', layer('passwd.qcow2', ['-u', '-b', '/etc/passwd', '-F', 'qcow2'])],
      ['backing ../x', layer('dotdot.qcow2', ['-u', '-b', `../${p}`, '-F', 'qcow2'])],
      ['backing json:', layer('json.qcow2', ['-u', '-b', 'json:{"driver":"file","filename":"/etc/passwd"}', '-F', 'qcow2'])],
      ['backing nbd://', layer('nbd.qcow2', ['-u', '-b', 'nbd://127.0.0.1:10809/x', '-F', 'qcow2'])],
      ['backing format raw', layer('raw-fmt.qcow2', ['-u', '-b', p, '-F', 'raw'])],
      ['other parent', layer('other.qcow2', ['-u', '-b', `${'0'.repeat(64)}.qcow2`, '-F', 'qcow2'])],
      ['no backing', layer('standalone.qcow2', [])],
      ['wrong virtual size', layer('size.qcow2', ['-u', '-b', p, '-F', 'qcow2'], '128M')],
    ];
    await writeFile(join(dir, 'd.raw'), '');
    cases.push(['external data file', layer('datafile.qcow2', ['-u', '-b', p, '-F', 'qcow2', '-o', `data_file=${join(dir, 'd.raw')}`])]);
    const dirty = layer('dirty.qcow2', ['-u', '-b', p, '-F', 'qcow2']);
    await setIncompatibleBits(dirty, 1);
    cases.push(['dirty bit', dirty]);
    const v2 = layer('v2.qcow2', ['-u', '-b', p, '-F', 'qcow2', '-o', 'compat=0.10']);
    cases.push(['qcow2 version 2', v2]);

    const before = await snapshotDir(store.root);
    const callsBefore = (await calls()).length;
    for (const [what, path] of cases) {
      await assert.rejects(store.importLayer(path, parent.id), (e: unknown) => {
        assert.match(codeOf(e), /^QCOW2_ERR_/, `${what}: ${String(e)}`);
        return true;
      }, what);
    }
    const raw = join(dir, 'plain.raw');
    await writeFile(raw, Buffer.alloc(65536, 1));
    await assert.rejects(store.importLayer(raw, parent.id), UnsupportedSourceError);
    await assert.rejects(store.importLayer(cases[0]![1], 'f'.repeat(64)), ParentMissingError);
    await assert.rejects(store.importLayer(cases[0]![1], '../../etc'), InvalidObjectIdError);
    assert.deepEqual((await calls()).slice(callsBefore), [], 'no qemu-img call for any hostile layer');
    assert.deepEqual(await snapshotDir(store.root), before, 'nothing published, no temp files left');
  });

  it('a layer whose header is fine but whose metadata is corrupt is refused by qemu-img check, and publishes nothing', async () => {
    const broken = layer('refcount-layer.qcow2', ['-u', '-b', `${parent.id}.qcow2`, '-F', 'qcow2']);
    await poke(broken, 0x20000, [0, 0]); // cluster 0 (the header) has refcount 0: qemu-img check exit 2
    const before = await snapshotDir(store.root);
    const callsBefore = (await calls()).length;
    await assert.rejects(store.importLayer(broken, parent.id), (e: unknown) => e instanceof ImportFailedError && /corrupt/.test(e.message));
    const ran = (await calls()).slice(callsBefore);
    assert.equal(ran.length, 1, 'one qemu-img call: the check');
    assert.match(ran[0]!, /^check /);
    assert.deepEqual(await snapshotDir(store.root), before, 'nothing published, no temp files left');
  });
});

describe('readBackingName (the name field alone, for dependency scans)', { skip: haveQemuImg ? false : 'qemu-img not installed' }, () => {
  it('agrees with the full header parse, finds a name past the first 4 KiB, and says null for anything odd', async () => {
    const dir = await tempDir('roamdesk-backing-');
    try {
      const file = (n: string) => join(dir, n);
      mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', file('base.qcow2'), '16M']);
      mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', file('top.qcow2'), '16M']);
      mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', 'base.qcow2', '-F', 'qcow2', file('v2.qcow2'), '16M']);
      for (const n of ['base.qcow2', 'top.qcow2', 'v2.qcow2']) {
        assert.equal(await readBackingName(file(n)), (await readHeader(file(n))).backing?.name ?? null, n);
      }
      assert.equal(await readBackingName(file('top.qcow2')), 'base.qcow2');

      // The same name moved to byte 5000 (still inside the 64 KiB first cluster).
      await cp(file('top.qcow2'), file('far.qcow2'));
      await poke(file('far.qcow2'), 8, [0, 0, 0, 0, 0, 0, 0x13, 0x88]);
      await poke(file('far.qcow2'), 5000, [...Buffer.from('other.qcow2')]);
      await poke(file('far.qcow2'), 16, [0, 0, 0, 11]);
      assert.equal(await readBackingName(file('far.qcow2')), 'other.qcow2');
      assert.equal((await readHeader(file('far.qcow2'))).backing?.name, 'other.qcow2');

      // With 2 MiB clusters the header may place the name far past the 64 KiB read first: it is read on demand.
      mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', '-b', 'base.qcow2', '-F', 'qcow2', file('big.qcow2'), '16M']);
      await poke(file('big.qcow2'), 8, [0, 0, 0, 0, 0, 0x18, 0, 0]); // 1.5 MiB
      await poke(file('big.qcow2'), 0x180000, [...Buffer.from('other.qcow2')]);
      await poke(file('big.qcow2'), 16, [0, 0, 0, 11]);
      assert.equal((await readHeader(file('big.qcow2'))).backing?.name, 'other.qcow2');
      assert.match(mustSh('qemu-img', ['info', '--output=json', file('big.qcow2')]), /"backing-filename": "other.qcow2"/, 'QEMU reads the same name');

      // Odd inputs: not qcow2, a name longer than the spec allows, a name outside the first cluster.
      await writeFile(file('raw'), Buffer.alloc(8192, 1));
      assert.equal(await readBackingName(file('raw')), null);
      await cp(file('top.qcow2'), file('long.qcow2'));
      await poke(file('long.qcow2'), 16, [0, 0, 4, 0]);
      assert.equal(await readBackingName(file('long.qcow2')), null);
      await cp(file('top.qcow2'), file('outside.qcow2'));
      await poke(file('outside.qcow2'), 8, [0, 0, 0, 0, 0, 1, 0, 0]);
      assert.equal(await readBackingName(file('outside.qcow2')), null);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a full disk under the store', { skip: haveQemuImg ? false : 'qemu-img not installed' }, () => {
  let dir = '';
  before(async () => { dir = await tempDir('store-full-'); });
  after(async () => {
    mock.restoreAll();
    syncBuiltinESMExports();
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses an import the disk cannot hold before copying a byte, and an ENOSPC while copying leaves no temp file', async () => {
    const calls = await recordingQemuImg(dir);
    const store = await Store.open(join(dir, 'store'), { qemuImg: new QemuImg({ binary: calls.binary }) });
    mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'img.qcow2'), '64M']);
    const size = (await stat(join(dir, 'img.qcow2'))).size;
    const before = await snapshotDir(store.root);

    const objects = join(store.root, 'objects');
    const realStatfs = fsp.statfs.bind(fsp);
    mock.method(fsp, 'statfs', (path: string) => (path === objects ? Promise.resolve({ bavail: 1, bsize: 4096 }) : realStatfs(path)));
    syncBuiltinESMExports();
    await assert.rejects(store.importImage(join(dir, 'img.qcow2')), (e: unknown) => e instanceof NoSpaceError
      && e.data['needed'] === size && e.data['free'] === 4096 && /needs [\d.]+ MB in .*objects, which has 0\.0 MB free/.test(e.message));
    mock.restoreAll();
    syncBuiltinESMExports();
    assert.deepEqual(await calls.calls(), [], 'no qemu-img call');
    assert.deepEqual(await snapshotDir(store.root), before, 'nothing written');

    // The space goes while copying (another writer filled the disk).
    const probe = await open(join(dir, 'probe'), 'w');
    await probe.close();
    const proto = Object.getPrototypeOf(probe) as { write: () => Promise<never> };
    mock.method(proto, 'write', () => Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })));
    try {
      await assert.rejects(store.importImage(join(dir, 'img.qcow2')), (e: unknown) => e instanceof NoSpaceError && e.data['errno'] === 'ENOSPC' && typeof e.data['hint'] === 'string');
    } finally {
      mock.restoreAll();
    }
    assert.deepEqual(await snapshotDir(store.root), before, 'the partial copy is gone');
    const info = await store.importImage(join(dir, 'img.qcow2'));
    assert.equal(info.size, size, 'with room, the import works');
  });

  it('an EIO on fsync while importing or sealing (reliability.md T9): refused, nothing published, no temp left, the overlay intact; the next attempt works', async () => {
    const store = await Store.open(join(dir, 'eio'));
    mustSh('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'eio.qcow2'), '32M']);
    const probe = await open(join(dir, 'probe-eio'), 'w');
    await probe.close();
    const proto = Object.getPrototypeOf(probe) as { sync: () => Promise<never>; datasync: () => Promise<never> };
    const eio = (): Promise<never> => Promise.reject(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
    const failing = async <T>(work: () => Promise<T>): Promise<unknown> => {
      mock.method(proto, 'sync', eio);
      mock.method(proto, 'datasync', eio);
      try {
        return await work().then(() => null, (e: unknown) => e);
      } finally {
        mock.restoreAll();
      }
    };
    const empty = await snapshotDir(store.root);
    const isDiskError = (e: unknown): boolean => e instanceof DiskError && e.code === 'STORE_ERR_DISK' && e.data['errno'] === 'EIO' && /disk's health/.test(String(e.data['hint']));
    const e1 = await failing(() => store.importImage(join(dir, 'eio.qcow2')));
    assert.ok(isDiskError(e1), String(e1));
    assert.deepEqual(await snapshotDir(store.root), empty, 'nothing published, no temp file');
    const image = await store.importImage(join(dir, 'eio.qcow2'));

    const ov = await store.createOverlay(image.id);
    mustSh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x3c 0 1M', ov.path]);
    const withOverlay = await snapshotDir(store.root);
    const e2 = await failing(() => store.seal(ov));
    assert.ok(isDiskError(e2), String(e2));
    assert.deepEqual(await snapshotDir(store.root), withOverlay, 'no layer published, the overlay as it was');
    const layer = await store.seal(ov);
    assert.equal(await sha256File(store.objectPath(layer.id)), layer.id);
  });
});
