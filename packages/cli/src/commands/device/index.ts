import type { Command } from 'commander';

import type { CommandContext } from '../../main.ts';
import { registerDevices } from './devices.ts';
import { registerLease } from './lease.ts';

/** The device side (issue 5): device registration, check-out, replicate, check-in, rollback, quarantine. */
export function registerDevice(program: Command, ctx: CommandContext): void {
  registerDevices(program, ctx);
  registerLease(program, ctx);
}
