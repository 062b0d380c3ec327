/**
 * Running external tools: one-shot commands (qemu-img, cp, rsync clients) and long-lived servers (rsync daemon,
 * iperf3, Roamdesk servers). Every server started here is registered, so the runner can stop all of them, by pid,
 * when a run fails or the user presses Ctrl-C: a benchmark must never leave daemons behind.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, connect } from 'node:net';

export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly code: number;
}

export interface CommandOptions {
  readonly cwd?: string;
  /** Exit codes that are not failures (qemu-img compare exits 1 on a mismatch, which the caller reports). */
  readonly okCodes?: readonly number[];
  readonly env?: NodeJS.ProcessEnv;
}

/** A command exited with an unexpected code; the message carries the tail of its stderr. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly code: number,
    readonly stderr: string,
  ) {
    super(`${command} exited with ${code}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`);
    this.name = 'CommandError';
  }
}

/** Output kept per stream: enough for rsync --stats and qemu-img JSON, bounded against a chatty tool. */
const MAX_OUTPUT_CHARS = 4 * 1024 * 1024;

/** Pids of commands started by runCommand that have not exited: killed by killAllProcessesSync. */
const running = new Set<number>();

/** Runs a command to completion. Its CPU time lands in this process's reaped-children counters (cpu.ts). */
export async function runCommand(cmd: string, args: readonly string[], opts: CommandOptions = {}): Promise<CommandResult> {
  const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid !== undefined) running.add(child.pid);
  child.once('close', () => {
    if (child.pid !== undefined) running.delete(child.pid);
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    if (stdout.length < MAX_OUTPUT_CHARS) stdout += s;
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    if (stderr.length < MAX_OUTPUT_CHARS) stderr += s;
  });
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  const exit = code ?? (signal ? 128 : 1);
  if (!(opts.okCodes ?? [0]).includes(exit)) throw new CommandError(`${cmd} ${args.join(' ')}`, exit, stderr || String(signal));
  return { stdout, stderr, code: exit };
}

/** Whether an executable is on PATH (`command -v`). */
export function hasCommand(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** First line of `cmd --version`, or 'unknown'. */
export function versionOf(cmd: string, args: readonly string[] = ['--version']): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0]?.replace(/\s+/g, ' ').trim() ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** A server process started by a scenario. */
export interface ManagedProcess {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves with the exit code (or null when killed by a signal). */
  readonly exited: Promise<number | null>;
  /** Everything the process wrote to stderr so far (for error messages). */
  stderr(): string;
  /** SIGTERM to its process group, SIGKILL after a grace period; resolves when it has exited. */
  stop(): Promise<void>;
}

const live = new Set<ManagedProcess>();
const STOP_GRACE_MS = 2000;

/**
 * Starts a long-lived process in its own process group (so that the children it forks, such as rsync's per-
 * connection servers, are stopped with it) and registers it for stopAllProcesses().
 */
export function startProcess(cmd: string, args: readonly string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): ManagedProcess {
  const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error(`could not start ${cmd}`);
  const pid = child.pid;
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (err.length < 65536) err += s;
  });
  child.stdout?.resume();
  const exited = new Promise<number | null>((resolve) => child.once('close', (code: number | null) => resolve(code)));
  const proc: ManagedProcess = {
    pid,
    child,
    exited,
    stderr: () => err,
    async stop() {
      if (!live.has(proc)) return;
      signalGroup(pid, 'SIGTERM');
      const timer = setTimeout(() => signalGroup(pid, 'SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
      // Forked children that outlived their parent are still in the group (whose id cannot be reused meanwhile).
      signalGroup(pid, 'SIGKILL');
      live.delete(proc);
    },
  };
  live.add(proc);
  // A process that exits by itself is forgotten at once: its pid may be reused later and must never be signalled.
  void exited.then(() => {
    if (child.exitCode !== null || child.signalCode !== null) live.delete(proc);
  });
  return proc;
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

/** Stops every process started with startProcess that is still running. */
export async function stopAllProcesses(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop()));
}

/**
 * Synchronous last resort for signal handlers: SIGKILL every registered server's process group and every command
 * still running (a SIGTERM sent to the bench alone, not to its terminal's process group, reaches only the bench).
 */
export function killAllProcessesSync(): void {
  for (const p of live) signalGroup(p.pid, 'SIGKILL');
  live.clear();
  for (const pid of running) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  running.clear();
}

/** A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  if (address === null || typeof address === 'string') throw new Error('no TCP port');
  return address.port;
}

/** Waits until something accepts connections on 127.0.0.1:port, or fails after `timeoutMs`. */
export async function waitForPort(port: number, timeoutMs = 10_000, proc?: ManagedProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (proc && (proc.child.exitCode !== null || proc.child.signalCode !== null)) {
      throw new Error(`process ${proc.pid} exited before listening on ${port}: ${proc.stderr().trim()}`);
    }
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
