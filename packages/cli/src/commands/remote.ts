import type { Command } from 'commander';

import type { CommandContext } from '../main.ts';
import { registerAdmin } from './remote/admin.ts';
import { registerAuth } from './remote/auth.ts';
import { registerDesktops } from './remote/desktops.ts';
import { registerPrefetch } from './remote/prefetch.ts';

/** Commands that talk to a Roamdesk server: login, logout, desktops, start, stop, logs, console, export, prefetch, status, admin … */
export function registerRemote(program: Command, ctx: CommandContext): void {
  registerAuth(program, ctx);
  registerDesktops(program, ctx);
  registerPrefetch(program, ctx);
  registerAdmin(program, ctx);
}
