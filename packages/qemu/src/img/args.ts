/**
 * Pure argv builders for qemu-img. Every builder names the format explicitly (`-f`, `-F`, `-O`): qemu-img(1)
 * probes the format when `-f` is omitted, and probing untrusted bytes is how a raw disk becomes a qcow2 with a
 * host-file backing (CVE-2010-2237 family; see notes/reliability.md §2.1).
 */
import { isAbsolute, resolve } from 'node:path';

import { QemuImgInvalidArgumentError } from './errors.ts';
import type { BackingRef, ImageFormat } from './types.ts';

/** qcow2 spec: "backing_file_size … Must not be longer than 1023 bytes". */
const MAX_BACKING_NAME_BYTES = 1023;

function invalid(message: string, extra: Record<string, unknown> = {}): QemuImgInvalidArgumentError {
  return new QemuImgInvalidArgumentError(message, { args: [], exitCode: null, signal: null, stderrTail: '', ...extra });
}

/**
 * An image path as qemu-img should see it. QEMU treats "proto:rest" as a protocol when a ':' comes before any
 * '/', so "nbd:…" or "json:{…}" in a relative file name would not name a file. An absolute path starts with '/',
 * which rules that out.
 */
export function imagePath(path: string): string {
  if (path.length === 0 || path.includes('\0')) throw invalid('image path is empty or contains NUL', { path });
  return isAbsolute(path) ? path : resolve(path);
}

/**
 * A backing name is written into the header verbatim and resolved by QEMU relative to the image's directory.
 * We only ever write plain relative or absolute file names: no protocol prefixes, no `json:` pseudo-protocol.
 */
export function checkBackingName(name: string): string {
  if (name.length === 0) throw invalid('backing name is empty');
  if (name.includes('\0')) throw invalid('backing name contains NUL', { name });
  if (name.includes(':')) throw invalid(`backing name ${JSON.stringify(name)} contains ':' (protocol or json: name)`, { name });
  if (Buffer.byteLength(name) > MAX_BACKING_NAME_BYTES) throw invalid('backing name longer than 1023 bytes', { name });
  return name;
}

/**
 * A `json:` image spec that opens a qcow2 file WITHOUT its backing chain (`"backing": null`). Used to check
 * untrusted layers: `qemu-img check` otherwise opens the backing file named in the header. In QEMU 7.2
 * `--image-opts …,backing=null` is read as a node name, and `backing=` (empty) works but is deprecated, so
 * the json: form with `-f qcow2` is the supported way.
 */
export function qcow2NoBackingSpec(path: string, opts: { forceShare?: boolean } = {}): string {
  const spec: Record<string, unknown> = {
    driver: 'qcow2',
    backing: null,
    file: { driver: 'file', filename: imagePath(path) },
  };
  if (opts.forceShare === true) spec['force-share'] = true;
  return `json:${JSON.stringify(spec)}`;
}

function positiveInt(value: number, what: string): string {
  if (!Number.isSafeInteger(value) || value <= 0) throw invalid(`${what} must be a positive integer`, { [what]: value });
  return String(value);
}

export interface InfoArgs {
  readonly format: ImageFormat;
  readonly forceShare?: boolean;
  readonly backingChain?: boolean;
}
export function infoArgs(path: string, o: InfoArgs): string[] {
  return [
    'info', '-f', o.format, '--output=json',
    ...(o.forceShare === true ? ['-U'] : []),
    ...(o.backingChain === true ? ['--backing-chain'] : []),
    imagePath(path),
  ];
}

export interface CheckArgs {
  readonly format?: ImageFormat;
  readonly forceShare?: boolean;
  /** Open the image without its backing file (see qcow2NoBackingSpec). qcow2 only. */
  readonly noBacking?: boolean;
  /** qemu-img check -r: repair leaks only, or everything. Not allowed together with forceShare. */
  readonly repair?: 'leaks' | 'all';
}
export function checkArgs(path: string, o: CheckArgs = {}): string[] {
  const format = o.format ?? 'qcow2';
  if (o.repair !== undefined && o.forceShare === true) throw invalid('check: repair needs write access; -U is read-only');
  if (o.noBacking === true && format !== 'qcow2') throw invalid('check: noBacking is for qcow2 only');
  const target = o.noBacking === true ? qcow2NoBackingSpec(path) : imagePath(path);
  return [
    'check', '-f', format, '--output=json',
    ...(o.forceShare === true ? ['-U'] : []),
    ...(o.repair !== undefined ? ['-r', o.repair] : []),
    target,
  ];
}

export interface CreateOptions {
  readonly backing?: BackingRef;
  /** Virtual size in bytes; defaults to the backing file's size (qemu-img then opens the backing file). */
  readonly size?: number;
  readonly clusterSize?: number;
  readonly lazyRefcounts?: boolean;
  /**
   * -u: do not open the backing file (qemu-img(1) create: "the backing file is not opened … size must be
   * specified"). Needed when the backing file is missing or held by a running VM (its lock refuses us).
   */
  readonly unsafe?: boolean;
}
export function createArgs(path: string, o: CreateOptions = {}): string[] {
  if (o.backing === undefined && o.size === undefined) throw invalid('create: a size or a backing file is required');
  if (o.unsafe === true && (o.backing === undefined || o.size === undefined)) throw invalid('create: unsafe needs a backing file and a size');
  // compat=1.1 is qcow2 version 3, the only version our header policy accepts.
  const opts = ['compat=1.1'];
  if (o.clusterSize !== undefined) opts.push(`cluster_size=${positiveInt(o.clusterSize, 'clusterSize')}`);
  if (o.lazyRefcounts !== undefined) opts.push(`lazy_refcounts=${o.lazyRefcounts ? 'on' : 'off'}`);
  return [
    'create', '-q', '-f', 'qcow2',
    ...(o.backing !== undefined ? ['-b', checkBackingName(o.backing.name), '-F', o.backing.format] : []),
    ...(o.unsafe === true ? ['-u'] : []),
    '-o', opts.join(','),
    imagePath(path),
    ...(o.size !== undefined ? [positiveInt(o.size, 'size')] : []),
  ];
}

export interface CompareArgs {
  readonly formatA?: ImageFormat;
  readonly formatB?: ImageFormat;
  /** -s: strict mode, fail on a different image size or allocation state (qemu-img(1) compare). */
  readonly strict?: boolean;
  readonly forceShare?: boolean;
}
export function compareArgs(a: string, b: string, o: CompareArgs = {}): string[] {
  return [
    'compare', '-f', o.formatA ?? 'qcow2', '-F', o.formatB ?? 'qcow2',
    ...(o.strict === true ? ['-s'] : []),
    ...(o.forceShare === true ? ['-U'] : []),
    imagePath(a), imagePath(b),
  ];
}

export interface ConvertArgs {
  readonly sourceFormat: ImageFormat;
  readonly forceShare?: boolean;
  /** -c: compressed clusters in the output. */
  readonly compress?: boolean;
  /** -B: the output gets this backing file and holds only what differs from it. */
  readonly backing?: BackingRef;
  readonly progress?: boolean;
}
export function convertArgs(source: string, dest: string, o: ConvertArgs): string[] {
  return [
    'convert', '-f', o.sourceFormat, '-O', 'qcow2', '-o', 'compat=1.1',
    ...(o.forceShare === true ? ['-U'] : []),
    ...(o.compress === true ? ['-c'] : []),
    ...(o.progress === true ? ['-p'] : []),
    ...(o.backing !== undefined ? ['-B', checkBackingName(o.backing.name), '-F', o.backing.format] : []),
    imagePath(source), imagePath(dest),
  ];
}

export interface RebaseArgs {
  /** New backing file, or null to make the image standalone (safe mode copies the old backing's data in). */
  readonly backing: BackingRef | null;
  /** -u: only rewrite the header; the caller guarantees the new backing has the same content. */
  readonly unsafe?: boolean;
  readonly progress?: boolean;
}
export function rebaseArgs(path: string, o: RebaseArgs): string[] {
  return [
    'rebase', '-f', 'qcow2',
    ...(o.unsafe === true ? ['-u'] : []),
    ...(o.progress === true ? ['-p'] : []),
    ...(o.backing !== null ? ['-b', checkBackingName(o.backing.name), '-F', o.backing.format] : ['-b', '']),
    imagePath(path),
  ];
}

export interface CommitArgs {
  /** -d: leave the top image as it is (do not empty it) after committing. */
  readonly keepTop?: boolean;
  readonly progress?: boolean;
}
export function commitArgs(path: string, o: CommitArgs = {}): string[] {
  return [
    'commit', '-f', 'qcow2',
    ...(o.keepTop === true ? ['-d'] : []),
    ...(o.progress === true ? ['-p'] : []),
    imagePath(path),
  ];
}

export interface MapArgs {
  readonly format?: ImageFormat;
  readonly forceShare?: boolean;
}
export function mapArgs(path: string, o: MapArgs = {}): string[] {
  return [
    'map', '-f', o.format ?? 'qcow2', '--output=json',
    ...(o.forceShare === true ? ['-U'] : []),
    imagePath(path),
  ];
}

export type MeasureArgs =
  | { readonly path: string; readonly format: ImageFormat; readonly forceShare?: boolean }
  | { readonly size: number };
export function measureArgs(o: MeasureArgs): string[] {
  const head = ['measure', '--output=json', '-O', 'qcow2', '-o', 'compat=1.1'];
  if ('size' in o) return [...head, '--size', positiveInt(o.size, 'size')];
  return [...head, '-f', o.format, ...(o.forceShare === true ? ['-U'] : []), imagePath(o.path)];
}
