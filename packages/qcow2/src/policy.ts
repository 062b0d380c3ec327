// The policy for files that cross a trust boundary (DESIGN.md "Data path rules"; notes/reliability.md §2.1–2.2).
// A layer from a device is attacker-controlled until proven otherwise: before any QEMU tool opens it, its
// parsed header must show nothing that makes QEMU read other host files (backing names that are paths,
// protocols or json: specs; external data files; probed formats), nothing QEMU would repair or refuse
// (dirty, corrupt, unknown incompatible bits) and nothing that costs unbounded memory (huge tables).
// Each rule yields its own error class; checkX throws the first, listXViolations returns them all.

import { QEMU_MAX_L1_ENTRIES, QEMU_MAX_REFTABLE_BYTES } from './constants.ts';
import {
  BackingFormatMissingError, BackingFormatNotQcow2Error, BackingMissingError, BackingNameMismatchError,
  CorruptImageError, DirtyImageError, EncryptedError, ExternalDataFileError, L1TableTooLargeError, type Qcow2PolicyError,
  RefcountTableTooLargeError, SnapshotsPresentError, type Subject, UnexpectedBackingError,
  UnknownIncompatibleFeatureError, VersionNotAllowedError, VirtualSizeMismatchError, VirtualSizeTooLargeError,
} from './errors.ts';
import type { LayerPolicy, Qcow2Header } from './types.ts';

/**
 * Defaults: 16 TiB of virtual disk (far above any desktop, far below what overflows anything), and QEMU's own
 * limits for table sizes (QCOW_MAX_L1_SIZE = 32 MiB of L1, QCOW_MAX_REFTABLE_SIZE = 8 MiB of refcount table,
 * which is 16384 clusters at the smallest cluster size). QEMU's limits also cap any larger policy value.
 */
export const DEFAULT_LAYER_POLICY: LayerPolicy = Object.freeze({
  maxVirtualSize: 16n * 1024n ** 4n,
  maxL1Entries: QEMU_MAX_L1_ENTRIES,
  maxRefcountTableClusters: QEMU_MAX_REFTABLE_BYTES / 512,
  allowSnapshots: false,
});

/** The file names a layer may be told to expect as parent: a plain relative file name, so that the exact
 *  comparison below can never be satisfied by a path, a protocol ("nbd:"), or a "json:" spec. */
const PLAIN_FILE_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$/;

function resolvePolicy(policy: Partial<LayerPolicy> | undefined): LayerPolicy {
  const p: LayerPolicy = { ...DEFAULT_LAYER_POLICY };
  // Copy only defined values: a JavaScript caller's `{ maxVirtualSize: undefined }` must not erase a limit.
  if (policy?.maxVirtualSize !== undefined) p.maxVirtualSize = policy.maxVirtualSize;
  if (policy?.maxL1Entries !== undefined) p.maxL1Entries = policy.maxL1Entries;
  if (policy?.maxRefcountTableClusters !== undefined) p.maxRefcountTableClusters = policy.maxRefcountTableClusters;
  if (policy?.allowSnapshots !== undefined) p.allowSnapshots = policy.allowSnapshots;
  if (policy?.expectedVirtualSize !== undefined) p.expectedVirtualSize = policy.expectedVirtualSize;
  if (policy?.allowLuks !== undefined) p.allowLuks = policy.allowLuks;
  return p;
}

/** Rules shared by layers and images, in the order they are reported. */
function commonViolations(h: Qcow2Header, p: LayerPolicy, subject: Subject): Qcow2PolicyError[] {
  const out: Qcow2PolicyError[] = [];
  // Incompatible bit 1: "any data structure may be corrupt and the image must not be written to".
  if (h.corrupt) out.push(new CorruptImageError(subject));
  // Incompatible bit 0: refcounts may be wrong; QEMU would repair (write) the file on open.
  if (h.dirty) out.push(new DirtyImageError(subject));
  // "An implementation must fail to open an image if an unknown bit is set."
  if (h.unknownIncompatibleFeatures !== 0n) {
    const bits: number[] = [];
    for (let b = 0; b < 64; b++) if ((h.unknownIncompatibleFeatures >> BigInt(b)) & 1n) bits.push(b);
    const names = bits.map((b) => h.featureNames.find((f) => f.kind === 'incompatible' && f.bit === b)?.name ?? '');
    out.push(new UnknownIncompatibleFeatureError(subject, bits, names));
  }
  // Incompatible bit 2 or extension 0x44415441: guest data in another host file (OpenStack CVE-2024-32498).
  if (h.hasExternalDataFile || h.dataFile !== null) out.push(new ExternalDataFileError(subject, h.dataFile));
  if (h.encryption === 'aes' || (h.encryption === 'luks' && p.allowLuks !== true)) {
    out.push(new EncryptedError(subject, h.encryption));
  }
  if (h.virtualSize > p.maxVirtualSize) out.push(new VirtualSizeTooLargeError(subject, h.virtualSize, p.maxVirtualSize));
  if (p.expectedVirtualSize !== undefined && h.virtualSize !== p.expectedVirtualSize) {
    out.push(new VirtualSizeMismatchError(subject, h.virtualSize, p.expectedVirtualSize));
  }
  const maxL1 = Math.min(p.maxL1Entries, QEMU_MAX_L1_ENTRIES);
  if (h.l1Size > maxL1) out.push(new L1TableTooLargeError(subject, h.l1Size, maxL1));
  const reftableBytes = BigInt(h.refcountTableClusters) * BigInt(h.clusterSize);
  if (h.refcountTableClusters > p.maxRefcountTableClusters || reftableBytes > BigInt(QEMU_MAX_REFTABLE_BYTES)) {
    out.push(new RefcountTableTooLargeError(subject, {
      clusters: h.refcountTableClusters, bytes: String(reftableBytes),
      maxClusters: p.maxRefcountTableClusters, maxBytes: QEMU_MAX_REFTABLE_BYTES,
    }));
  }
  if (h.nbSnapshots > 0 && !p.allowSnapshots) out.push(new SnapshotsPresentError(subject, h.nbSnapshots));
  return out;
}

/** Every reason `checkUntrustedLayer` would refuse this layer, in the order it checks them (empty = acceptable). */
export function listUntrustedLayerViolations(
  header: Qcow2Header, expectedParent: string, policy?: Partial<LayerPolicy>,
): Qcow2PolicyError[] {
  if (!PLAIN_FILE_NAME.test(expectedParent)) {
    // A caller bug, not a property of the file: our own parent names are id-based file names.
    throw new RangeError(`expectedParent must be a plain file name such as '<id>.qcow2', got ${JSON.stringify(expectedParent)}`);
  }
  const p = resolvePolicy(policy);
  const out: Qcow2PolicyError[] = [];
  // DESIGN.md: layers are version 3 (feature bits exist, so dirty/corrupt state is visible).
  if (header.version !== 3) out.push(new VersionNotAllowedError('layer', header.version, [3]));
  out.push(...commonViolations(header, p, 'layer'));
  // The backing link is where host-file reads come from (notes/reliability.md §2.1): the format must be
  // recorded as qcow2 (never probed), the name must be byte-for-byte our parent's file name.
  if (header.backing === null) {
    out.push(new BackingMissingError(expectedParent));
  } else {
    if (header.backing.format === null) out.push(new BackingFormatMissingError());
    else if (header.backing.format !== 'qcow2') out.push(new BackingFormatNotQcow2Error(header.backing.format));
    if (header.backing.name !== expectedParent) out.push(new BackingNameMismatchError(header.backing.name, expectedParent));
  }
  return out;
}

/** Every reason `checkImageHeader` would refuse this image (empty = acceptable). */
export function listImageViolations(header: Qcow2Header, policy?: Partial<LayerPolicy>): Qcow2PolicyError[] {
  const p = resolvePolicy(policy);
  const out: Qcow2PolicyError[] = [];
  // Versions 2 and 3 are what the parser returns; an image is the bottom of a chain and may be either.
  out.push(...commonViolations(header, p, 'image'));
  if (header.backing !== null) out.push(new UnexpectedBackingError(header.backing.name, header.backing.format));
  return out;
}

/**
 * DESIGN.md data-path rule for a layer received from a device (untrusted), applied before any QEMU tool
 * opens it. Throws the first violation as its own Qcow2PolicyError subclass; returns when acceptable.
 * `expectedParent` is the parent's id-based file name (e.g. '<sha256>.qcow2'); anything else is a caller
 * bug and throws RangeError.
 */
export function checkUntrustedLayer(header: Qcow2Header, expectedParent: string, policy?: Partial<LayerPolicy>): void {
  const [first] = listUntrustedLayerViolations(header, expectedParent, policy);
  if (first !== undefined) throw first;
}

/**
 * Policy for an image being imported (the bottom of a chain): version 2 or 3, no backing file, no external
 * data file, no encryption, not dirty or corrupt, no unknown incompatible bits, sane sizes.
 */
export function checkImageHeader(header: Qcow2Header, policy?: Partial<LayerPolicy>): void {
  const [first] = listImageViolations(header, policy);
  if (first !== undefined) throw first;
}
