/**
 * Two connected in-memory Duplex streams, like the two ends of a socket (Node 20 has no duplexPair).
 * Delivery is deferred with setImmediate, as on a real socket: data written now is read in a later
 * turn of the event loop, never synchronously inside `write`.
 */
import { Duplex } from 'node:stream';

export function duplexPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const ended = [false, false];
  const make = (me: 0 | 1): Duplex => {
    const other = (): Duplex | undefined => ends[1 - me];
    const endOther = (): void => {
      const peer = other();
      if (peer && !ended[1 - me]) {
        ended[1 - me] = true;
        setImmediate(() => peer.push(null));
      }
    };
    return new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        const peer = other();
        if (peer && !ended[1 - me]) setImmediate(() => peer.push(chunk));
        cb();
      },
      final(cb) {
        endOther();
        cb();
      },
      destroy(err, cb) {
        // Like a socket: when one end goes away, the other reads EOF.
        endOther();
        cb(err);
      },
    });
  };
  ends.push(make(0), make(1));
  return [ends[0]!, ends[1]!];
}
