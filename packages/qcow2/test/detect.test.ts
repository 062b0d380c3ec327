// detectImageFormat: qcow2, raw, and the known formats that must never be taken for raw.

import assert from 'node:assert/strict';

import { detectImageFormat, UnsupportedImageFormatError } from '../src/index.ts';
import { baseSpec, writeHeader } from './helpers/header-writer.ts';
import { describe, it } from 'node:test';

function sector(sig: string | number[], offset = 0): Uint8Array {
  const b = new Uint8Array(512);
  b.set(typeof sig === 'string' ? Array.from(sig, (c) => c.charCodeAt(0)) : sig, offset);
  return b;
}

describe('detectImageFormat', () => {
  it('qcow2 versions 2 and 3', () => {
    assert.equal(detectImageFormat(writeHeader(baseSpec())), 'qcow2');
    assert.equal(detectImageFormat(writeHeader(baseSpec({ version: 2 }))), 'qcow2');
  });

  it('any other "QFI\\xfb" version is qcow2, so the parser reports the exact problem', () => {
    assert.equal(detectImageFormat(sector([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 4])), 'qcow2');
    assert.equal(detectImageFormat(new Uint8Array([0x51, 0x46, 0x49, 0xfb])), 'qcow2');
  });

  it('raw: zeroes, an MBR, an empty file, random text', () => {
    assert.equal(detectImageFormat(new Uint8Array(512)), 'raw');
    const mbr = new Uint8Array(512);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    assert.equal(detectImageFormat(mbr), 'raw');
    assert.equal(detectImageFormat(new Uint8Array(0)), 'raw');
    assert.equal(detectImageFormat(sector('hello, world')), 'raw');
  });

  const unsupported: [string, Uint8Array][] = [
    ['qcow', sector([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 1])],
    ['qed', sector('QED\0')],
    ['vmdk', sector('KDMV')],
    ['vmdk', sector('COWD')],
    ['vmdk', sector('# Disk DescriptorFile\nRW 8 FLAT "/etc/shadow" 0\n')],
    ['vhdx', sector('vhdxfile')],
    ['vdi', sector([0x7f, 0x10, 0xda, 0xbe], 0x40)],
    ['vpc', sector('conectix')],
    ['luks', sector([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe, 0, 1])],
    ['parallels', sector('WithoutFreeSpace')],
    ['parallels', sector('WithouFreSpacExt')],
    ['bochs', sector('Bochs Virtual HD Image')],
    ['cloop', sector('#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n')],
  ];
  for (const [format, bytes] of unsupported) {
    it(`refuses ${format}`, () => {
      assert.throws(() => detectImageFormat(bytes), (e: unknown) => {
        assert.ok(e instanceof UnsupportedImageFormatError);
        assert.equal(e.code, 'QCOW2_ERR_UNSUPPORTED_IMAGE_FORMAT');
        assert.equal(e.data.format, format);
        assert.match(e.message, /not supported/);
        return true;
      });
    });
  }
});
