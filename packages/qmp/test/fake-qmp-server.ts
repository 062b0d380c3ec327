/**
 * A fake QMP server for tests: speaks QMP over one end of a Duplex. Either script it by hand
 * (`send`, `sendRaw`, `nextCommand`, `end`) or replay a transcript recorded from real QEMU
 * (`replay`), in the spirit of noVNC's FakeWebSocket + playback.js.
 */
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';

export type TranscriptEntry =
  | { dir: 'c'; msg: ClientMessage }
  | { dir: 's'; msg: Record<string, unknown> }
  | { dir: 's'; raw: string }
  | { dir: 's'; eof: true };

export interface ClientMessage {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: unknown;
}

export function loadTranscript(name: string): TranscriptEntry[] {
  const text = readFileSync(new URL(`./transcripts/${name}.jsonl`, import.meta.url), 'utf8');
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as TranscriptEntry);
}

/** The greeting of QEMU 7.2.22 on Debian 12, as recorded. */
export const REAL_GREETING = {
  QMP: {
    version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' },
    capabilities: ['oob'],
  },
};

export class FakeQmpServer {
  readonly received: ClientMessage[] = [];
  readonly #stream: Duplex;
  readonly #queue: ClientMessage[] = [];
  readonly #waiters: ((m: ClientMessage) => void)[] = [];
  #buf = '';
  #ended = false;

  constructor(stream: Duplex) {
    this.#stream = stream;
    stream.on('data', (chunk: Buffer) => {
      this.#buf += chunk.toString('utf8');
      for (let nl = this.#buf.indexOf('\n'); nl !== -1; nl = this.#buf.indexOf('\n')) {
        const line = this.#buf.slice(0, nl);
        this.#buf = this.#buf.slice(nl + 1);
        const msg = JSON.parse(line) as ClientMessage;
        this.received.push(msg);
        const waiter = this.#waiters.shift();
        if (waiter) waiter(msg);
        else this.#queue.push(msg);
      }
    });
    stream.on('end', () => {
      // Like QEMU: when the client hangs up, close our side too.
      this.#ended = true;
      stream.end();
    });
    stream.on('error', () => {});
  }

  /** True once the client closed its side. */
  get clientEnded(): boolean {
    return this.#ended;
  }

  /** Sends one message as QEMU does: JSON + CRLF (qmp-spec 2.1.1). */
  send(msg: unknown): void {
    this.#stream.write(`${JSON.stringify(msg)}\r\n`);
  }

  sendRaw(text: string | Uint8Array): void {
    this.#stream.write(text);
  }

  greet(greeting: unknown = REAL_GREETING): void {
    this.send(greeting);
  }

  /** Greets and accepts qmp_capabilities: the client is then ready. */
  async handshake(): Promise<void> {
    this.greet();
    const caps = await this.nextCommand();
    if (caps.execute !== 'qmp_capabilities') throw new Error(`expected qmp_capabilities, got ${caps.execute}`);
    this.send({ return: {}, id: caps.id });
  }

  nextCommand(): Promise<ClientMessage> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  end(): void {
    this.#stream.end();
  }

  destroy(): void {
    this.#stream.destroy();
  }

  /**
   * Replays a transcript: server entries are sent in order; at each client entry the fake waits for
   * the client's next command, checks its name, and maps the recorded id to the one the client used.
   */
  async replay(transcript: TranscriptEntry[]): Promise<void> {
    const ids = new Map<unknown, unknown>();
    for (const entry of transcript) {
      if (entry.dir === 'c') {
        const got = await this.nextCommand();
        if (got.execute !== entry.msg.execute) {
          throw new Error(`transcript expected '${entry.msg.execute}', client sent '${got.execute}'`);
        }
        ids.set(entry.msg.id, got.id);
      } else if ('eof' in entry) {
        this.end();
      } else if ('raw' in entry) {
        this.sendRaw(entry.raw);
      } else {
        const msg = { ...entry.msg };
        if ('id' in msg && ids.has(msg['id'])) msg['id'] = ids.get(msg['id']);
        this.send(msg);
      }
    }
  }
}
