/** Errors the CLI itself raises. Exit codes: 0 ok, 1 the operation failed, 2 the command line was wrong. */
export class CliError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly data: Readonly<Record<string, unknown>> = {},
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'CliError';
  }
}

/** A usage mistake: exit code 2. */
export class CliUsageError extends CliError {
  constructor(message: string, data: Readonly<Record<string, unknown>> = {}) {
    super('CLI_USAGE', message, data);
    this.name = 'CliUsageError';
  }
}
