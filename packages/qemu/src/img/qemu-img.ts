/**
 * A typed qemu-img. Each method builds argv with args.ts (explicit formats, never probing), runs it with
 * run.ts, and parses JSON output with parse.ts. Inputs that may be hostile (layers from devices, uploaded
 * images) are run with `untrusted: true`: under prlimit address-space and CPU limits and a wall-clock timeout,
 * as OpenStack nova does for `qemu-img info` (1 GiB AS, 2 s CPU; CVE-2014-0145-style allocation bombs).
 */
import {
  checkArgs, commitArgs, compareArgs, convertArgs, createArgs, infoArgs, mapArgs, measureArgs, rebaseArgs,
  type CheckArgs, type CommitArgs, type CompareArgs, type ConvertArgs, type CreateOptions, type InfoArgs,
  type MapArgs, type MeasureArgs, type RebaseArgs,
} from './args.ts';
import { QemuImgOutputError } from './errors.ts';
import { createProgressParser, parseCheck, parseInfo, parseInfoChain, parseMap, parseMeasure } from './parse.ts';
import { runQemuImg, type RunResult } from './run.ts';
import type {
  CheckReport, CheckResult, ImageInfo, ImgProgress, MapExtent, MeasureResult, ResourceLimits,
} from './types.ts';

/** nova's limits for qemu-img on untrusted images (nova/virt/images.py: QEMU_IMG_LIMITS, 1 GiB / 2 s CPU). */
export const DEFAULT_UNTRUSTED_LIMITS: ResourceLimits = { addressSpaceBytes: 1024 * 1024 * 1024, cpuSeconds: 2 };
/** Wall-clock bound for untrusted runs: CPU limits do not bound time spent blocked on I/O. */
export const DEFAULT_UNTRUSTED_TIMEOUT_MS = 30_000;
/** Wall-clock bound for metadata-only commands (info, check, map, measure, create) on trusted images. */
export const DEFAULT_METADATA_TIMEOUT_MS = 120_000;
const MAX_STDOUT_BYTES = 64 * 1024 * 1024;

export interface QemuImgOptions {
  /** qemu-img executable (default: "qemu-img" from PATH). */
  readonly binary?: string;
  /** prlimit executable (default: "prlimit" from PATH; util-linux). */
  readonly prlimitBinary?: string;
  /** Limits for `untrusted` calls. */
  readonly untrustedLimits?: ResourceLimits;
  readonly untrustedTimeoutMs?: number;
}

export interface CallOptions {
  /** Run under the resource limits and the untrusted timeout. */
  readonly untrusted?: boolean;
  /** Explicit limits (null = none); overrides `untrusted`'s. */
  readonly limits?: ResourceLimits | null;
  /** Explicit wall-clock timeout in ms (null = none). */
  readonly timeoutMs?: number | null;
  readonly signal?: AbortSignal;
}

export interface ProgressOptions {
  /** Called with qemu-img's `-p` percentage as it advances. */
  readonly onProgress?: (p: ImgProgress) => void;
}

export class QemuImg {
  readonly binary: string;
  readonly prlimitBinary: string;
  readonly untrustedLimits: ResourceLimits;
  readonly untrustedTimeoutMs: number;

  constructor(opts: QemuImgOptions = {}) {
    this.binary = opts.binary ?? 'qemu-img';
    this.prlimitBinary = opts.prlimitBinary ?? 'prlimit';
    this.untrustedLimits = opts.untrustedLimits ?? DEFAULT_UNTRUSTED_LIMITS;
    this.untrustedTimeoutMs = opts.untrustedTimeoutMs ?? DEFAULT_UNTRUSTED_TIMEOUT_MS;
  }

  /** `qemu-img info -f FMT --output=json [-U]`. Does not open the backing chain. */
  async info(path: string, o: Omit<InfoArgs, 'backingChain'> & CallOptions): Promise<ImageInfo> {
    const r = await this.run(infoArgs(path, o), o, [0], DEFAULT_METADATA_TIMEOUT_MS);
    return this.parsed(r, () => parseInfo(r.stdout));
  }

  /** `qemu-img info --backing-chain`: top image first. Opens every backing file, so only for trusted chains. */
  async infoChain(path: string, o: Omit<InfoArgs, 'backingChain'> & CallOptions): Promise<ImageInfo[]> {
    const r = await this.run(infoArgs(path, { ...o, backingChain: true }), o, [0], DEFAULT_METADATA_TIMEOUT_MS);
    return this.parsed(r, () => parseInfoChain(r.stdout));
  }

  /**
   * `qemu-img check -f qcow2 --output=json`. Exit codes per qemu-img(1): 0 consistent, 2 corrupted, 3 leaked
   * clusters only, 63 the format does not support checks — all returned as results. 1 (check could not run)
   * throws QemuImgFailedError.
   */
  async check(path: string, o: CheckArgs & CallOptions = {}): Promise<CheckResult> {
    const r = await this.run(checkArgs(path, o), o, [0, 2, 3, 63], DEFAULT_METADATA_TIMEOUT_MS);
    const exitCode = r.exitCode as 0 | 2 | 3 | 63;
    const status = exitCode === 0 ? 'ok' : exitCode === 2 ? 'corrupted' : exitCode === 3 ? 'leaks' : 'unsupported';
    let report: CheckReport | null = null;
    if (exitCode !== 63) {
      try {
        report = parseCheck(r.stdout);
      } catch (e) {
        if (exitCode === 0) throw this.outputError(r, e);
      }
    }
    return { status, exitCode, report, stderrTail: r.stderrTail };
  }

  /** `qemu-img create -f qcow2 [-b NAME -F qcow2]`: the backing name is written as given (relative stays relative). */
  async create(path: string, o: CreateOptions & CallOptions = {}): Promise<void> {
    await this.run(createArgs(path, o), o, [0], DEFAULT_METADATA_TIMEOUT_MS);
  }

  /** `qemu-img compare`: true when the guest-visible contents are identical (exit 0), false when they differ (1). */
  async compare(a: string, b: string, o: CompareArgs & CallOptions = {}): Promise<boolean> {
    const r = await this.run(compareArgs(a, b, o), o, [0, 1], null);
    return r.exitCode === 0;
  }

  /** `qemu-img convert -f FMT -O qcow2 [-B NAME -F qcow2] [-c] [-U] [-p]`. */
  async convert(source: string, dest: string, o: Omit<ConvertArgs, 'progress'> & ProgressOptions & CallOptions): Promise<void> {
    const parser = o.onProgress !== undefined ? createProgressParser(o.onProgress) : undefined;
    await this.run(convertArgs(source, dest, { ...o, progress: parser !== undefined }), o, [0], null, parser);
  }

  /** `qemu-img rebase -f qcow2 [-u] -b NAME -F qcow2`. Unsafe mode only rewrites the header. */
  async rebase(path: string, o: Omit<RebaseArgs, 'progress'> & ProgressOptions & CallOptions): Promise<void> {
    const parser = o.onProgress !== undefined ? createProgressParser(o.onProgress) : undefined;
    await this.run(rebaseArgs(path, { ...o, progress: parser !== undefined }), o, [0], null, parser);
  }

  /** `qemu-img commit -f qcow2`: write the top image's data into its backing file. */
  async commit(path: string, o: Omit<CommitArgs, 'progress'> & ProgressOptions & CallOptions = {}): Promise<void> {
    const parser = o.onProgress !== undefined ? createProgressParser(o.onProgress) : undefined;
    await this.run(commitArgs(path, { ...o, progress: parser !== undefined }), o, [0], null, parser);
  }

  /** `qemu-img map -f FMT --output=json [-U]`. */
  async map(path: string, o: MapArgs & CallOptions = {}): Promise<MapExtent[]> {
    const r = await this.run(mapArgs(path, o), o, [0], DEFAULT_METADATA_TIMEOUT_MS);
    return this.parsed(r, () => parseMap(r.stdout));
  }

  /** `qemu-img measure --output=json -O qcow2`: the file size a qcow2 copy needs. */
  async measure(o: MeasureArgs & CallOptions): Promise<MeasureResult> {
    const r = await this.run(measureArgs(o), o, [0], DEFAULT_METADATA_TIMEOUT_MS);
    return this.parsed(r, () => parseMeasure(r.stdout));
  }

  private run(
    args: string[],
    o: CallOptions,
    okExitCodes: readonly number[],
    defaultTimeoutMs: number | null,
    onStdout?: (chunk: string) => void,
  ): Promise<RunResult> {
    const untrusted = o.untrusted === true;
    const limits = o.limits !== undefined ? o.limits : untrusted ? this.untrustedLimits : null;
    const timeoutMs = o.timeoutMs !== undefined ? o.timeoutMs : untrusted ? this.untrustedTimeoutMs : defaultTimeoutMs;
    return runQemuImg({
      binary: this.binary,
      prlimitBinary: this.prlimitBinary,
      args,
      limits,
      timeoutMs,
      signal: o.signal,
      okExitCodes,
      onStdout,
      maxStdoutBytes: MAX_STDOUT_BYTES,
    });
  }

  private parsed<T>(r: RunResult, parse: () => T): T {
    try {
      return parse();
    } catch (e) {
      throw this.outputError(r, e);
    }
  }

  private outputError(r: RunResult, cause: unknown): QemuImgOutputError {
    return new QemuImgOutputError(`qemu-img output did not parse: ${(cause as Error).message}`, {
      args: r.args, exitCode: r.exitCode, signal: null, stderrTail: r.stderrTail, stdoutHead: r.stdout.slice(0, 500),
    }, { cause });
  }
}

