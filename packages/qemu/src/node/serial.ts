/** Reads and watches the serial console log that QEMU appends to. */
import { open, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

export async function readWholeFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

/** Incremental reader: keeps an offset and returns the text appended since the last call. */
export class AppendReader {
  #offset = 0;
  #decoder = new TextDecoder();
  constructor(readonly path: string) {}

  async readNew(): Promise<string> {
    let handle;
    try {
      handle = await open(this.path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
      throw err;
    }
    try {
      const { size } = await handle.stat();
      if (size < this.#offset) this.#offset = 0; // truncated: a new run
      if (size === this.#offset) return '';
      const buf = Buffer.alloc(size - this.#offset);
      const { bytesRead } = await handle.read(buf, 0, buf.length, this.#offset);
      this.#offset += bytesRead;
      return this.#decoder.decode(buf.subarray(0, bytesRead), { stream: true });
    } finally {
      await handle.close();
    }
  }
}

/** Polling interval: the serial log is a plain file; 50 ms keeps tests snappy at negligible cost. */
export const SERIAL_POLL_MS = 50;
export { sleep };
