/**
 * Splits a byte stream into QMP lines. The server terminates every message with CRLF (qmp-spec
 * 2.1.1); we split on LF and drop a trailing CR, so a bare-LF peer (our fakes) works too.
 * Multi-byte UTF-8 sequences may straddle chunks, hence the streaming TextDecoder.
 */

/**
 * Why 64 MiB: the biggest real reply, query-qmp-schema, is about 200 KiB in QEMU 7.2; a line far
 * beyond that means a broken or hostile peer, and buffering it forever would exhaust memory.
 */
export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;

export class LineTooLongError extends Error {
  constructor(readonly length: number, readonly limit: number) {
    super(`QMP line longer than ${limit} characters (${length} buffered without a newline)`);
  }
}

export class LineSplitter {
  readonly #decoder = new TextDecoder('utf-8');
  readonly #maxLine: number;
  #partial: string[] = [];
  #partialLength = 0;

  constructor(maxLineLength = DEFAULT_MAX_LINE_BYTES) {
    this.#maxLine = maxLineLength;
  }

  /** Feeds a chunk; returns the complete lines it finished (without terminators). */
  push(chunk: Uint8Array | string): string[] {
    const text = typeof chunk === 'string' ? chunk : this.#decoder.decode(chunk, { stream: true });
    const lines: string[] = [];
    let start = 0;
    for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
      this.#partial.push(text.slice(start, nl));
      const line = this.#partial.join('');
      this.#partial = [];
      this.#partialLength = 0;
      lines.push(line.endsWith('\r') ? line.slice(0, -1) : line);
      start = nl + 1;
    }
    if (start < text.length) {
      // Keep pieces in an array: joining on every chunk would be quadratic for long replies.
      this.#partial.push(text.slice(start));
      this.#partialLength += text.length - start;
      if (this.#partialLength > this.#maxLine) throw new LineTooLongError(this.#partialLength, this.#maxLine);
    }
    return lines;
  }

  /** Text received after the last newline (an unterminated message at end of stream). */
  rest(): string {
    return this.#partial.join('') + this.#decoder.decode();
  }
}
