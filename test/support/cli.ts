/** Runs the roamdesk CLI as its own process, asynchronously (an in-process server must keep serving meanwhile). */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';

export const BIN = new URL('../../packages/cli/bin/roamdesk.js', import.meta.url).pathname;

/** The command prefix that enters the user and mount namespaces of process `pid` (a test's own, from `unshare -rm`). */
export function inNamespaceOf(pid: number | undefined): string[] {
  return ['nsenter', '-t', String(pid), '-U', '-m', '--preserve-credentials'];
}

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The --json answer (or error object), parsed. */
  json: Record<string, unknown>;
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv;
  /** A command the CLI runs under, e.g. nsenter into a test's mount namespace. */
  via?: string[];
}

/** `roamdesk ARGS --json` with ROAMDESK_HOME=home, whatever its exit code. */
export async function runCli(home: string, args: string[], opts: CliOptions = {}): Promise<CliRun> {
  const argv = [...(opts.via ?? []), process.execPath, BIN, ...args, '--json'];
  const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ROAMDESK_HOME: home, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(stdout) as Record<string, unknown>;
  } catch {
    // not JSON: the assertions below show stdout and stderr
  }
  return { code, stdout, stderr, json };
}

/** `roamdesk ARGS --json`, which must succeed; its parsed answer. */
export async function cli(home: string, args: string[], env: NodeJS.ProcessEnv = {}, opts: Omit<CliOptions, 'env'> = {}): Promise<Record<string, unknown>> {
  const r = await runCli(home, args, { ...opts, env });
  assert.equal(r.code, 0, `roamdesk ${args.join(' ')}: ${r.stdout}\n${r.stderr}`);
  return r.json;
}
