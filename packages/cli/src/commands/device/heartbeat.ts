// Every command that reached the server also renews this device's offline grants (a heartbeat), so a user who
// works online never sees a grant expire. Best effort: it never fails the command. It is sent only when a grant
// has gone unrenewed for an hour (or a quarter of its allowed offline time, if that is shorter), so most commands
// pay nothing for it, and when it is sent it waits out a slow link's round trip (the command just reached the
// server: it answers).

import { DeviceAgent, resolveHome } from '@roamdesk/client';

const RENEW_AFTER_SECONDS = 3600;
const TIMEOUT_MS = 15_000;

export async function quietHeartbeat(): Promise<void> {
  try {
    const agent = new DeviceAgent({ home: resolveHome() });
    if ((await agent.identity.load()) === null) return;
    for (const rec of await agent.records.list()) {
      if (rec.state === 'lost') continue;
      const g = await agent.grantCheck(rec);
      if (g === null || !g.ok || g.offlineSeconds >= Math.min(RENEW_AFTER_SECONDS, g.maxOfflineSeconds / 4)) {
        await agent.heartbeat({ timeoutMs: TIMEOUT_MS });
        return;
      }
    }
  } catch {
    // offline, revoked, or a damaged record: the lease commands report those themselves
  }
}
