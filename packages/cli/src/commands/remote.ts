import type { Command } from 'commander';

import type { CommandContext } from '../main.ts';

/** Commands that talk to a Roamdesk server: login, logout, desktops, start, stop, logs, console, export, admin … */
export function registerRemote(_program: Command, _ctx: CommandContext): void {}
