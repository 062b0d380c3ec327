/**
 * VmSpec: everything that decides a VM's QEMU command line. Pure data, validated by
 * `validateVmSpec`. The machine type and CPU model are pinned by default so a VM's state can move
 * between hosts (DESIGN.md, "pin machine type and CPU model").
 */
import { QemuSpecInvalidError, type SpecProblem } from './errors.ts';

export type Accel = 'kvm' | 'tcg';
export type DisplayKind = 'none' | 'gtk' | 'sdl';
/** As `-drive cache=`: maps to blockdev `cache.direct` / `cache.no-flush` and the device's write-cache. */
export type DiskCacheMode = 'writeback' | 'none' | 'writethrough' | 'directsync' | 'unsafe';

/** One qcow2 file of the chain. */
export interface DiskNode {
  /** QEMU block node name (a QEMU id, at most 31 characters). */
  nodeName: string;
  /** Absolute path of the qcow2 file. */
  path: string;
}

export interface VmDisk {
  /**
   * The chain, bottom (the image) → top (the writable overlay). Each node is opened as qcow2 with
   * its `backing` set explicitly to the node below (`null` for the image): the headers' backing
   * names and formats are never followed or probed. All but the top are read-only.
   */
  nodes: DiskNode[];
  /** Default 'writeback'. Use 'unsafe' only for throwaway test disks. */
  cache?: DiskCacheMode;
  /** qdev id of the virtio-blk-pci device. Default 'disk0'. */
  deviceId?: string;
}

export interface VmKernel {
  /** Absolute path of the kernel image (direct kernel boot). */
  path: string;
  initrd?: string;
  append?: string;
}

export interface VmSpec {
  /** VM name: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`. Shown as `-name guest=…`. */
  name: string;
  memoryMiB: number;
  cpus: number;
  accel: Accel;
  /**
   * TCG translation cache in MiB (`-accel tcg,tb-size=`). Default 32: the cache is a large part of
   * a TCG guest's RSS (notes/guest.md §7: 245 MiB → 168 MiB with tb-size=16). Ignored under KVM.
   */
  tcgTbSizeMiB?: number;
  /** Default `pc-q35-7.2`: a versioned type, so a QEMU upgrade does not change the virtual hardware. */
  machine?: string;
  /** Default `qemu64`: runs everywhere (TCG and any KVM host), so state can migrate. */
  cpuModel?: string;
  disk: VmDisk;
  kernel?: VmKernel;
  /** QMP socket path (`-qmp unix:PATH,server=on,wait=off`). */
  qmpSocket: string;
  /** VNC socket path (`-vnc unix:PATH`). Omit for no VNC. VNC never listens on TCP. */
  vncSocket?: string;
  /** Serial console log file (`-chardev file` + `-serial chardev:`). Omit for no serial port. */
  serialLog?: string;
  /** QEMU writes (and locks) its pid here (`-pidfile`). */
  pidFile?: string;
  /** Default 'none'. */
  display?: DisplayKind;
  /** Default 'std' (so VNC shows something). */
  vga?: 'std' | 'none';
  /** Exit instead of rebooting when the guest reboots (`-no-reboot`). Default false. */
  noReboot?: boolean;
  /** Start with CPUs stopped (`-S`); `cont` starts them. Default false. */
  startPaused?: boolean;
}

export const DEFAULT_MACHINE = 'pc-q35-7.2';
export const DEFAULT_CPU_MODEL = 'qemu64';
export const DEFAULT_TB_SIZE_MIB = 32;
export const DEFAULT_DEVICE_ID = 'disk0';

/** QEMU ids (qemu-common id_wellformed) and block node names (BlockDriverState.node_name is char[32]). */
const QEMU_ID = /^[A-Za-z][A-Za-z0-9_.-]{0,30}$/;
const VM_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** Machine types and CPU models: plain identifiers; no commas, which would inject options. */
const TYPE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$/;
/** sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

function checkPath(problems: SpecProblem[], field: string, path: string | undefined, opts: { noComma?: boolean; socket?: boolean } = {}): void {
  if (path === undefined) return;
  if (typeof path !== 'string' || path === '') {
    problems.push({ field, problem: 'must be a non-empty string' });
    return;
  }
  if (!path.startsWith('/')) problems.push({ field, problem: `must be an absolute path (got ${JSON.stringify(path)})` });
  // Control characters (NUL, newline …) never belong in a path we pass on a command line.
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(path)) problems.push({ field, problem: 'must not contain control characters' });
  if (path.split('/').some((seg) => seg === '.' || seg === '..')) {
    problems.push({ field, problem: 'must be normalised (no "." or ".." segments)' });
  }
  if (opts.noComma && path.includes(',')) {
    problems.push({ field, problem: 'must not contain a comma: QEMU would read the rest as options. Choose another directory' });
  }
  if (opts.socket && new TextEncoder().encode(path).length > MAX_SOCKET_PATH_BYTES) {
    problems.push({ field, problem: `UNIX socket paths are limited to ${MAX_SOCKET_PATH_BYTES} bytes; use a shorter run dir` });
  }
}

function checkInt(problems: SpecProblem[], field: string, value: number | undefined, min: number, max: number): void {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value < min || value > max) {
    problems.push({ field, problem: `must be an integer from ${min} to ${max} (got ${String(value)})` });
  }
}

/** Returns every problem with the spec (empty when valid). Pure. */
export function vmSpecProblems(spec: VmSpec): SpecProblem[] {
  const problems: SpecProblem[] = [];
  if (typeof spec.name !== 'string' || !VM_NAME.test(spec.name)) {
    problems.push({ field: 'name', problem: 'must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}' });
  }
  checkInt(problems, 'memoryMiB', spec.memoryMiB, 16, 4 * 1024 * 1024);
  checkInt(problems, 'cpus', spec.cpus, 1, 255);
  checkInt(problems, 'tcgTbSizeMiB', spec.tcgTbSizeMiB, 1, 4096);
  if (spec.accel !== 'kvm' && spec.accel !== 'tcg') problems.push({ field: 'accel', problem: "must be 'kvm' or 'tcg'" });
  if (spec.machine !== undefined && !TYPE_NAME.test(spec.machine)) problems.push({ field: 'machine', problem: 'must be a machine type name' });
  if (spec.cpuModel !== undefined && !TYPE_NAME.test(spec.cpuModel)) problems.push({ field: 'cpuModel', problem: 'must be a CPU model name' });
  if (spec.display !== undefined && !['none', 'gtk', 'sdl'].includes(spec.display)) {
    problems.push({ field: 'display', problem: "must be 'none', 'gtk' or 'sdl'" });
  }
  if (spec.vga !== undefined && spec.vga !== 'std' && spec.vga !== 'none') problems.push({ field: 'vga', problem: "must be 'std' or 'none'" });

  const nodes = spec.disk?.nodes;
  if (!Array.isArray(nodes) || nodes.length === 0) {
    problems.push({ field: 'disk.nodes', problem: 'must list at least one qcow2 file (the image)' });
  } else {
    const seen = new Set<string>();
    nodes.forEach((node, i) => {
      const field = `disk.nodes[${i}]`;
      if (typeof node.nodeName !== 'string' || !QEMU_ID.test(node.nodeName)) {
        problems.push({ field: `${field}.nodeName`, problem: 'must be a QEMU id: [A-Za-z][A-Za-z0-9_.-]*, at most 31 characters' });
      } else if (seen.has(node.nodeName)) {
        problems.push({ field: `${field}.nodeName`, problem: `duplicate node name ${node.nodeName}` });
      }
      seen.add(node.nodeName);
      // Commas are safe here: -blockdev takes JSON, which needs no comma escaping.
      checkPath(problems, `${field}.path`, node.path);
    });
    const paths = nodes.map((n) => n.path);
    if (new Set(paths).size !== paths.length) problems.push({ field: 'disk.nodes', problem: 'the same file appears twice in the chain' });
  }
  const deviceId = spec.disk?.deviceId;
  if (deviceId !== undefined && !QEMU_ID.test(deviceId)) problems.push({ field: 'disk.deviceId', problem: 'must be a QEMU id' });
  const cache = spec.disk?.cache;
  if (cache !== undefined && !['writeback', 'none', 'writethrough', 'directsync', 'unsafe'].includes(cache)) {
    problems.push({ field: 'disk.cache', problem: 'must be writeback, none, writethrough, directsync or unsafe' });
  }

  if (spec.kernel) {
    checkPath(problems, 'kernel.path', spec.kernel.path);
    // Multiboot kernels read -initrd as a comma-separated module list.
    checkPath(problems, 'kernel.initrd', spec.kernel.initrd, { noComma: true });
    // eslint-disable-next-line no-control-regex
    if (spec.kernel.append !== undefined && /[\x00\n\r]/.test(spec.kernel.append)) {
      problems.push({ field: 'kernel.append', problem: 'must be one line' });
    }
  }
  if (spec.qmpSocket === undefined) problems.push({ field: 'qmpSocket', problem: 'is required' });
  checkPath(problems, 'qmpSocket', spec.qmpSocket, { noComma: true, socket: true });
  checkPath(problems, 'vncSocket', spec.vncSocket, { noComma: true, socket: true });
  checkPath(problems, 'serialLog', spec.serialLog, { noComma: true });
  checkPath(problems, 'pidFile', spec.pidFile);
  return problems;
}

/** Throws QemuSpecInvalidError listing every problem. */
export function validateVmSpec(spec: VmSpec): void {
  const problems = vmSpecProblems(spec);
  if (problems.length > 0) throw new QemuSpecInvalidError(problems);
}
