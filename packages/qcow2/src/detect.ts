// detectImageFormat: which disk image format a file is in, from its first bytes.
// Roamdesk takes only qcow2 and raw. The danger is the other direction: a file we call "raw" is handed to
// QEMU as raw, so any format QEMU (or another tool) would interpret — and that may reference other host
// files (VMDK extents, qcow backing files) — must be recognised and refused, never waved through as raw.
// Signatures are those QEMU's own probes use (block/<driver>.c probe functions).

import { UnsupportedImageFormatError } from './errors.ts';
import type { ImageFormat } from './types.ts';

interface Signature {
  format: string;
  description: string;
  offset: number;
  bytes: readonly number[];
}

const ascii = (s: string): number[] => Array.from(s, (c) => c.charCodeAt(0));

const UNSUPPORTED: readonly Signature[] = [
  { format: 'qed', description: 'QED', offset: 0, bytes: ascii('QED\0') },
  // VMDK: hosted sparse extent "KDMV", ESX "COWD", and a text descriptor that names extent files.
  { format: 'vmdk', description: 'VMDK', offset: 0, bytes: ascii('KDMV') },
  { format: 'vmdk', description: 'VMDK (ESX sparse)', offset: 0, bytes: ascii('COWD') },
  { format: 'vmdk', description: 'VMDK (descriptor)', offset: 0, bytes: ascii('# Disk DescriptorFile') },
  { format: 'vhdx', description: 'VHDX', offset: 0, bytes: ascii('vhdxfile') },
  // VirtualBox: the little-endian signature 0xbeda107f at 0x40 (QEMU's vdi_probe checks only this).
  { format: 'vdi', description: 'VirtualBox VDI', offset: 0x40, bytes: [0x7f, 0x10, 0xda, 0xbe] },
  // VHD/VPC: dynamic disks carry a copy of the "conectix" footer at offset 0. A fixed VHD has its only
  // footer at the end of the file, which the first bytes cannot show: it is raw data plus a footer anyway.
  { format: 'vpc', description: 'VHD (VPC)', offset: 0, bytes: ascii('conectix') },
  { format: 'luks', description: 'LUKS', offset: 0, bytes: [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe] },
  { format: 'parallels', description: 'Parallels', offset: 0, bytes: ascii('WithoutFreeSpace') },
  { format: 'parallels', description: 'Parallels', offset: 0, bytes: ascii('WithouFreSpacExt') },
  { format: 'bochs', description: 'Bochs', offset: 0, bytes: ascii('Bochs Virtual HD Image') },
  { format: 'cloop', description: 'cloop', offset: 0, bytes: ascii('#!/bin/sh\n#V2.0 Format\n') },
];

/** "QFI\xfb", shared by qcow (version 1) and qcow2 (versions 2, 3). */
const QCOW_MAGIC = [0x51, 0x46, 0x49, 0xfb] as const;

function matches(bytes: Uint8Array, sig: { offset: number; bytes: readonly number[] }): boolean {
  if (bytes.length < sig.offset + sig.bytes.length) return false;
  return sig.bytes.every((b, i) => bytes[sig.offset + i] === b);
}

/**
 * Identifies a disk image's format from its first bytes (at least 512, or the whole file if smaller).
 * Known formats other than qcow2 and raw throw UnsupportedImageFormatError; anything unrecognised is 'raw'.
 * Any "QFI\xfb" file other than qcow version 1 is 'qcow2', so parseQcow2Header can report exactly what is
 * wrong with it (a bad version, a truncated header) instead of it being treated as raw data.
 */
export function detectImageFormat(firstBytes: Uint8Array): ImageFormat {
  if (matches(firstBytes, { offset: 0, bytes: QCOW_MAGIC })) {
    const isVersion1 = firstBytes.length >= 8 && firstBytes[4] === 0 && firstBytes[5] === 0 && firstBytes[6] === 0
      && firstBytes[7] === 1;
    if (isVersion1) throw new UnsupportedImageFormatError('qcow', 'qcow version 1');
    return 'qcow2';
  }
  for (const sig of UNSUPPORTED) {
    if (matches(firstBytes, sig)) throw new UnsupportedImageFormatError(sig.format, sig.description);
  }
  return 'raw';
}
