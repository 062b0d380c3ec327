/**
 * Statistics over repeated runs, and the ratios each scenario is judged by (notes/performance.md, "Ratios the
 * project should be judged by"). Pure functions: the runner gathers runs, the report prints what these return.
 */
import type { AnchorSpeeds, GroupName, RunResult, Scenario } from './scenario.ts';

export interface Summary {
  readonly n: number;
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

/** Median (mean of the middle two for an even count), min and max; undefined for no values. */
export function summarize(values: readonly number[]): Summary | undefined {
  if (values.length === 0) return undefined;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
  return { n: s.length, median, min: s[0] ?? 0, max: s.at(-1) ?? 0 };
}

/** The p-th percentile (0–100) by nearest rank. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/** One run as recorded: its result, or why it failed. */
export interface RunRecord {
  readonly scenario: string;
  readonly group: GroupName;
  readonly runIndex: number;
  /** Whether the page cache was dropped before the run. */
  readonly cold: boolean;
  readonly result?: RunResult;
  readonly error?: string;
}

/** Everything the report shows about one scenario. Times in seconds, sizes in bytes, ratios without unit. */
export interface ScenarioSummary {
  readonly name: string;
  readonly group: GroupName;
  readonly description: string;
  readonly peer: 'cp' | 'rsync' | undefined;
  readonly runs: number;
  readonly failures: readonly string[];
  readonly seconds: Summary | undefined;
  readonly wire: Summary | undefined;
  readonly cpu: Summary | undefined;
  readonly written: number | undefined;
  readonly read: number | undefined;
  readonly changedBytes: number | undefined;
  readonly phases: Readonly<Record<string, Summary>>;
  /** The link speed T_phys used (bytes/s): the scenario's throttle, else loopback TCP. */
  readonly linkBytesPerSecond: number | undefined;
  /** changedBytes ÷ the slowest of write+fsync, read and link: what a perfect transfer of the task would take. */
  readonly tPhys: number | undefined;
  /** median seconds ÷ tPhys (R1, R3, R8 and the notes' "×phys"). */
  readonly xPhys: number | undefined;
  /** median seconds ÷ max(own bytes written ÷ write, read ÷ read, wire ÷ link): is the tool bound by its own I/O? */
  readonly xIo: number | undefined;
  /** median wire bytes ÷ changed bytes (R2). */
  readonly wirePerChanged: number | undefined;
  /** median seconds ÷ the group's cp / rsync peer's median seconds. */
  readonly vsCp: number | undefined;
  readonly vsRsync: number | undefined;
  /** median CPU seconds per GiB of changed bytes, all processes (R7). */
  readonly cpuPerGiB: number | undefined;
  /** changed bytes ÷ median seconds. */
  readonly bytesPerSecond: number | undefined;
}

const GiB = 1024 ** 3;

/** Summarizes every scenario of a group, then fills in the ratios to the group's cp and rsync peers. */
export function summarizeGroup(scenarios: readonly Scenario[], records: readonly RunRecord[], anchors: AnchorSpeeds | undefined): ScenarioSummary[] {
  const own = scenarios.map((s) => summarizeScenario(s, records.filter((r) => r.scenario === s.name), anchors));
  const peerSeconds = (peer: 'cp' | 'rsync'): number | undefined => own.find((s) => s.peer === peer)?.seconds?.median;
  const cp = peerSeconds('cp');
  const rsync = peerSeconds('rsync');
  return own.map((s) => ({
    ...s,
    vsCp: s.seconds && cp ? s.seconds.median / cp : undefined,
    vsRsync: s.seconds && rsync ? s.seconds.median / rsync : undefined,
  }));
}

function summarizeScenario(s: Scenario, records: readonly RunRecord[], anchors: AnchorSpeeds | undefined): Omit<ScenarioSummary, 'vsCp' | 'vsRsync'> {
  const results = records.flatMap((r) => (r.result ? [r.result] : []));
  const med = (f: (r: RunResult) => number): number | undefined => summarize(results.map(f))?.median;
  const seconds = summarize(results.map((r) => r.seconds));
  const wire = summarize(results.map((r) => r.bytesOnWire));
  const written = med((r) => r.bytesWritten);
  const read = med((r) => r.bytesRead);
  const changed = med((r) => r.changedBytes);
  const cpu = summarize(results.map((r) => r.cpuSeconds));

  const phaseNames = [...new Set(results.flatMap((r) => Object.keys(r.phases ?? {})))];
  const phases = Object.fromEntries(phaseNames.flatMap((p) => {
    const sum = summarize(results.flatMap((r) => (r.phases?.[p] === undefined ? [] : [r.phases[p]])));
    return sum ? [[p, sum] as const] : [];
  }));

  let tPhys: number | undefined;
  let tIo: number | undefined;
  const link = s.linkBytesPerSecond ?? anchors?.loopbackTcp;
  if (anchors && link !== undefined && s.group !== 'anchors' && changed !== undefined) {
    tPhys = changed / Math.min(anchors.writeFsync, anchors.read, link);
    tIo = Math.max((written ?? 0) / anchors.writeFsync, (read ?? 0) / anchors.read, (wire?.median ?? 0) / link);
  }
  return {
    name: s.name,
    group: s.group,
    description: s.description,
    peer: s.peer,
    runs: records.length,
    failures: records.flatMap((r) => (r.error === undefined ? [] : [`run ${r.runIndex + 1}: ${r.error}`])),
    seconds,
    wire,
    cpu,
    written,
    read,
    changedBytes: changed,
    phases,
    linkBytesPerSecond: link,
    tPhys,
    xPhys: seconds && tPhys ? seconds.median / tPhys : undefined,
    xIo: seconds && tIo ? seconds.median / tIo : undefined,
    wirePerChanged: wire && changed ? wire.median / changed : undefined,
    cpuPerGiB: cpu && changed ? cpu.median / (changed / GiB) : undefined,
    bytesPerSecond: seconds && changed ? changed / seconds.median : undefined,
  };
}
