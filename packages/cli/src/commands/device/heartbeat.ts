// Every command that reached the server also renews this device's offline grants (a heartbeat), so a user who
// works online never sees a grant expire. Best effort and quick: it never fails or slows down the command much.

import { DeviceAgent, resolveHome } from '@roamdesk/client';

export async function quietHeartbeat(): Promise<void> {
  try {
    const agent = new DeviceAgent({ home: resolveHome() });
    if ((await agent.identity.load()) === null || (await agent.records.list()).length === 0) return;
    await agent.heartbeat({ timeoutMs: 2000 });
  } catch {
    // offline, revoked, or a damaged record: the lease commands report those themselves
  }
}
