/**
 * buildQemuArgs snapshots (test/fixtures/<name>.argv.json) and spec validation.
 * Regenerate the fixtures after an intended change: UPDATE_SNAPSHOTS=1 bash scripts/test.sh packages/qemu/src/args.test.ts
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import { buildQemuArgs } from './args.ts';
import { QemuSpecInvalidError } from './errors.ts';
import { specInRunDir } from './run-paths.ts';
import type { VmSpec } from './spec.ts';

const chain: VmSpec = {
  name: 'desk-42',
  memoryMiB: 2048,
  cpus: 2,
  accel: 'kvm',
  disk: {
    nodes: [
      { nodeName: 'image', path: '/srv/roamdesk/images/3f9a.qcow2' },
      { nodeName: 'layer1', path: '/srv/roamdesk/layers/77c1.qcow2' },
      { nodeName: 'overlay', path: '/srv/roamdesk/desktops/42/overlay, with comma.qcow2' },
    ],
  },
  qmpSocket: '/run/roamdesk/vm/42/qmp.sock',
  vncSocket: '/run/roamdesk/vm/42/vnc.sock',
  serialLog: '/run/roamdesk/vm/42/serial.log',
  pidFile: '/run/roamdesk/vm/42/qemu.pid',
};

const tinyGuest: VmSpec = {
  ...specInRunDir(
    {
      name: 'test-guest',
      memoryMiB: 128,
      cpus: 1,
      accel: 'tcg',
      disk: { nodes: [{ nodeName: 'overlay0', path: '/tmp/t/overlay.qcow2' }], cache: 'unsafe' },
      kernel: { path: '/cache/vmlinuz', initrd: '/cache/initramfs.cpio', append: 'console=ttyS0 quiet feas.mode=write' },
      noReboot: true,
    },
    '/tmp/t/run',
  ),
};

const minimal: VmSpec = {
  name: 'paused',
  memoryMiB: 64,
  cpus: 1,
  accel: 'tcg',
  tcgTbSizeMiB: 16,
  machine: 'pc-i440fx-7.2',
  cpuModel: 'max',
  display: 'gtk',
  vga: 'none',
  startPaused: true,
  disk: { nodes: [{ nodeName: 'd', path: '/x/d.qcow2' }], cache: 'directsync', deviceId: 'vd0' },
  qmpSocket: '/x/qmp.sock',
};

function snapshot(name: string, argv: string[]): void {
  const file = new URL(`../test/fixtures/${name}.argv.json`, import.meta.url);
  const text = `${JSON.stringify(argv, null, 2)}\n`;
  if (process.env['UPDATE_SNAPSHOTS'] === '1') writeFileSync(file, text);
  assert.ok(existsSync(file), `missing fixture ${file.pathname}: run with UPDATE_SNAPSHOTS=1`);
  assert.deepEqual(argv, JSON.parse(readFileSync(file, 'utf8')));
}

describe('buildQemuArgs snapshots', () => {
  it('server desktop: image + layer + overlay under KVM', () => snapshot('chain-kvm', buildQemuArgs(chain)));
  it('tiny test guest: TCG, direct kernel boot, run-dir paths', () => snapshot('tiny-guest-tcg', buildQemuArgs(tinyGuest)));
  it('minimal paused VM with every default overridden', () => snapshot('minimal-overrides', buildQemuArgs(minimal)));
});

describe('buildQemuArgs disk chain', () => {
  const args = buildQemuArgs(chain);
  const blockdevs = args.flatMap((a, i) => (args[i - 1] === '-blockdev' ? [JSON.parse(a) as Record<string, unknown>] : []));

  it('one qcow2 node per file, bottom → top, with explicit backing and formats', () => {
    assert.deepEqual(
      blockdevs.map((b) => [b['node-name'], b['driver'], b['backing'], b['read-only'], (b['file'] as Record<string, unknown>)['driver']]),
      [
        ['image', 'qcow2', null, true, 'file'],
        ['layer1', 'qcow2', 'image', true, 'file'],
        ['overlay', 'qcow2', 'layer1', false, 'file'],
      ],
    );
  });

  it('keeps commas in disk paths intact (JSON syntax, no option injection)', () => {
    assert.equal((blockdevs[2]!['file'] as Record<string, unknown>)['filename'], '/srv/roamdesk/desktops/42/overlay, with comma.qcow2');
  });

  it('attaches the top node to virtio-blk-pci id disk0', () => {
    const device = JSON.parse(args[args.indexOf('-device') + 1]!) as Record<string, unknown>;
    assert.deepEqual(device, { driver: 'virtio-blk-pci', id: 'disk0', drive: 'overlay', 'write-cache': 'on', werror: 'stop', rerror: 'stop', bootindex: 1 });
  });

  it('pins machine and CPU, and uses only UNIX sockets', () => {
    assert.equal(args[args.indexOf('-machine') + 1], 'pc-q35-7.2');
    assert.equal(args[args.indexOf('-cpu') + 1], 'qemu64');
    assert.equal(args[args.indexOf('-vnc') + 1], 'unix:/run/roamdesk/vm/42/vnc.sock');
    assert.ok(args.includes('-nodefaults') && args.includes('-no-user-config'));
  });

  it('is pure: the same spec gives the same argv, and the spec is not mutated', () => {
    const copy = structuredClone(chain);
    assert.deepEqual(buildQemuArgs(chain), buildQemuArgs(copy));
    assert.deepEqual(copy, chain);
  });
});

describe('VmSpec validation', () => {
  const invalid = (patch: Partial<VmSpec>, field: string, re?: RegExp): void => {
    assert.throws(
      () => buildQemuArgs({ ...chain, ...patch }),
      (err: unknown) => {
        assert.ok(err instanceof QemuSpecInvalidError);
        assert.equal(err.code, 'QEMU_ERR_SPEC_INVALID');
        const problem = err.problems.find((p) => p.field === field);
        assert.ok(problem, `expected a problem for ${field}, got ${err.message}`);
        if (re) assert.match(problem.problem, re);
        return true;
      },
    );
  };
  const node = (nodeName: string, path = '/d/x.qcow2'): VmSpec['disk'] => ({ nodes: [{ nodeName, path }] });

  it('rejects bad names and numbers', () => {
    invalid({ name: 'a,b' }, 'name');
    invalid({ name: '' }, 'name');
    invalid({ memoryMiB: 1.5 }, 'memoryMiB');
    invalid({ cpus: 0 }, 'cpus');
    invalid({ machine: 'q35,accel=kvm' }, 'machine');
    invalid({ cpuModel: 'host,+vmx' }, 'cpuModel');
  });

  it('rejects node names that are not QEMU ids (≤ 31 chars)', () => {
    invalid({ disk: node('1abc') }, 'disk.nodes[0].nodeName');
    invalid({ disk: node('a'.repeat(32)) }, 'disk.nodes[0].nodeName');
    invalid({ disk: node('has space') }, 'disk.nodes[0].nodeName');
    assert.doesNotThrow(() => buildQemuArgs({ ...chain, disk: node(`a${'b'.repeat(30)}`) }));
    invalid({ disk: { nodes: [] } }, 'disk.nodes');
    invalid(
      { disk: { nodes: [{ nodeName: 'a', path: '/a' }, { nodeName: 'a', path: '/b' }] } },
      'disk.nodes[1].nodeName',
      /duplicate/,
    );
  });

  it('requires absolute, normalised paths', () => {
    invalid({ disk: node('a', 'rel/x.qcow2') }, 'disk.nodes[0].path', /absolute/);
    invalid({ disk: node('a', '/d/../etc/x') }, 'disk.nodes[0].path', /normalised/);
    invalid({ disk: node('a', '/d/x\n.qcow2') }, 'disk.nodes[0].path', /control/);
    invalid({ pidFile: 'qemu.pid' }, 'pidFile');
  });

  it('refuses commas in -vnc unix: / -serial / -qmp paths, with a clear message', () => {
    invalid({ vncSocket: '/run/a,b/vnc.sock' }, 'vncSocket', /comma/);
    invalid({ serialLog: '/run/a,b/serial.log' }, 'serialLog', /comma/);
    invalid({ qmpSocket: '/run/a,server=off/qmp.sock' }, 'qmpSocket', /comma/);
  });

  it('refuses socket paths longer than sun_path allows', () => {
    invalid({ qmpSocket: `/${'x'.repeat(120)}/qmp.sock` }, 'qmpSocket', /107 bytes/);
  });

  it('lists every problem at once', () => {
    assert.throws(
      () => buildQemuArgs({ ...chain, name: '!', cpus: -1, vncSocket: 'x' }),
      (err: unknown) => err instanceof QemuSpecInvalidError && err.problems.length === 3,
    );
  });
});
