// `roamdesk status [NAME]` for desktops checked out to THIS device (works offline): location, lease generation,
// local vs server layers, bytes pending upload, last replication, offline-lease expiry, and with --json the local
// chain's files (`image`, `layers`, `overlay`). Without NAME: every local check-out. remote/prefetch.ts calls
// this first and keeps its server-chain status for desktops that are not checked out here.

import type { Lease } from '@roamdesk/api';
import { type CheckoutStatus, type DeviceAgent, existingLocalStore, isOffline, LeaseApi, localObjectStatus, type LocalVmPause } from '@roamdesk/client';

import { formatBytes, formatDuration, shortId } from '../../format.ts';
import type { Output } from '../../output.ts';
import { formatTable, shortTime } from '../remote/table.ts';
import { openAgent } from './common.ts';

export type ServerView = { reachable: true; lease: Lease } | { reachable: false; error: string } | { reachable: null };

/** Heartbeat (renews grants, learns of lost leases) and the server's lease, when the server answers. */
async function serverView(agent: DeviceAgent, name: string | null): Promise<ServerView> {
  const id = await agent.identity.load();
  if (id === null) return { reachable: null };
  const hb = await agent.heartbeat();
  if (!hb.online) return { reachable: false, error: hb.error ?? 'unreachable' };
  if (name === null) return { reachable: null };
  try {
    const api = new LeaseApi({ server: id.server, token: id.credential, timeoutMs: 5000 });
    return { reachable: true, lease: (await api.lease(name)).lease };
  } catch (err) {
    if (isOffline(err)) return { reachable: false, error: (err as Error).message };
    return { reachable: null };
  }
}

/** Why a local VM is paused, in words (status, and start when it resumes one). */
export const PAUSE_WORDS: Record<LocalVmPause['reason'], string> = {
  'no-space': 'no space left on its disk',
  'disk-error': 'its disk reported an I/O error',
  paused: 'paused on request',
};

export function checkoutText(s: CheckoutStatus, server: ServerView): string {
  const lines = [
    `Desktop ${s.desktop}: checked out to this device${s.device !== null ? ` (${s.device.name})` : ''} since ${shortTime(s.checkedOutAt)}, lease generation ${s.generation}, ${s.state}.`,
  ];
  if (s.state === 'lost') lines.push(`The lease moved away: ${s.lostReason ?? '?'} (local work goes to quarantine: roamdesk quarantine list).`);
  if (server.reachable === true) {
    const l = server.lease;
    lines.push(`Server: reachable; its lease is ${l.state}${l.deviceName !== null ? ` on ${l.deviceName}` : ''} at generation ${l.generation}.`);
  } else if (server.reachable === false) {
    lines.push('Server: unreachable (working offline).');
  }
  const p = s.vm.paused;
  lines.push(`Local VM: ${!s.vm.running ? 'stopped' : p === null ? `running (pid ${String(s.vm.pid)})` : `PAUSED (pid ${String(s.vm.pid)}): ${PAUSE_WORDS[p.reason]}; ${p.hint}`}.`);
  lines.push(`Layers: ${s.layerCounts.local} local, ${s.layerCounts.onServer} on the server, ${s.layerCounts.pending} sealed and not sent; ${formatBytes(s.bytesPendingUpload)} pending upload (with the overlay).`);
  lines.push(s.lastReplication !== null
    ? `Last replication: ${shortTime(s.lastReplication.at)} (top ${shortId(s.lastReplication.top)}, ${s.lastReplication.layers} layer(s), ${formatBytes(s.lastReplication.bytes)}).`
    : 'Last replication: never.');
  const r = s.scheduledReplication;
  if (r !== null) {
    const keeper = r.keeperPid !== null ? `done by the keeper (pid ${String(r.keeperPid)})` : s.vm.running ? 'no keeper runs: roamdesk start starts one' : 'done while the local VM runs';
    lines.push(`Scheduled replication: every ${formatDuration(r.everySeconds)}, next due ${shortTime(r.dueAt)}; ${keeper}.`);
  }
  const g = s.offlineLease;
  if (g === null) lines.push('Offline lease: none yet.');
  else if (g.ok) lines.push(`Offline lease: valid until ${shortTime(g.expiresAt)} (${formatDuration(g.secondsLeft)} left); last server contact ${s.lastContact !== null ? shortTime(s.lastContact) : 'never'}.`);
  else lines.push(`Offline lease: EXPIRED: ${g.reason ?? '?'}; connect to the server to renew it.`);
  lines.push(`Disk: image ${s.image}`);
  for (const l of s.layers) lines.push(`      layer ${l}`);
  if (s.overlay !== null) lines.push(`      overlay ${s.overlay}`);
  return lines.join('\n');
}

/** true when `name` (or, with name undefined, anything) is checked out here and was shown. */
export async function localStatus(name: string | undefined, out: Output): Promise<boolean> {
  const agent = await openAgent();
  if (name === undefined) {
    const server = await serverView(agent, null);
    const all = await agent.statusAll();
    out.result({ checkouts: all, server }, () => all.length === 0 ? 'No desktop is checked out to this device (roamdesk status NAME shows a desktop on the server).' : formatTable(
      ['desktop', 'generation', 'state', 'vm', 'pending', 'last replication', 'offline lease until'],
      all.map((s) => [
        s.desktop, String(s.generation), s.state, !s.vm.running ? 'stopped' : s.vm.paused === null ? 'running' : `paused (${s.vm.paused.reason})`, formatBytes(s.bytesPendingUpload),
        s.lastReplication !== null ? shortTime(s.lastReplication.at) : 'never', s.offlineLease === null ? '-' : s.offlineLease.ok ? shortTime(s.offlineLease.expiresAt) : 'EXPIRED',
      ]),
    ));
    return true;
  }
  if ((await agent.local(name).catch(() => null)) === null) return false;
  const server = await serverView(agent, name);
  const s = await agent.status(name);
  const rec = await agent.local(name);
  if (s === null || rec === null) return false;
  // The keys of the server-chain status (remote/prefetch.ts) too, for the local chain: one JSON shape for scripts.
  const objects = await localObjectStatus(await existingLocalStore(agent.home), rec.chain);
  const chain = {
    source: 'device', asOf: new Date().toISOString(), objects,
    bytesTotal: objects.reduce((n, o) => n + o.size, 0), bytesLocal: objects.reduce((n, o) => n + o.localBytes, 0),
  };
  out.result({ ...s, ...chain, server }, () => checkoutText(s, server));
  return true;
}
