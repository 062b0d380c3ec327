/**
 * `npm run bench`: builds (or reuses) the workload, measures the anchors, runs every scenario group with the runs
 * interleaved, verifies each transfer, and prints the table. See bench/README.md.
 *
 *   npm run bench -- [--size 4g|16g] [--runs N] [--only SUBSTRING] [--quick] [--json] [--write-docs]
 */
import { mkdirSync, rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { anchorScenarios, anchorSpeeds } from './anchors.ts';
import { hasCommand, killAllProcessesSync, stopAllProcesses } from './exec.ts';
import { canDropCaches, dropCaches, removeTree } from './fsutil.ts';
import { describeMachine, sampleLoad } from './machine.ts';
import { peerScenarios } from './peers.ts';
import { roamdeskScenarios } from './roamdesk.ts';
import { leaseScenarios } from './roamdesk-lease.ts';
import { runningDesktopScenarios } from './roamdesk-running.ts';
import { fanOutScenarios } from './roamdesk-fanout.ts';
import { renderText, resultsByScenario, writeJson, writeMarkdown, type BenchReport, type GroupReport } from './report.ts';
import type { AnchorSpeeds, RunContext, Scenario } from './scenario.ts';
import { summarizeGroup, type RunRecord } from './stats.ts';
import { CACHE_ROOT, ensureWorkload, GiB, parseSize, removeStaleTempDirs, REPO_ROOT, workloadParams, type Workload } from './workload.ts';

const MiB = 1024 * 1024;
const REQUIRED_TOOLS = ['qemu-img', 'qemu-io', 'rsync', 'cp', 'cmp', 'sync'];

const log = (message: string): void => {
  process.stderr.write(`${message}\n`);
};

function parseOptions(): { size: string; runs: number; only: string | undefined; quick: boolean; json: boolean; writeDocs: boolean } {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '4g' },
      runs: { type: 'string' },
      only: { type: 'string' },
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      'write-docs': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log('usage: npm run bench -- [--size 4g|16g] [--runs N] [--only SUBSTRING] [--quick] [--json] [--write-docs]');
    process.exit(0);
  }
  const runs = values.runs === undefined ? (values.quick ? 2 : 5) : Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer, got ${values.runs}`);
  return { size: values.quick ? '1g' : values.size, runs, only: values.only?.toLowerCase(), quick: values.quick, json: values.json, writeDocs: values['write-docs'] };
}

/** A directory name from a scenario name. */
function slug(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

interface Runner {
  readonly workload: Workload;
  readonly workDir: string;
  readonly canDrop: boolean;
  readonly records: RunRecord[];
}

/** Runs one group: prepare each scenario, then run 1 of each, run 2 of each, …; dispose each at the end. */
async function runGroup(r: Runner, scenarios: readonly Scenario[], runs: number, anchors: AnchorSpeeds | undefined): Promise<void> {
  const ctxFor = (s: Scenario, runIndex: number, runDir: string): RunContext => ({
    workload: r.workload,
    runIndex,
    runDir,
    anchors,
    canDropCaches: r.canDrop,
    log: (m) => log(`  [${s.name}] ${m}`),
  });
  const unprepared = new Map<string, string>();
  for (const s of scenarios) {
    if (!s.prepare) continue;
    // prepare's directory lives until dispose, unlike a run's directory.
    const dir = join(r.workDir, `${slug(s.name)}-shared`);
    await mkdir(dir, { recursive: true });
    try {
      await s.prepare(ctxFor(s, -1, dir));
    } catch (e) {
      unprepared.set(s.name, `prepare: ${message(e)}`);
      log(`  !!! ${s.name}: prepare FAILED: ${message(e)}`);
    }
  }
  try {
    for (let i = 0; i < runs; i++) {
      for (const s of scenarios) {
        const failedPrepare = unprepared.get(s.name);
        if (failedPrepare !== undefined) {
          r.records.push({ scenario: s.name, group: s.group, runIndex: i, cold: false, error: failedPrepare });
          continue;
        }
        r.records.push(await runOnce(r, s, i, runs, ctxFor));
      }
    }
  } finally {
    for (const s of scenarios) {
      try {
        await s.dispose?.();
      } catch (e) {
        log(`  !!! ${s.name}: dispose failed: ${message(e)}`);
      }
    }
    // A server a scenario forgot to stop must not run into the next group.
    await stopAllProcesses();
    await removeTree(r.workDir);
    await mkdir(r.workDir, { recursive: true });
  }
}

async function runOnce(r: Runner, s: Scenario, i: number, runs: number, ctxFor: (s: Scenario, i: number, dir: string) => RunContext): Promise<RunRecord> {
  const runDir = join(r.workDir, `${slug(s.name)}-${i + 1}`);
  await mkdir(runDir, { recursive: true });
  const ctx = ctxFor(s, i, runDir);
  const label = `[${s.group}] ${s.name} run ${i + 1}/${runs}`;
  let cold = false;
  let record: RunRecord;
  try {
    await s.setup?.(ctx);
    if ((s.cache ?? 'cold') === 'cold' && r.canDrop) cold = await dropCaches();
    const result = await s.run(ctx);
    await s.verify?.(ctx, result);
    record = { scenario: s.name, group: s.group, runIndex: i, cold, result };
    log(`${label}: ${result.seconds.toFixed(3)} s, wire ${(result.bytesOnWire / 1e6).toFixed(1)} MB, cpu ${result.cpuSeconds.toFixed(2)} s — ok`);
  } catch (e) {
    record = { scenario: s.name, group: s.group, runIndex: i, cold, error: message(e) };
    log(`!!! ${label} FAILED: ${message(e)}`);
  } finally {
    try {
      await s.teardown?.(ctx);
    } catch (e) {
      log(`!!! ${label}: teardown failed: ${message(e)}`);
    }
    await removeTree(runDir);
  }
  return record;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function main(): Promise<number> {
  const opts = parseOptions();
  const missing = REQUIRED_TOOLS.filter((t) => !hasCommand(t));
  if (missing.length > 0) {
    log(`bench: missing tools: ${missing.join(', ')} (run: bash scripts/setup.sh --test)`);
    return 2;
  }
  const started = performance.now();
  mkdirSync(CACHE_ROOT, { recursive: true });
  await removeStaleTempDirs();
  const machine = describeMachine(CACHE_ROOT);
  const load = sampleLoad();
  const workload = await ensureWorkload(workloadParams(parseSize(opts.size)), log);
  const canDrop = canDropCaches();
  if (!canDrop) log('bench: cannot drop the page cache (not root): cold runs will be warm');

  const workDir = join(CACHE_ROOT, `work-${new Date().toISOString().replace(/[:.]/g, '-')}-${process.pid}`);
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`bench: ${signal}: stopping servers and removing ${workDir}`);
    killAllProcessesSync();
    rmSync(workDir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const records: RunRecord[] = [];
  const runner: Runner = { workload, workDir, canDrop, records };
  const all = [
    ...anchorScenarios({ writeBytes: 512 * MiB, readBytes: 2 * GiB, tcpBytes: (opts.quick ? 1024 : 2048) * MiB, nodeTcpBytes: 512 * MiB }),
    ...peerScenarios(),
    ...roamdeskScenarios(),
    ...leaseScenarios(),
    ...runningDesktopScenarios(),
    ...fanOutScenarios(),
  ];
  const only = opts.only;
  const selected = all.filter((s) => s.group === 'anchors' || only === undefined || s.name.toLowerCase().includes(only) || s.group.includes(only));
  const groups = [...new Set(selected.map((s) => s.group))];

  let anchors: AnchorSpeeds | undefined;
  const groupReports: GroupReport[] = [];
  await mkdir(workDir, { recursive: true });
  try {
    for (const group of groups) {
      const scenarios = selected.filter((s) => s.group === group);
      log(`== ${group}: ${scenarios.map((s) => s.name).join(', ')} (${opts.runs} runs each, interleaved)`);
      await runGroup(runner, scenarios, opts.runs, anchors);
      if (group === 'anchors') anchors = anchorSpeeds(resultsByScenario(records), canDrop);
    }
  } finally {
    await stopAllProcesses();
    await removeTree(workDir);
  }
  for (const group of groups) {
    groupReports.push({ group, summaries: summarizeGroup(selected.filter((s) => s.group === group), records, anchors) });
  }

  machine.loadEnd = loadavg();
  machine.loadSamples = load.stop();
  const report: BenchReport = {
    machine,
    options: { size: opts.size, runs: opts.runs, only: opts.only, quick: opts.quick },
    workload,
    canDropCaches: canDrop,
    anchors,
    groups: groupReports,
    records,
    wallSeconds: (performance.now() - started) / 1000,
  };
  const jsonPath = join(CACHE_ROOT, `results-${machine.date.replace(/[:.]/g, '-')}.json`);
  await writeJson(report, jsonPath);
  if (opts.json) console.log(JSON.stringify(report, null, 2));
  else console.log(renderText(report));
  log(`raw results: ${jsonPath}`);
  if (opts.writeDocs) {
    const docs = join(REPO_ROOT, 'docs', 'benchmarks.md');
    await writeMarkdown(report, docs);
    log(`wrote ${docs}`);
  }
  return records.some((x) => x.error !== undefined) ? 1 : 0;
}

process.exitCode = await main();
