import type { Command } from 'commander';

import type { CommandContext } from '../main.ts';

/** `roamdesk server`: runs the broker (the main job). */
export function registerServer(_program: Command, _ctx: CommandContext): void {}
