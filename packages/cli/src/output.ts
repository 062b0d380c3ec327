/**
 * How the CLI speaks: human text on a terminal, or one JSON document on stdout with --json.
 * Every command returns a result object; the renderer for humans is chosen by the command.
 */
export interface OutputOptions {
  json: boolean;
  verbose: boolean;
}

/** An error as the CLI shows it: every Roamdesk error carries a stable code and structured data. */
export interface ErrorView {
  code: string;
  message: string;
  data?: Record<string, unknown>;
}

export function describeError(err: unknown): ErrorView {
  if (err instanceof Error) {
    const withCode = err as Error & { code?: unknown; data?: unknown };
    const code = typeof withCode.code === 'string' ? withCode.code : 'INTERNAL';
    const data = typeof withCode.data === 'object' && withCode.data !== null ? (withCode.data as Record<string, unknown>) : undefined;
    return data === undefined ? { code, message: err.message } : { code, message: err.message, data };
  }
  return { code: 'INTERNAL', message: String(err) };
}

export class Output {
  constructor(readonly opts: OutputOptions) {}

  /** Progress and story lines go to stderr, so stdout stays machine-readable with --json. */
  info(line: string): void {
    if (!this.opts.json) process.stdout.write(`${line}\n`);
    else process.stderr.write(`${line}\n`);
  }

  result(value: unknown, human?: () => string): void {
    if (this.opts.json) {
      process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
    } else if (human !== undefined) {
      const text = human();
      if (text.length > 0) process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    }
  }

  error(err: unknown): void {
    const view = describeError(err);
    if (this.opts.json) {
      process.stdout.write(`${JSON.stringify({ error: view }, null, 2)}\n`);
      return;
    }
    process.stderr.write(`roamdesk: ${view.message} [${view.code}]\n`);
    const hint = view.data?.['hint'];
    if (typeof hint === 'string') process.stderr.write(`  hint: ${hint}\n`);
    if (this.opts.verbose) {
      if (view.data !== undefined) process.stderr.write(`  data: ${JSON.stringify(view.data)}\n`);
      if (err instanceof Error && err.stack !== undefined) process.stderr.write(`${err.stack}\n`);
      let cause = err instanceof Error ? err.cause : undefined;
      while (cause instanceof Error) {
        process.stderr.write(`  caused by: ${cause.message}\n`);
        cause = cause.cause;
      }
    }
  }
}
