// `roamdesk login URL --user U [--password-stdin]` and `roamdesk logout`.

import type { Command } from 'commander';

import { ApiClient, ApiError, ClientError, normalizeServerUrl, STATE_VERSION } from '@roamdesk/client';

import type { CommandContext } from '../../main.ts';
import { readPassword } from './password.ts';
import { explain, runRemote } from './session.ts';

export function registerAuth(program: Command, ctx: CommandContext): void {
  program
    .command('login')
    .description('log in to a Roamdesk server and remember the server and the session token')
    .argument('<url>', 'server URL, e.g. http://127.0.0.1:8760')
    .requiredOption('-u, --user <name>', 'user name')
    .option('--password-stdin', 'read the password from stdin (otherwise: a hidden prompt on a terminal)')
    .addHelpText('after', '\nThe session is stored in $ROAMDESK_HOME/state.json (mode 0600); default $XDG_CONFIG_HOME/roamdesk or ~/.config/roamdesk.')
    .action((url: string, opts: { user: string; passwordStdin?: boolean }, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        // Validate the URL before asking for a password: a typo should not cost a prompt.
        const server = normalizeServerUrl(url);
        const password = await readPassword({ fromStdin: opts.passwordStdin === true, prompt: `Password for ${opts.user} at ${server}: ` });
        const client = new ApiClient({ server });
        const r = await client.login(opts.user, password).catch((err: unknown) => {
          // No `user` in the hint context: a refusal here is about the credentials, not a stale session.
          throw explain(err, { server });
        });
        await remote.store.save({
          version: STATE_VERSION,
          server,
          session: { user: r.user.name, role: r.user.role, token: r.token, expiresAt: r.expiresAt },
        });
        // The token stays in the state file: printing it would put a credential into terminals and CI logs.
        out.result({ server, user: r.user, expiresAt: r.expiresAt, stateFile: remote.store.file }, () =>
          `Logged in to ${server} as ${r.user.name}${r.user.role === 'admin' ? ' (admin)' : ''}; the session expires at ${r.expiresAt}.`,
        );
      }),
    );

  program
    .command('logout')
    .description('revoke the session token on the server and forget it')
    .action((_opts: unknown, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const state = await remote.store.load();
        if (state.server === null || state.session === null) {
          out.result({ server: state.server, loggedOut: false }, () => 'Not logged in.');
          return;
        }
        let revoked = true;
        let warning: string | undefined;
        try {
          await new ApiClient({ server: state.server, token: state.session.token }).logout();
        } catch (err) {
          // The local token goes either way: logout must work with the server down or the token expired.
          revoked = false;
          if (err instanceof ApiError && err.status === 401) warning = undefined;
          else if (err instanceof ClientError || err instanceof ApiError) warning = `could not revoke the token on the server (${err.message}); it stays valid until ${state.session.expiresAt}`;
          else throw err;
        }
        await remote.store.save({ ...state, session: null });
        if (warning !== undefined) process.stderr.write(`roamdesk: warning: ${warning}\n`);
        out.result({ server: state.server, user: state.session.user, loggedOut: true, revoked }, () => `Logged out of ${state.server ?? ''}.`);
      }),
    );
}
