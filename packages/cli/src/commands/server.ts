/**
 * `roamdesk server`: runs the broker (the main job) until SIGINT/SIGTERM. Desktops' VMs are detached from this
 * process: stopping the server leaves them running, and the next start re-adopts them.
 */
import type { Command } from 'commander';

import { readFile } from 'node:fs/promises';

import type { ServerHandle } from '@roamdesk/server';

import { CliUsageError } from '../errors.ts';
import type { CommandContext } from '../main.ts';

interface ServerOptions {
  config?: string;
  listen: string;
  data?: string;
  demo?: boolean;
  logLevel: string;
  tlsCert?: string;
  tlsKey?: string;
}

export function registerServer(program: Command, ctx: CommandContext): void {
  program
    .command('server')
    .description('Run the Roamdesk server (HTTP API, web UI, desktops as QEMU VMs)')
    .option('--config <file>', 'a JSON file of server settings (packages/server/README.md "Configuration"), e.g. {"lease": {"replicateEverySeconds": 14400}}; the options below override it')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:8760')
    .option('--data <dir>', 'data directory (default $XDG_DATA_HOME/roamdesk, else ~/.local/share/roamdesk)')
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate (leaf first, then intermediates); needs --tls-key')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert (both are re-read on SIGHUP)')
    .option('--demo', 'also import the tiny guest as image "demo", user "demo" and desktop "demo"')
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent', 'info')
    .action(async (opts: ServerOptions, cmd: Command) => {
      // Loaded here, not at the top: the server and its dependencies take about a second to load, which every
      // other roamdesk command would otherwise pay at start-up.
      const { createLogger, defaultDataDir, startServer } = await import('@roamdesk/server');
      const { demoInstructions, provisionDemo } = await import('./server-demo.ts');
      const out = ctx.output(cmd);
      const config: Record<string, unknown> = opts.config !== undefined ? await readConfigFile(opts.config) : {};
      // An option left at its default does not override the file.
      for (const [key, value] of [['listen', opts.listen], ['logLevel', opts.logLevel]] as const) {
        if (cmd.getOptionValueSource(key) !== 'default' || config[key] === undefined) config[key] = value;
      }
      if (opts.data !== undefined) config['dataDir'] = opts.data;
      else if (config['dataDir'] === undefined && defaultDataDir(process.env) === undefined) throw new CliUsageError('no data directory: pass --data DIR (HOME and XDG_DATA_HOME are unset)');
      if ((opts.tlsCert === undefined) !== (opts.tlsKey === undefined)) throw new CliUsageError('--tls-cert and --tls-key go together: give both, or neither for plain HTTP');
      if (opts.tlsCert !== undefined && opts.tlsKey !== undefined) config['tls'] = { certFile: opts.tlsCert, keyFile: opts.tlsKey };
      const logger = createLogger({ level: typeof config['logLevel'] === 'string' ? config['logLevel'] : opts.logLevel, pretty: process.stderr.isTTY });

      const handle: ServerHandle = await startServer(config, { logger });
      logger.info({ url: handle.url, dataDir: handle.config.dataDir }, 'roamdesk server listening');
      handle.closed
        .then(() => logger.info('server stopped; running desktops keep running and are re-adopted at the next start'))
        .catch(() => {});
      const summary: Record<string, unknown> = { url: handle.url, dataDir: handle.config.dataDir };
      if (handle.initialAdminPassword !== undefined) {
        // Shown exactly once: it is stored nowhere but as a hash.
        summary['adminPassword'] = handle.initialAdminPassword;
        out.info(`Administrator: user admin, password ${handle.initialAdminPassword}  (shown once; change it or set ROAMDESK_ADMIN_PASSWORD)`);
      }
      if (opts.demo === true) {
        try {
          const ready = await provisionDemo(handle, process.env);
          summary['demo'] = ready;
          out.info(demoInstructions(handle.url, ready));
        } catch (err) {
          await handle.close();
          throw err;
        }
      }
      out.result(summary);
      await handle.closed;
      // Watchers of re-adopted VMs poll /proc and would keep the event loop alive after close: the CLI decides
      // to end here (the VMs themselves are separate processes and keep running).
      setTimeout(() => process.exit(process.exitCode ?? 0), 50).unref();
    });
}

/** The settings file: a JSON object (the server checks every key and value, and names each one it refuses). */
async function readConfigFile(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new CliUsageError(`cannot read the settings file ${file}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CliUsageError(`the settings file ${file} is not JSON: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CliUsageError(`the settings file ${file} must hold a JSON object`);
  return value as Record<string, unknown>;
}
