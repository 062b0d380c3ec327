/**
 * The contract between the runner and every benchmark scenario (anchors, peers, Roamdesk's own transfers).
 *
 * A scenario is one way of doing one task (a group): "rsync daemon" is a way to do "checkout". The runner runs the
 * scenarios of a group interleaved (run 1 of each, then run 2 of each, …), each run in a fresh empty directory,
 * and judges them against the same anchors measured in the same invocation.
 *
 * Life of one run: prepare (first run only) → setup → [caches dropped if `cache: 'cold'`] → run (timed by the
 * scenario) → verify → teardown (always) → the run directory is deleted. dispose runs once after the group.
 * Anything a scenario starts (servers, proxies) must be stopped in teardown or dispose. As a safety net, processes
 * started with exec.ts startProcess are stopped by the runner at the end of each group and on Ctrl-C / SIGTERM.
 */
import type { Workload } from './workload.ts';

/** This machine's physical limits, measured by the anchors group of the same invocation (medians, bytes/s). */
export interface AnchorSpeeds {
  /** Buffered 1 MiB writes followed by fsync: usually the bound of a copy. */
  readonly writeFsync: number;
  /** Sequential read with several large reads in flight; cold when the page cache could be dropped. */
  readonly read: number;
  readonly readCold: boolean;
  /** The same read from the page cache. */
  readonly readWarm: number;
  /** TCP between two processes over 127.0.0.1 (iperf3 or dd): the link speed in T_phys. */
  readonly loopbackTcp: number;
  /** The same between two Node processes (64 KiB reads): information only, not used in T_phys. */
  readonly loopbackTcpNode?: number;
}

/** The tasks a scenario can belong to; each has its own table in the report. */
export type GroupName =
  /** Physical limits of this machine, measured now (write+fsync, read, loopback TCP). */
  | 'anchors'
  /** Check-out: the client has the base and fetches the layer (5 %). */
  | 'checkout'
  /** Check-out of a desktop whose VM runs (the tiny guest under TCG): the stop phase, with the guest's own shutdown. */
  | 'checkout-running'
  /** Check-out over a throttled 1 Gbit/s link (token-bucket proxy). */
  | 'checkout-1gbit'
  /** Check-out over a throttled 100 Mbit/s link: where compression has to pay. */
  | 'checkout-100mbit'
  /** Many devices downloading the same object at once. */
  | 'fan-out'
  /** Check-in: the server has the layer and receives the client's 1 % of new writes. */
  | 'checkin'
  /** Initial replication: the client has nothing and fetches the whole base. */
  | 'replicate'
  /** Base update: the client has v1 and needs v2 (3 % changed, qcow2 layout shifted). */
  | 'update';

/** Everything a run gets. A new context is made for each run. */
export interface RunContext {
  readonly workload: Workload;
  /** 0-based index of this run of the scenario. */
  readonly runIndex: number;
  /**
   * A fresh, empty directory for this run, on the same file system as the workload (so copies hit the disk that
   * the anchors measured). Deleted by the runner after teardown.
   */
  readonly runDir: string;
  /** Speeds measured by this invocation's anchors; undefined while the anchors themselves run. */
  readonly anchors: AnchorSpeeds | undefined;
  /** Whether the runner can drop the page cache (root); when false, "cold" runs are really warm. */
  readonly canDropCaches: boolean;
  /** Progress and diagnostics to stderr, prefixed with the scenario's name. */
  log(message: string): void;
}

/** What one run measured. Byte counts are totals over every process and machine side of the transfer. */
export interface RunResult {
  /** Wall time of the transfer, up to and including fsync of the destination. */
  readonly seconds: number;
  /** Bytes written to disk (both sides), as counted or as the tool's design implies. */
  readonly bytesWritten: number;
  /** Bytes read from disk (both sides). */
  readonly bytesRead: number;
  /** Bytes over the network, both directions, as counted by the tool (rsync --stats, proxy, own counters). */
  readonly bytesOnWire: number;
  /** Guest bytes the task has to deliver (the workload's changed bytes): the floor T_phys is computed from. */
  readonly changedBytes: number;
  /** User + sys CPU seconds of every process that took part (cpu.ts startMeter). */
  readonly cpuSeconds: number;
  /** Peak resident memory of the scenario's main process, when known. */
  readonly peakRssBytes?: number;
  /** Seconds per named step (e.g. { diff: 3.7, ship: 0.2, commit: 0.4 }), reported as medians. */
  readonly phases?: Readonly<Record<string, number>>;
  /** Further counters the tool reported, kept in the JSON results. */
  readonly counters?: Readonly<Record<string, number>>;
}

export interface Scenario {
  /** Unique, short, shown in tables; `--only` matches it (and the group) by substring. */
  readonly name: string;
  readonly group: GroupName;
  /** One line: what is measured and how. */
  readonly description: string;
  /** The reference this scenario provides for its group's "÷cp" and "÷rsync" columns. */
  readonly peer?: 'cp' | 'rsync';
  /** 'cold' (default): the runner drops the page cache after setup, when it can. */
  readonly cache?: 'cold' | 'warm';
  /** Link speed in bytes/s when the transfer runs through a throttled link: replaces loopback TCP in T_phys. */
  readonly linkBytesPerSecond?: number;
  /**
   * Once, before the first run (e.g. start a server that all runs share). Its ctx.runDir is kept until after
   * dispose, and its ctx.runIndex is -1.
   */
  prepare?(ctx: RunContext): Promise<void>;
  /** Before each run, untimed (e.g. put the client's old copy in place). */
  setup?(ctx: RunContext): Promise<void>;
  /** The measured transfer. Times itself (cpu.ts startMeter) so that setup work stays out of the numbers. */
  run(ctx: RunContext): Promise<RunResult>;
  /** After each run, untimed: throw (qemu-img.ts VerifyError) when the result is wrong. */
  verify?(ctx: RunContext, result: RunResult): Promise<void>;
  /** After each run, always, even when run or verify threw. */
  teardown?(ctx: RunContext): Promise<void>;
  /** Once, after the group's last run. */
  dispose?(): Promise<void>;
}
