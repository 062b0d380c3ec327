/**
 * The receiving end of the loopback TCP anchor, run as its own process so that the anchor measures TCP between two
 * processes, as a transfer does: `node --import tsx bench/tcp-sink.ts PORT`.
 * For each connection it counts what arrives and answers the count as a decimal line when the sender ends. It runs
 * until it is stopped (the scenario's teardown); readiness probes that connect and send nothing get "0".
 */
import { createServer } from 'node:net';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: tcp-sink.ts PORT');
  process.exit(2);
}

const server = createServer({ noDelay: true }, (socket) => {
  let received = 0;
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length;
  });
  socket.once('end', () => socket.end(`${received}\n`));
});
server.listen(port, '127.0.0.1');
