// `roamdesk device register|show|list|revoke|keep` and `roamdesk admin device list|revoke`.

import type { Command } from 'commander';

import type { Device } from '@roamdesk/api';

import type { CommandContext } from '../../main.ts';
import { formatTable, shortTime } from '../remote/table.ts';
import { runDevice } from './common.ts';
import { registerKeep } from './keeper.ts';

function deviceTable(devices: readonly Device[], me: string | null): string {
  if (devices.length === 0) return 'No devices.';
  return formatTable(
    ['id', 'name', 'owner', 'registered', 'last seen', 'revoked'],
    devices.map((d) => [
      `${d.id}${d.id === me ? ' (this)' : ''}`, d.name, d.owner, shortTime(d.createdAt), d.lastSeenAt === null ? '-' : shortTime(d.lastSeenAt),
      d.revokedAt === null ? '-' : shortTime(d.revokedAt),
    ]),
  );
}

export function registerDevices(program: Command, ctx: CommandContext): void {
  const device = program.command('device').description('this machine as a Roamdesk device (needed to check desktops out)');
  device
    .command('register')
    .description('register this machine with the server you are logged in to; the device credential is kept in ROAMDESK_HOME (0600)')
    .option('--name <name>', 'a name for this device (default: device-<id>)')
    .option('--force', 'register again even if this machine is already registered (the old registration stays until revoked)')
    .action((opts: { name?: string; force?: boolean }, cmd: Command) =>
      runDevice(ctx, cmd, async (agent, out) => {
        const { identity, created } = await agent.register({ ...(opts.name !== undefined ? { name: opts.name } : {}), force: opts.force === true });
        const { credential: _secret, grantKey: _key, ...shown } = identity;
        out.result({ device: shown, created }, () =>
          created ? `Registered this machine as device ${identity.name} (${identity.id}) with ${identity.server}.`
            : `This machine is already registered as device ${identity.name} (${identity.id}) with ${identity.server} (--force registers it again).`,
        );
      }),
    );
  device
    .command('show')
    .description('show this machine\'s device registration')
    .action((_opts: unknown, cmd: Command) =>
      runDevice(ctx, cmd, async (agent, out) => {
        const identity = await agent.identity.require();
        const { credential: _secret, grantKey: _key, ...shown } = identity;
        out.result({ device: shown }, () => `Device ${identity.name} (${identity.id}) of ${identity.owner}, registered with ${identity.server} at ${shortTime(identity.registeredAt)}.`);
      }),
    );
  device
    .command('list')
    .description('list your devices')
    .action((_opts: unknown, cmd: Command) =>
      runDevice(ctx, cmd, async (agent, out) => {
        const devices = await agent.listDevices();
        const me = (await agent.identity.load())?.id ?? null;
        out.result({ devices }, () => deviceTable(devices, me));
      }),
    );
  device
    .command('revoke')
    .description('revoke one of your devices (a lost laptop): its credential stops working and its late check-ins are fenced')
    .argument('<id>', 'device id (roamdesk device list)')
    .action((id: string, _opts: unknown, cmd: Command) =>
      runDevice(ctx, cmd, async (agent, out) => {
        await agent.revokeDevice(id);
        out.result({ revoked: id }, () => `Revoked device ${id}.`);
      }),
    );
  registerKeep(device, ctx);

  // Under the existing `admin` group (registered by remote/admin.ts).
  const admin = program.commands.find((c) => c.name() === 'admin') ?? program.command('admin');
  const ad = admin.command('device').description("every user's devices");
  ad
    .command('list')
    .description('list all devices')
    .action((_opts: unknown, cmd: Command) =>
      runDevice(ctx, cmd, async (agent, out) => {
        const devices = await agent.listDevices();
        out.result({ devices }, () => deviceTable(devices, null));
      }),
    );
  ad
    .command('revoke')
    .description("revoke a device: its credential stops working at once; the desktops it holds can then be rolled back")
    .argument('<id>', 'device id (roamdesk admin device list)')
    .action((id: string, _opts: unknown, cmd: Command) =>
      runDevice(ctx, cmd, async (agent, out) => {
        await agent.revokeDevice(id);
        out.result({ revoked: id }, () => `Revoked device ${id}.`);
      }),
    );
}
