// Byte and text helpers shared by the parser and the error messages. Pure functions, no I/O.

/** Decodes a qcow2 string field (backing file name, format name, data file name). `fatal: true` makes
 *  malformed UTF-8 an error instead of U+FFFD, so a name can never silently change meaning. Returns
 *  null when the bytes are not valid UTF-8. */
export function decodeStrictUtf8(bytes: Uint8Array): string | null {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return null;
  }
}

// Control characters (C0, DEL, C1), soft hyphen, zero-width and bidi-override characters: an untrusted name
// containing them could rewrite a terminal line or reorder what an administrator reads in a log or the web UI.
const UNSAFE_RANGES: readonly (readonly [number, number])[] = [
  [0x00, 0x1f], [0x7f, 0x9f], [0xad, 0xad], [0x200b, 0x200f], [0x2028, 0x202e], [0x2060, 0x2064], [0x2066, 0x2069],
  [0xfeff, 0xfeff],
];
const MAX_QUOTED = 120;

function escapeChar(c: string): string {
  if (c === "'" || c === '\\') return '\\' + c;
  const cp = c.codePointAt(0) ?? 0;
  return UNSAFE_RANGES.some(([lo, hi]) => cp >= lo && cp <= hi) ? `\\u{${cp.toString(16)}}` : c;
}

/** Quotes an untrusted string for a human-readable message: single quotes, unsafe characters escaped
 *  as \u{…}, long strings shortened. The raw value belongs in the error's `data`, never only here. */
export function quote(s: string): string {
  const chars = Array.from(s);
  const shown = chars.length > MAX_QUOTED ? [...chars.slice(0, MAX_QUOTED).map(escapeChar), '…'] : chars.map(escapeChar);
  return `'${shown.join('')}'`;
}

/** Hex dump of a few bytes, for messages and error data ("51 46 49 fb"). */
export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');
}

/** Formats a 32-bit magic or extension type as 0x%08x. */
export function hex32(n: number): string {
  return '0x' + (n >>> 0).toString(16).padStart(8, '0');
}
