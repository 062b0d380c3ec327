/**
 * The device agent in its own process, so a test can SIGKILL it mid-transfer: runs `checkout` or `checkin` of a
 * desktop for the home and session given in argv, printing one JSON line per transfer progress update and a last
 * line with the result (or the error).
 */
import { DeviceAgent } from '@roamdesk/client';

const [home, op, name, server, token] = process.argv.slice(2);
if (home === undefined || (op !== 'checkout' && op !== 'checkin') || name === undefined || server === undefined || token === undefined) {
  process.stderr.write('usage: device-child HOME checkout|checkin NAME SERVER TOKEN\n');
  process.exit(2);
}
const agent = new DeviceAgent({ home, session: { server, token } });
const onProgress = (p: { step: string; transfer?: { bytesDone: number; bytesTotal: number } }): void => {
  if (p.transfer !== undefined) process.stdout.write(`${JSON.stringify({ step: p.step, bytesDone: p.transfer.bytesDone, bytesTotal: p.transfer.bytesTotal })}\n`);
};
try {
  const result = op === 'checkout' ? await agent.checkout(name, { onProgress }) : await agent.checkin(name, { onProgress });
  process.stdout.write(`${JSON.stringify({ result })}\n`);
} catch (err) {
  process.stdout.write(`${JSON.stringify({ error: { code: (err as { code?: string }).code, message: (err as Error).message } })}\n`);
  process.exitCode = 1;
}
