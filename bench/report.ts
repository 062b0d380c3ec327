/**
 * Presents a bench invocation: a plain-text table on stdout, the raw runs as JSON, and docs/benchmarks.md.
 * The same rows feed the text and the Markdown, so the two never disagree.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

import { anchorThroughputs } from './anchors.ts';
import type { MachineInfo } from './machine.ts';
import type { AnchorSpeeds, GroupName, RunResult } from './scenario.ts';
import { summarize, type RunRecord, type ScenarioSummary, type Summary } from './stats.ts';
import type { Workload } from './workload.ts';

export interface BenchOptions {
  readonly size: string;
  readonly runs: number;
  readonly only: string | undefined;
  readonly quick: boolean;
}

export interface GroupReport {
  readonly group: GroupName;
  readonly summaries: readonly ScenarioSummary[];
}

export interface BenchReport {
  readonly machine: MachineInfo;
  readonly options: BenchOptions;
  readonly workload: Workload;
  readonly canDropCaches: boolean;
  readonly anchors: AnchorSpeeds | undefined;
  readonly groups: readonly GroupReport[];
  readonly records: readonly RunRecord[];
  readonly wallSeconds: number;
}

export const GROUP_TITLES: Readonly<Record<GroupName, string>> = {
  anchors: 'Anchors: this machine, measured in this run',
  checkout: 'Check-out: the client has the base and fetches the layer',
  'checkout-running': 'Check-out of a running desktop (the tiny guest under TCG): the stop phase',
  'checkout-1gbit': 'Check-out over a 1 Gbit/s link (token-bucket proxy on 127.0.0.1)',
  'checkout-100mbit': 'Check-out over a 100 Mbit/s link (token-bucket proxy on 127.0.0.1)',
  'fan-out': 'Fan-out: devices downloading one 256 MiB object at once (aggregate MB/s)',
  checkin: 'Check-in: the server has the layer; the client sends its new writes',
  replicate: 'Initial replication: the client fetches the whole base',
  update: 'Base update v1 → v2: the client has v1',
};

const MB = 1e6;

const fmt = {
  s: (x: number | undefined): string => (x === undefined ? '—' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(3)),
  range: (s: Summary | undefined): string => (s ? `${fmt.s(s.median)} (${fmt.s(s.min)}–${fmt.s(s.max)})` : '—'),
  mb: (x: number | undefined): string => (x === undefined ? '—' : (x / MB).toFixed(1)),
  rate: (x: number | undefined): string => (x === undefined ? '—' : (x / MB).toFixed(0)),
  ratio: (x: number | undefined, digits = 2): string => (x === undefined ? '—' : x.toFixed(x >= 100 ? 0 : x >= 10 ? 1 : digits)),
};

/** Columns are right-aligned numbers, except the first and any listed in `text`. */
type Table = { readonly head: readonly string[]; readonly rows: readonly (readonly string[])[]; readonly text?: readonly number[] };

function textTable(t: Table): string {
  const widths = t.head.map((h, i) => Math.max(h.length, ...t.rows.map((r) => (r[i] ?? '').length)));
  const left = new Set([0, ...(t.text ?? [])]);
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (left.has(i) ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ').trimEnd();
  return [line(t.head), ...t.rows.map(line)].join('\n');
}

function markdownTable(t: Table): string {
  const esc = (c: string): string => c.replace(/\|/g, '\\|');
  return [
    `| ${t.head.map(esc).join(' | ')} |`,
    `|${t.head.map((_, i) => (i === 0 || t.text?.includes(i) ? '---' : '---:')).join('|')}|`,
    ...t.rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}

function anchorTable(report: BenchReport): Table {
  const anchorGroup = report.groups.find((g) => g.group === 'anchors');
  const rows = (anchorGroup?.summaries ?? []).map((s) => {
    const results = report.records.filter((r) => r.scenario === s.name).flatMap((r) => (r.result ? [r.result] : []));
    const t = summarize(anchorThroughputs(s.name, results));
    return [s.name, String(results.length), t ? `${fmt.rate(t.median)} (${fmt.rate(t.min)}–${fmt.rate(t.max)})` : 'FAILED', s.description];
  });
  return { head: ['anchor', 'n', 'MB/s median (min–max)', 'how'], rows, text: [3] };
}

function scenarioTable(g: GroupReport): Table {
  return {
    head: ['scenario', 'n', 'median s (min–max)', 'min s', 'MB/s', 'wire MB', 'wire/chg', '×phys', '×io', '÷cp', '÷rsync', 'CPU s', 'CPU-s/GiB'],
    rows: g.summaries.map((s) => [
      s.failures.length > 0 ? `${s.name} [${s.failures.length} FAILED]` : s.name,
      String(s.seconds?.n ?? 0),
      fmt.range(s.seconds),
      fmt.s(s.seconds?.min),
      fmt.rate(s.bytesPerSecond),
      fmt.mb(s.wire?.median),
      fmt.ratio(s.wirePerChanged, 3),
      fmt.ratio(s.xPhys, 1),
      fmt.ratio(s.xIo, 1),
      fmt.ratio(s.vsCp),
      fmt.ratio(s.vsRsync),
      fmt.s(s.cpu?.median),
      fmt.ratio(s.cpuPerGiB, 1),
    ]),
  };
}

/** The floor of a group: its changed bytes and the T_phys they give, with the resource that bounds it. */
function groupFloor(g: GroupReport, anchors: AnchorSpeeds | undefined): string {
  // A group that moves no guest data of its own (the stop phase) has no floor to print.
  const s = g.summaries.find((x) => x.changedBytes !== undefined && x.changedBytes > 0 && x.tPhys !== undefined);
  if (!s || !anchors || s.changedBytes === undefined || s.tPhys === undefined || s.linkBytesPerSecond === undefined) return '';
  const bound: readonly (readonly [string, number])[] = [
    ['write+fsync', anchors.writeFsync],
    ['read', anchors.read],
    [s.linkBytesPerSecond === anchors.loopbackTcp ? 'loopback TCP' : `the ${fmt.rate(s.linkBytesPerSecond)} MB/s link`, s.linkBytesPerSecond],
  ];
  const slowest = bound.reduce((a, b) => (b[1] < a[1] ? b : a));
  return `changed ${fmt.mb(s.changedBytes)} MB; T_phys ${fmt.s(s.tPhys)} s (bound by ${slowest[0]})`;
}

function detailLines(g: GroupReport): string[] {
  const lines: string[] = [];
  for (const s of g.summaries) {
    const phases = Object.entries(s.phases);
    if (phases.length > 0) lines.push(`${s.name}: phases ${phases.map(([p, v]) => `${p} ${fmt.range(v)} s`).join(', ')}`);
    for (const f of s.failures) lines.push(`FAILED ${s.name} ${f}`);
  }
  return lines;
}

function workloadLines(w: Workload): string[] {
  const z = (r: number | null): string => (r === null ? '' : `, zstd -1 ${r.toFixed(2)}×`);
  const gib = (b: number): string => `${b / 1024 ** 3} GiB`;
  return [
    `base v1: ${gib(w.base.virtualBytes)} virtual, file ${fmt.mb(w.base.fileBytes)} MB, data ${fmt.mb(w.base.allocatedBytes)} MB (${((100 * w.base.allocatedBytes) / w.base.virtualBytes).toFixed(0)} % allocated)${z(w.base.zstd1Ratio)}`,
    `layer: ${w.layer.writes} writes, changed ${fmt.mb(w.layer.changedBytes)} MB (${((100 * w.layer.changedBytes) / w.layer.virtualBytes).toFixed(1)} %), file ${fmt.mb(w.layer.fileBytes)} MB${z(w.layer.zstd1Ratio)}`,
    `check-in: ${w.checkin.writes} writes, changed ${fmt.mb(w.checkin.changedBytes)} MB; overlay file ${fmt.mb(w.checkin.fileBytes)} MB; client layer file ${fmt.mb(w.clientLayer.fileBytes)} MB`,
    `base v2: ${w.v2.writes} writes, changed ${fmt.mb(w.v2.changedBytes)} MB (${fmt.mb(w.v2.inHolesBytes)} MB in v1's holes), file ${fmt.mb(w.v2.fileBytes)} MB`,
    `sparse: base ${gib(w.sparse.base.virtualBytes)} virtual, file ${fmt.mb(w.sparse.base.fileBytes)} MB; layer changed ${fmt.mb(w.sparse.layer.changedBytes)} MB, file ${fmt.mb(w.sparse.layer.fileBytes)} MB; check-in changed ${fmt.mb(w.sparse.checkin.changedBytes)} MB, file ${fmt.mb(w.sparse.checkin.fileBytes)} MB`,
  ];
}

function anchorLine(a: AnchorSpeeds | undefined, dropped: boolean): string {
  if (!a) return 'anchors: not measured (or failed): no ×phys ratios';
  return `T_phys uses: write+fsync ${fmt.rate(a.writeFsync)} MB/s, read ${fmt.rate(a.read)} MB/s (${a.readCold && dropped ? 'cold' : 'warm: caches not dropped'}), loopback TCP ${fmt.rate(a.loopbackTcp)} MB/s` +
    (a.loopbackTcpNode === undefined ? '' : ` (between Node processes: ${fmt.rate(a.loopbackTcpNode)} MB/s, not used)`);
}

/** A warning when other work shared the cores during the run (the usual case on the project's 2-core VMs). */
function loadCaveat(m: MachineInfo): string | undefined {
  const median = m.loadSamples?.median;
  if (median === undefined || median <= m.cores) return undefined;
  return `The machine was loaded: median 1-minute load ${median.toFixed(1)} on ${m.cores} cores. Absolute times are pessimistic and noisy; compare the ratios within this run.`;
}

/** The plain-text report for stdout. */
export function renderText(r: BenchReport): string {
  const out: string[] = [];
  const m = r.machine;
  out.push(`Roamdesk bench — ${m.date} — ${m.cpuModel}, ${m.cores} cores, ${(m.ramBytes / 1024 ** 3).toFixed(0)} GiB, ${m.fileSystem}`);
  out.push(`load average start ${m.loadStart.map((x) => x.toFixed(2)).join(' ')}, end ${m.loadEnd.map((x) => x.toFixed(2)).join(' ')}` +
    (m.loadSamples ? `; during: median ${m.loadSamples.median.toFixed(1)}, p90 ${m.loadSamples.p90.toFixed(1)}, max ${m.loadSamples.max.toFixed(1)}` : ''));
  out.push(`runs ${r.options.runs}, size ${r.options.size}${r.options.quick ? ' (quick)' : ''}, caches ${r.canDropCaches ? 'dropped before cold runs' : 'NOT dropped (not root): "cold" runs are warm'}`);
  const caveat = loadCaveat(m);
  if (caveat) out.push(caveat);
  out.push(...workloadLines(r.workload));
  out.push('');
  for (const g of r.groups) {
    out.push(`== ${GROUP_TITLES[g.group]} ==`);
    if (g.group === 'anchors') {
      out.push(textTable(anchorTable(r)));
      out.push(anchorLine(r.anchors, r.canDropCaches));
    } else {
      const floor = groupFloor(g, r.anchors);
      if (floor) out.push(floor);
      out.push(textTable(scenarioTable(g)));
    }
    out.push(...detailLines(g), '');
  }
  const failed = r.records.filter((x) => x.error !== undefined).length;
  out.push(failed > 0 ? `!!! ${failed} RUN(S) FAILED — see the FAILED lines above !!!` : `all ${r.records.length} runs verified; ${fmt.s(r.wallSeconds)} s in total`);
  return out.join('\n');
}

const LEGEND = `How to read the columns (definitions as in notes/performance.md):
- **median s (min–max)**: wall time over the runs, up to and including fsync of the destination; **min s** the best run.
- **MB/s**: changed bytes ÷ median time.
- **wire MB / wire/chg**: bytes on the wire as counted by the tool (rsync \`--stats\` sent+received, proxy counters; for \`cp\` the file size), and that ÷ the task's changed guest bytes (R2).
- **×phys**: median time ÷ T_phys, where T_phys = changed bytes ÷ the slowest of this run's write+fsync, read and link anchors: the time a perfect transfer of the task would take here (R1 for check-out, R3 for check-in, R8 for replication).
- **×io**: median time ÷ max(bytes the tool wrote ÷ write+fsync, bytes it read ÷ read, its wire bytes ÷ link): near 1 means the tool is bound by the I/O it chose to do, far above 1 that it is CPU- or latency-bound.
- **÷cp, ÷rsync**: median time ÷ the median of the group's cp / rsync peer in this same run (R4 for the base update is 1 ÷ the scenario's ÷rsync).
- **CPU s, CPU-s/GiB**: user+sys CPU of every process involved (client, server, tools), and per GiB of changed bytes (R7).`;

/** docs/benchmarks.md. */
export function renderMarkdown(r: BenchReport): string {
  const m = r.machine;
  const out: string[] = [];
  out.push('# Benchmarks', '');
  out.push(`Generated by \`npm run bench -- ${[r.options.quick ? '--quick' : `--size ${r.options.size}`, `--runs ${r.options.runs}`, r.options.only ? `--only ${r.options.only}` : '', '--write-docs'].filter(Boolean).join(' ')}\` on ${m.date}.`);
  out.push('Every number below comes from this one invocation: the anchors were measured in the same run as the scenarios they judge. See bench/README.md.');
  const caveat = loadCaveat(m);
  out.push(...(caveat ? ['', `**${caveat}**`] : []), '');
  out.push('## Machine', '');
  out.push(markdownTable({
    head: ['what', 'value'],
    rows: [
      ['CPU', `${m.cpuModel}, ${m.cores} cores`],
      ['RAM', `${(m.ramBytes / 1024 ** 3).toFixed(1)} GiB`],
      ['kernel', m.kernel],
      ['bench file system', m.fileSystem],
      ['load average (1/5/15 min) at start / end', `${m.loadStart.map((x) => x.toFixed(2)).join(' ')} / ${m.loadEnd.map((x) => x.toFixed(2)).join(' ')}`],
      ['1-min load during the run', m.loadSamples ? `median ${m.loadSamples.median.toFixed(1)}, p90 ${m.loadSamples.p90.toFixed(1)}, max ${m.loadSamples.max.toFixed(1)}` : '—'],
      ['Node.js', m.node],
      ['qemu-img', m.qemuImg],
      ['rsync', m.rsync],
      ['page cache dropped before cold runs', r.canDropCaches ? 'yes (root)' : 'no (not root): "cold" runs are warm'],
      ['runs per scenario (interleaved)', String(r.options.runs)],
      ['wall time of the whole invocation', `${fmt.s(r.wallSeconds)} s`],
    ],
    text: [1],
  }), '');
  out.push('## Workload', '', ...workloadLines(r.workload).map((l) => `- ${l}`), '');
  out.push(LEGEND, '');
  for (const g of r.groups) {
    out.push(`## ${GROUP_TITLES[g.group]}`, '');
    if (g.group === 'anchors') {
      out.push(markdownTable(anchorTable(r)), '', anchorLine(r.anchors, r.canDropCaches), '');
      continue;
    }
    const floor = groupFloor(g, r.anchors);
    if (floor) out.push(`${floor}.`, '');
    out.push(markdownTable(scenarioTable(g)), '');
    for (const s of g.summaries) out.push(`- **${s.name}**: ${s.description}.`);
    const details = detailLines(g);
    if (details.length > 0) out.push('', ...details.map((d) => `- ${d}`));
    out.push('');
  }
  return out.join('\n');
}

/** The raw results: every run of every scenario, with the summaries and the context. */
export async function writeJson(r: BenchReport, path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, `${JSON.stringify(r, null, 2)}\n`);
}

export async function writeMarkdown(r: BenchReport, path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, renderMarkdown(r));
}

/** Results of successful runs per scenario name (what anchorSpeeds needs). */
export function resultsByScenario(records: readonly RunRecord[]): Map<string, RunResult[]> {
  const map = new Map<string, RunResult[]>();
  for (const r of records) if (r.result) map.set(r.scenario, [...(map.get(r.scenario) ?? []), r.result]);
  return map;
}
