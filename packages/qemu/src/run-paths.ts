/**
 * The files of one running VM, all inside its run dir (mode 0700, so nobody else can even reach
 * the sockets). Pure: string joins only.
 */
import { MAX_SOCKET_PATH_BYTES, type VmSpec } from './spec.ts';

export interface VmPaths {
  qmp: string;
  vnc: string;
  serial: string;
  pid: string;
  stderr: string;
  /** The spec the VM was started with, so a restarted server can re-adopt it (attachVm). */
  spec: string;
}

export function runPaths(runDir: string): VmPaths {
  const dir = runDir.replace(/\/+$/, '');
  return {
    qmp: `${dir}/qmp.sock`,
    vnc: `${dir}/vnc.sock`,
    serial: `${dir}/serial.log`,
    pid: `${dir}/qemu.pid`,
    stderr: `${dir}/qemu.stderr.log`,
    spec: `${dir}/vm.json`,
  };
}

/**
 * How many bytes too long the paths of `runDir`'s UNIX sockets are for sockaddr_un (0: they fit). A server or a
 * device checks its run dirs' parent with it when it starts, instead of failing at the first VM start.
 */
export function socketPathExcess(runDir: string): number {
  const p = runPaths(runDir);
  return Math.max(0, ...[p.qmp, p.vnc].map((s) => new TextEncoder().encode(s).length - MAX_SOCKET_PATH_BYTES));
}

/** A VmSpec without the per-run files; `specInRunDir` fills them in. */
export type VmConfig = Omit<VmSpec, 'qmpSocket' | 'vncSocket' | 'serialLog' | 'pidFile'>;

/** Places the QMP socket, VNC socket, serial log and pidfile in `runDir`. */
export function specInRunDir(config: VmConfig, runDir: string): VmSpec {
  const p = runPaths(runDir);
  return { ...config, qmpSocket: p.qmp, vncSocket: p.vnc, serialLog: p.serial, pidFile: p.pid };
}
