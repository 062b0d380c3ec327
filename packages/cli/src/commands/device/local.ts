// `roamdesk start|stop|logs|console NAME` when NAME is checked out to this device: they act on the LOCAL VM and
// work with the server unreachable (start still checks the offline grant). Otherwise the commands keep their
// server behaviour (remote/desktops.ts calls these first).

import { chooseDisplay, localSerialLog, type DeviceAgent } from '@roamdesk/client';

import type { Output } from '../../output.ts';
import { formatDuration } from '../../format.ts';
import { openAgent } from './common.ts';
import { launchKeeper } from './keeper.ts';
import { PAUSE_WORDS } from './status.ts';

/** The agent, when `name` has a local check-out record here; null otherwise (the command goes to the server). */
async function checkedOutHere(name: string): Promise<DeviceAgent | null> {
  const agent = await openAgent();
  return (await agent.local(name).catch(() => null)) !== null ? agent : null;
}

export async function localStart(name: string, out: Output): Promise<boolean> {
  const agent = await checkedOutHere(name);
  if (agent === null) return false;
  const r = await agent.start(name);
  const keeper = await launchKeeper(agent, name, r.runDir);
  const keeperLine = keeper === null ? '' : `Replicates to the server every ${formatDuration(keeper.replicateEverySeconds)} while it runs and the server is reachable (keeper pid ${String(keeper.pid)}, log ${keeper.log}).`;
  const common = { desktop: name, location: 'this-device', pid: r.pid, runDir: r.runDir, vncSocket: r.paths.vnc, serialLog: r.paths.serial, online: r.online, offlineLease: r.grant, keeper };
  const resumed = r.resumed;
  if (resumed !== undefined) {
    out.result({ ...common, resumed }, () =>
      [`Resumed ${name} on this device (pid ${String(r.pid)}), paused before: ${PAUSE_WORDS[resumed.reason]}. The guest goes on where it stopped.`, keeperLine].filter((l) => l !== '').join('\n'));
    return true;
  }
  const display = r.display ?? chooseDisplay();
  const headless = display === 'none';
  out.result({ ...common, display }, () =>
    [
      `Started ${name} on this device (pid ${String(r.pid)}).`,
      headless ? `Headless (no usable display here): open its screen with: roamdesk console ${name}` : `Its window opens on your display (${display}).`,
      r.grant !== null ? `Offline use allowed until ${r.grant.expiresAt}${r.online ? '' : ' (the server is unreachable: working offline)'}.` : '',
      keeperLine,
    ].filter((l) => l !== '').join('\n'),
  );
  return true;
}

/** `force`: no graceful power-down (QMP quit at once). */
export async function localStop(name: string, out: Output, opts: { force?: boolean; timeoutSeconds?: number } = {}): Promise<boolean> {
  const agent = await checkedOutHere(name);
  if (agent === null) return false;
  const timeoutMs = opts.force === true ? 0 : opts.timeoutSeconds === undefined ? undefined : opts.timeoutSeconds * 1000;
  const r = await agent.stop(name, timeoutMs === undefined ? {} : { timeoutMs });
  out.result({ desktop: name, location: 'this-device', ...r }, () =>
    !r.wasRunning ? `${name} is not running on this device.` : `Stopped ${name} on this device${r.how === 'powerdown' ? '' : ` (forced: ${r.how})`}.`,
  );
  return true;
}

export async function localLogs(name: string, tail: number | undefined, out: Output): Promise<boolean> {
  const agent = await checkedOutHere(name);
  if (agent === null) return false;
  const rec = await agent.records.require(name);
  const log = await localSerialLog(agent.home, rec.desktopId, tail ?? 64 * 1024);
  if (out.opts.json) out.result({ desktop: name, location: 'this-device', log });
  else process.stdout.write(log);
  return true;
}

export async function localConsole(name: string, out: Output): Promise<boolean> {
  const agent = await checkedOutHere(name);
  if (agent === null) return false;
  const vm = await agent.vm(name);
  // The console's WebSocket server and page are loaded only by this command.
  const { serveLocalConsole } = await import('./console.ts');
  await serveLocalConsole(name, vm, out);
  return true;
}
