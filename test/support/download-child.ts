/**
 * A receiver in its own process, so a test can SIGKILL it mid-transfer: downloads the objects given as JSON
 * in argv into the store at argv, printing one JSON progress line per update on stdout.
 */
import { Store } from '@roamdesk/store';
import { downloadObjects, type ObjectDescription } from '@roamdesk/transfer';

const [storeRoot, apiBase, token, objectsJson] = process.argv.slice(2);
if (storeRoot === undefined || apiBase === undefined || token === undefined || objectsJson === undefined) {
  process.stderr.write('usage: download-child STORE API_BASE TOKEN OBJECTS_JSON\n');
  process.exit(2);
}
const store = await Store.open(storeRoot);
const report = await downloadObjects({
  store, remote: { apiBase, token }, objects: JSON.parse(objectsJson) as ObjectDescription[], compression: 'off', inFlight: 2, batchBytes: 4 * 1024 * 1024,
  onProgress: (p) => process.stdout.write(`${JSON.stringify({ bytesDone: p.bytesDone })}\n`),
});
process.stdout.write(`${JSON.stringify({ report })}\n`);
