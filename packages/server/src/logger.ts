// The server's pino logger as the CLI wants it: JSON lines (for journald and log shippers), or, on a
// terminal, one short human line per record. No pino-pretty dependency: a few lines of formatting do.

import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };
const SKIP = new Set(['level', 'time', 'pid', 'hostname', 'msg']);

/** One JSON log record as `HH:MM:SS LEVEL message key=value …`. */
export function prettyLine(json: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const time = typeof rec['time'] === 'number' ? new Date(rec['time']).toISOString().slice(11, 19) : '';
  const level = LEVELS[Number(rec['level'])] ?? String(rec['level']);
  const rest = Object.entries(rec)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => {
      if (k === 'err' && typeof v === 'object' && v !== null) {
        const e = v as { message?: unknown; code?: unknown };
        return `err=${JSON.stringify(`${typeof e.code === 'string' ? `${e.code}: ` : ''}${String(e.message)}`)}`;
      }
      return `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`;
    });
  const msg = typeof rec['msg'] === 'string' ? rec['msg'] : '';
  return `${time} ${level} ${msg}${rest.length > 0 ? ` ${rest.join(' ')}` : ''}`;
}

export function createLogger(options: { level: string; pretty: boolean; destination?: NodeJS.WritableStream }): Logger {
  const out = options.destination ?? process.stderr;
  if (!options.pretty) return pino({ level: options.level }, out as unknown as pino.DestinationStream);
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') out.write(`${prettyLine(line)}\n`);
      done();
    },
  });
  return pino({ level: options.level }, stream);
}
