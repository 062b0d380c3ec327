/**
 * The roamdesk command line. Exit codes: 0 ok, 1 the operation failed, 2 the command line was wrong.
 * Every command accepts --json (one JSON document on stdout) and --verbose (error details).
 */
import { Command, CommanderError } from 'commander';

import { registerDemo } from './commands/demo.ts';
import { registerDevice } from './commands/device/index.ts';
import { registerRemote } from './commands/remote.ts';
import { registerServer } from './commands/server.ts';
import { CliUsageError } from './errors.ts';
import { Output } from './output.ts';

export interface CommandContext {
  /** Output for the command being run, built from the global options. */
  output(cmd: Command): Output;
}

const context: CommandContext = {
  output(cmd) {
    const opts = cmd.optsWithGlobals<{ json?: boolean; verbose?: boolean }>();
    return new Output({ json: opts.json === true, verbose: opts.verbose === true });
  },
};

export function buildProgram(): Command {
  const program = new Command('roamdesk')
    .description('Roamdesk: desktops that run on a server, check out to your machine, and check back in.')
    .option('--json', 'print one JSON document on stdout instead of text')
    .option('-v, --verbose', 'show error details')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerServer(program, context);
  registerRemote(program, context);
  registerDevice(program, context);
  registerDemo(program, context);
  return program;
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version are not failures; anything else commander raises is a usage mistake.
      return err.exitCode === 0 ? 0 : 2;
    }
    const json = argv.includes('--json');
    new Output({ json, verbose: argv.includes('--verbose') || argv.includes('-v') }).error(err);
    return err instanceof CliUsageError ? 2 : 1;
  }
}

process.exitCode = await main(process.argv);
