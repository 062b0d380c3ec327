/**
 * The typed command map: for each QMP command, its `arguments` and its `return` (qapi schema of
 * QEMU 7.2, docs/interop/qemu-qmp-ref). Types cover what this project uses; QEMU may return more
 * keys (qmp-spec 5). Commands not listed here go through `executeUntyped`.
 */

import type { QmpVersionInfo } from './types.ts';

/** No return value: QEMU answers `{"return": {}}` (qmp-spec 2.4.1). */
export type QmpEmpty = Record<string, never>;

/** qapi RunState (run-state.json). */
export type QmpRunState =
  | 'debug'
  | 'inmigrate'
  | 'internal-error'
  | 'io-error'
  | 'paused'
  | 'postmigrate'
  | 'prelaunch'
  | 'finish-migrate'
  | 'restore-vm'
  | 'running'
  | 'save-vm'
  | 'shutdown'
  | 'suspended'
  | 'watchdog'
  | 'guest-panicked'
  | 'colo';

export interface QmpStatusInfo {
  running: boolean;
  singlestep: boolean;
  status: QmpRunState;
}

/** qapi ImageInfo (block-core.json), as nested in query-block / query-named-block-nodes. */
export interface QmpImageInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'dirty-flag'?: boolean;
  'actual-size'?: number;
  'cluster-size'?: number;
  encrypted?: boolean;
  compressed?: boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  'backing-image'?: QmpImageInfo;
  'format-specific'?: { type: string; data: Record<string, unknown> };
}

export interface QmpBlockDirtyInfo {
  name?: string;
  count: number;
  granularity: number;
  recording: boolean;
  busy: boolean;
  persistent: boolean;
  inconsistent?: boolean;
}

/** qapi BlockDeviceInfo: one block node. */
export interface QmpBlockDeviceInfo {
  file: string;
  'node-name'?: string;
  ro: boolean;
  drv: string;
  backing_file?: string;
  backing_file_depth: number;
  encrypted: boolean;
  detect_zeroes: string;
  image: QmpImageInfo;
  cache: { writeback: boolean; direct: boolean; 'no-flush': boolean };
  write_threshold: number;
  'dirty-bitmaps'?: QmpBlockDirtyInfo[];
}

/** qapi BlockInfo: one block backend (device). */
export interface QmpBlockInfo {
  device: string;
  qdev?: string;
  type: string;
  removable: boolean;
  locked: boolean;
  inserted?: QmpBlockDeviceInfo;
  tray_open?: boolean;
  'io-status'?: 'ok' | 'failed' | 'nospace';
}

export interface QmpVncClientInfo {
  host: string;
  service: string;
  family: string;
  websocket: boolean;
  x509_dname?: string;
  sasl_username?: string;
}

export interface QmpVncInfo {
  enabled: boolean;
  host?: string;
  family?: string;
  service?: string;
  auth?: string;
  clients?: QmpVncClientInfo[];
}

/** qapi BlockdevCacheOptions. */
export interface QmpBlockdevCacheOptions {
  direct?: boolean;
  'no-flush'?: boolean;
}

/** Options every blockdev driver accepts (qapi BlockdevOptions base). */
export interface QmpBlockdevOptionsBase {
  'node-name'?: string;
  discard?: 'ignore' | 'unmap';
  cache?: QmpBlockdevCacheOptions;
  'read-only'?: boolean;
  'auto-read-only'?: boolean;
  'force-share'?: boolean;
  'detect-zeroes'?: 'off' | 'on' | 'unmap';
}

/** A reference to a node: its name, or an inline definition (qapi BlockdevRef). */
export type QmpBlockdevRef = string | QmpBlockdevOptions;
/** As QmpBlockdevRef, or `null` for "no backing" (qapi BlockdevRefOrNull). */
export type QmpBlockdevRefOrNull = QmpBlockdevRef | null;

export interface QmpBlockdevOptionsFile extends QmpBlockdevOptionsBase {
  driver: 'file';
  filename: string;
  locking?: 'auto' | 'on' | 'off';
  aio?: 'threads' | 'native' | 'io_uring';
}

export interface QmpBlockdevOptionsQcow2 extends QmpBlockdevOptionsBase {
  driver: 'qcow2';
  file: QmpBlockdevRef;
  /** Always give it: a node name, or `null` for none. Omitted means "open what the header says". */
  backing?: QmpBlockdevRefOrNull;
  'lazy-refcounts'?: boolean;
  'data-file'?: QmpBlockdevRef;
  'cache-size'?: number;
  'l2-cache-size'?: number;
}

export interface QmpBlockdevOptionsRaw extends QmpBlockdevOptionsBase {
  driver: 'raw';
  file: QmpBlockdevRef;
  offset?: number;
  size?: number;
}

/** Any other driver (nbd, copy-on-read, throttle …): checked by QEMU, not by us. */
export interface QmpBlockdevOptionsOther extends QmpBlockdevOptionsBase {
  driver: Exclude<string, 'file' | 'qcow2' | 'raw'>;
  [option: string]: unknown;
}

/** qapi BlockdevOptions: loose for uncommon drivers, precise for file/qcow2/raw. */
export type QmpBlockdevOptions =
  | QmpBlockdevOptionsFile
  | QmpBlockdevOptionsQcow2
  | QmpBlockdevOptionsRaw
  | QmpBlockdevOptionsOther;

export type QmpMigrationCapabilityName =
  | 'xbzrle'
  | 'rdma-pin-all'
  | 'auto-converge'
  | 'zero-blocks'
  | 'compress'
  | 'events'
  | 'postcopy-ram'
  | 'x-colo'
  | 'release-ram'
  | 'block'
  | 'return-path'
  | 'pause-before-switchover'
  | 'multifd'
  | 'dirty-bitmaps'
  | 'postcopy-blocktime'
  | 'late-block-activate'
  | 'x-ignore-shared'
  | 'validate-uuid'
  | 'background-snapshot'
  | 'zero-copy-send'
  | 'postcopy-preempt';

export type QmpMigrationStatus =
  | 'none'
  | 'setup'
  | 'cancelling'
  | 'cancelled'
  | 'active'
  | 'postcopy-active'
  | 'postcopy-paused'
  | 'postcopy-recover'
  | 'completed'
  | 'failed'
  | 'colo'
  | 'pre-switchover'
  | 'device'
  | 'wait-unplug';

export interface QmpMigrationStats {
  transferred: number;
  remaining: number;
  total: number;
  duplicate: number;
  normal: number;
  'normal-bytes': number;
  'dirty-sync-count': number;
  mbps: number;
  [stat: string]: unknown;
}

export interface QmpMigrationInfo {
  status?: QmpMigrationStatus;
  ram?: QmpMigrationStats;
  'total-time'?: number;
  'expected-downtime'?: number;
  downtime?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  [key: string]: unknown;
}

/**
 * Command name → `{ args, ret }`. `args: undefined` means the command takes no arguments.
 * Where every argument is optional, `args` may be omitted in `execute`.
 */
export interface QmpCommands {
  qmp_capabilities: { args: { enable?: 'oob'[] }; ret: QmpEmpty };
  'query-status': { args: undefined; ret: QmpStatusInfo };
  'query-version': { args: undefined; ret: QmpVersionInfo };
  'query-block': { args: undefined; ret: QmpBlockInfo[] };
  'query-named-block-nodes': { args: { flat?: boolean }; ret: QmpBlockDeviceInfo[] };
  'query-vnc': { args: undefined; ret: QmpVncInfo };
  'query-commands': { args: undefined; ret: { name: string }[] };
  stop: { args: undefined; ret: QmpEmpty };
  cont: { args: undefined; ret: QmpEmpty };
  system_powerdown: { args: undefined; ret: QmpEmpty };
  system_reset: { args: undefined; ret: QmpEmpty };
  quit: { args: undefined; ret: QmpEmpty };
  /** `format` exists since QEMU 7.1 ('ppm' default, or 'png'). */
  screendump: { args: { filename: string; device?: string; head?: number; format?: 'ppm' | 'png' }; ret: QmpEmpty };
  'blockdev-add': { args: QmpBlockdevOptions; ret: QmpEmpty };
  'blockdev-del': { args: { 'node-name': string }; ret: QmpEmpty };
  /** Live: `overlay` (added with `backing: null`) gets `node` as its backing and takes its place. */
  'blockdev-snapshot': { args: { node: string; overlay: string }; ret: QmpEmpty };
  'change-backing-file': {
    args: { device: string; 'image-node-name': string; 'backing-file': string };
    ret: QmpEmpty;
  };
  'block-dirty-bitmap-add': {
    args: { node: string; name: string; granularity?: number; persistent?: boolean; disabled?: boolean };
    ret: QmpEmpty;
  };
  'block-dirty-bitmap-remove': { args: { node: string; name: string }; ret: QmpEmpty };
  'human-monitor-command': { args: { 'command-line': string; 'cpu-index'?: number }; ret: string };
  'migrate-set-capabilities': {
    args: { capabilities: { capability: QmpMigrationCapabilityName; state: boolean }[] };
    ret: QmpEmpty;
  };
  migrate: { args: { uri: string; blk?: boolean; inc?: boolean; detach?: boolean; resume?: boolean }; ret: QmpEmpty };
  'query-migrate': { args: undefined; ret: QmpMigrationInfo };
}

export type QmpCommandName = keyof QmpCommands;
export type QmpArgs<K extends QmpCommandName> = QmpCommands[K]['args'];
export type QmpReturn<K extends QmpCommandName> = QmpCommands[K]['ret'];

/** Per-call options. */
export interface QmpExecuteOptions {
  /** Reject with QmpTimeoutError after this long. Defaults to the client's `commandTimeoutMs`. */
  timeoutMs?: number;
  /** Reject with `signal.reason` when aborted. A late reply is then dropped (qmp-spec 2.4). */
  signal?: AbortSignal;
}

/**
 * `execute`'s parameters after the command name: no arguments, optional arguments (every field
 * optional), or required arguments.
 */
export type QmpExecuteParams<K extends QmpCommandName> = QmpArgs<K> extends undefined
  ? [args?: undefined, opts?: QmpExecuteOptions]
  : Partial<QmpArgs<K>> extends QmpArgs<K>
    ? [args?: QmpArgs<K>, opts?: QmpExecuteOptions]
    : [args: QmpArgs<K>, opts?: QmpExecuteOptions];
