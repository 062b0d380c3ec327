// Live oracle: create fresh images with the installed qemu-img, then compare our parse with its info.
// Skipped, with a message, when qemu-img is not installed.

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';

import { checkUntrustedLayer, parseQcow2Header, QCOW2_MAX_HEADER_BYTES, type Qcow2Header } from '../src/index.ts';
import { describe, it } from 'node:test';
import { assertMatchesQemuInfo, type QemuImgInfo, virtualSizeFromJson } from './helpers/qemu-info.ts';

const probe = spawnSync('qemu-img', ['--version'], { encoding: 'utf8' });
const SKIP = probe.error !== undefined || probe.status !== 0
  ? 'qemu-img not found on PATH: live comparison with qemu-img skipped (install qemu-utils to run it)'
  : null;

const dir = SKIP === null ? mkdtempSync(join(tmpdir(), 'roamdesk-qcow2-')) : '';
after(() => {
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Reads what a caller would: the first QCOW2_MAX_HEADER_BYTES bytes, or the whole file if smaller. */
function readHead(file: string): { bytes: Uint8Array; fileSize: number } {
  const path = join(dir, file);
  const fileSize = statSync(path).size;
  const bytes = new Uint8Array(Math.min(fileSize, QCOW2_MAX_HEADER_BYTES));
  const fd = openSync(path, 'r');
  try {
    readSync(fd, bytes, 0, bytes.length, 0);
  } finally {
    closeSync(fd);
  }
  return { bytes, fileSize };
}

function parseAndCompare(file: string): Qcow2Header {
  const { bytes, fileSize } = readHead(file);
  const header = parseQcow2Header(bytes, { fileSize });
  const text = qemuImg('info', '-f', 'qcow2', '--output=json', file);
  assertMatchesQemuInfo(header, JSON.parse(text) as QemuImgInfo, virtualSizeFromJson(text));
  return header;
}

const create = (file: string, size: string, ...opts: string[]): void => {
  qemuImg('create', '-q', '-f', 'qcow2', ...opts, file, size);
};

const PARENT = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.qcow2';

describe('live qemu-img: fresh images parse as qemu-img info says', () => {
  const cases: [string, string, string[]][] = [
    ['v3', '1M', ['-o', 'compat=1.1']],
    ['v2', '1M', ['-o', 'compat=0.10']],
    ['c512', '3M', ['-o', 'cluster_size=512']],
    ['c4k', '1G', ['-o', 'cluster_size=4k']],
    ['c2m', '10G', ['-o', 'cluster_size=2M']],
    ['rc1', '1M', ['-o', 'refcount_bits=1']],
    ['rc8', '1M', ['-o', 'refcount_bits=8']],
    ['rc64', '1M', ['-o', 'refcount_bits=64']],
    ['lazy', '1M', ['-o', 'lazy_refcounts=on']],
    ['extl2', '5G', ['-o', 'extended_l2=on,cluster_size=128k']],
    ['zstd', '1M', ['-o', 'compression_type=zstd']],
    ['prealloc', '4M', ['-o', 'preallocation=metadata']],
    ['huge', '1E', ['-o', 'cluster_size=2M']],
    ['odd-size', '1000001', []],
    ['empty', '0', []],
  ];
  for (const [name, size, opts] of cases) {
    it(`${name} (${[...opts, size].join(' ')})`, (t) => {
      if (SKIP !== null) return t.skip(SKIP);
      create(`${name}.qcow2`, size, ...opts);
      parseAndCompare(`${name}.qcow2`);
    });
  }

  it('a layer over an id-named parent, and the policy accepts it', (t) => {
    if (SKIP !== null) return t.skip(SKIP);
    create(PARENT, '64M');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', PARENT, '-F', 'qcow2', 'layer.qcow2');
    const h = parseAndCompare('layer.qcow2');
    assert.doesNotThrow(() => checkUntrustedLayer(h, PARENT, { expectedVirtualSize: 64n << 20n }));
  });

  it('after resize, amend to compat=0.10, snapshot and rebase', (t) => {
    if (SKIP !== null) return t.skip(SKIP);
    create('changed.qcow2', '1M');
    qemuImg('resize', '-q', '-f', 'qcow2', 'changed.qcow2', '20G');
    assert.equal(parseAndCompare('changed.qcow2').virtualSize, 20n << 30n);
    qemuImg('amend', '-f', 'qcow2', '-o', 'compat=0.10', 'changed.qcow2');
    assert.equal(parseAndCompare('changed.qcow2').version, 2);
    qemuImg('snapshot', '--image-opts', '-c', 's1', 'driver=qcow2,file.filename=changed.qcow2');
    assert.equal(parseAndCompare('changed.qcow2').nbSnapshots, 1);
    qemuImg('rebase', '-q', '-f', 'qcow2', '-u', '-b', 'other.qcow2', '-F', 'qcow2', 'changed.qcow2');
    assert.equal(parseAndCompare('changed.qcow2').backing?.name, 'other.qcow2');
  });

  it('an external data file', (t) => {
    if (SKIP !== null) return t.skip(SKIP);
    qemuImg('create', '-q', '-f', 'raw', 'data.raw', '1M');
    create('ext.qcow2', '1M', '-o', 'data_file=data.raw,data_file_raw=on');
    assert.equal(parseAndCompare('ext.qcow2').dataFile, 'data.raw');
  });

  it('LUKS encryption', (t) => {
    if (SKIP !== null) return t.skip(SKIP);
    // The LUKS key-derivation benchmark can fail on a busy machine ("Unable to get accurate CPU usage").
    for (let attempt = 1; ; attempt++) {
      try {
        create('luks.qcow2', '1M', '--object', 'secret,id=s0,data=x',
          '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10');
        break;
      } catch (e) {
        if (attempt === 5) throw e;
      }
    }
    assert.equal(parseAndCompare('luks.qcow2').encryption, 'luks');
  });

  describe('hostile layers written by qemu-img itself are refused', () => {
    const hostile: [string, string, string][] = [
      ['abs', '/etc/passwd', 'QCOW2_ERR_BACKING_NAME_MISMATCH'],
      ['dotdot', `../${PARENT}`, 'QCOW2_ERR_BACKING_NAME_MISMATCH'],
      ['json', 'json:{"file.filename":"/etc/passwd"}', 'QCOW2_ERR_BACKING_NAME_MISMATCH'],
      ['nbd', 'nbd://127.0.0.1/x', 'QCOW2_ERR_BACKING_NAME_MISMATCH'],
      ['http', 'http://x/y', 'QCOW2_ERR_BACKING_NAME_MISMATCH'],
    ];
    for (const [name, backing, code] of hostile) {
      it(`${name}: ${backing}`, (t) => {
        if (SKIP !== null) return t.skip(SKIP);
        qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', backing, '-F', 'qcow2', `${name}.qcow2`, '1M');
        const h = parseAndCompare(`${name}.qcow2`);
        assert.equal(h.backing?.name, backing);
        assert.throws(() => checkUntrustedLayer(h, PARENT), { code });
      });
    }
    it('raw backing format', (t) => {
      if (SKIP !== null) return t.skip(SKIP);
      qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', PARENT, '-F', 'raw', 'rawfmt.qcow2', '1M');
      assert.throws(() => checkUntrustedLayer(parseAndCompare('rawfmt.qcow2'), PARENT), { code: 'QCOW2_ERR_BACKING_FORMAT_NOT_QCOW2' });
    });
  });
});
