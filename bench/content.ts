/**
 * Synthetic guest content with the compressibility of a real desktop disk, made from a seeded stream.
 *
 * The measured base (notes/performance.md: ext4 holding /usr plus media) compresses 2.48× with zstd -1; its overlay
 * payloads (real files not in the base, a quarter random) only 1.32×. Four kinds of bytes give those ratios:
 * - text: pseudo-words with a Zipf frequency, separators, indentation and repeated phrases (source, docs, configs);
 * - binary: 16-byte records drawn from a few templates with one byte changed (executables, tables, databases);
 * - random: incompressible (media, archives, encrypted files);
 * - sparse: a small header in every 4 KiB page and zeros after it (preallocated files, databases' free pages);
 * and runs of zeros inside text and binary files (padding, sparse regions of real files).
 * Measured with zstd -1 on 64 MiB of each: text 5.0×, binary 3.4×, random 1.0×, sparse ≈ 28×; the base mix below
 * gives 2.6×, the overlay mix 1.27×.
 * Every byte is new: word and record choices come from the stream, so no two 64 KiB clusters repeat and no tool
 * gains from accidental duplicates.
 */
import type { Rng } from './prng.ts';

export type ContentKind = 'text' | 'binary' | 'random' | 'sparse';

/** Share of each kind of content in a set of files. */
export type ContentMix = Readonly<Record<ContentKind, number>>;

export const CONTENT_KINDS: readonly ContentKind[] = ['text', 'binary', 'random', 'sparse'];

/** The base image: 35 % text, 25 % binary, 25 % random, 15 % sparse files (zstd -1 ≈ 2.6×). */
export const BASE_MIX: ContentMix = { text: 0.35, binary: 0.25, random: 0.25, sparse: 0.15 };
/** Overlay payloads: mostly new media and compressed files, some text and binaries (zstd -1 ≈ 1.3×). */
export const PAYLOAD_MIX: ContentMix = { text: 0.13, binary: 0.21, random: 0.66, sparse: 0 };

/** Zero runs inside text and binary files: how often and how long (bytes). Tuned with the mixes above. */
const ZERO_RUN_EVERY_BYTES = 96 * 1024;
const ZERO_RUN_MIN = 512;
/** Below 64 KiB so that no cluster becomes all zeros (qemu-img convert would leave it unallocated). */
const ZERO_RUN_MAX = 24 * 1024;

const VOCABULARY_SIZE = 4096;
/** A text token repeats an earlier phrase when its 16-bit random number is below this (tuned for zstd -1 ≈ 5×). */
const TEXT_REPEAT_BELOW = 12000;
/** Bytes changed in each 16-byte binary record (tuned for zstd -1 ≈ 3.4×; 2 changes give 2.3×). */
const BINARY_CHANGES_PER_RECORD = 1;
const LETTERS = 'etaoinshrdlcumwfgypbvkjxqz_0123456789';
/** English-like letter weights so the byte histogram looks like text, not uniform letters. */
const LETTER_WEIGHTS = [
  12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.2,
  0.2, 0.1, 0.1, 1.5, 0.6, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
];
const SEPARATORS = [' ', ' ', ' ', ' ', ' ', ' ', ', ', '. ', '\n', '\n    ', '\n        ', '(', ') ', ' = ', '; ', '.', '/', ': '];

/** Tables built once per seed (the vocabulary, the byte distribution) and the buffers every fill reuses. */
export class ContentSource {
  /** All words, each followed by a separator, back to back. */
  readonly #words: Buffer;
  readonly #wordStart: Uint32Array;
  readonly #wordLen: Uint8Array;
  /** Maps a uniform 16-bit number to a word index with a Zipf-like distribution. */
  readonly #zipf: Uint16Array;
  /** Maps a uniform 16-bit number to a byte with a skewed distribution (small values common). */
  readonly #skewedByte: Uint8Array;
  /** Reused random bytes: memory touched for the first time is slow on the project's VMs (see prng.ts). */
  readonly #scratch = Buffer.alloc(65536);
  readonly #random16 = new Uint16Array(this.#scratch.buffer, this.#scratch.byteOffset, this.#scratch.length >>> 1);
  readonly #templates = Buffer.alloc(32 * 16);

  constructor(rng: Rng) {
    const pieces: Buffer[] = [];
    this.#wordStart = new Uint32Array(VOCABULARY_SIZE);
    this.#wordLen = new Uint8Array(VOCABULARY_SIZE);
    let at = 0;
    for (let w = 0; w < VOCABULARY_SIZE; w++) {
      const len = rng.range(1, 4) + rng.range(0, 7);
      let word = '';
      for (let i = 0; i < len; i++) word += LETTERS[rng.pick(LETTER_WEIGHTS)] ?? 'e';
      word += SEPARATORS[rng.int(SEPARATORS.length)] ?? ' ';
      const bytes = Buffer.from(word, 'latin1');
      pieces.push(bytes);
      this.#wordStart[w] = at;
      this.#wordLen[w] = bytes.length;
      at += bytes.length;
    }
    this.#words = Buffer.concat(pieces);

    this.#zipf = new Uint16Array(65536);
    const weights = Array.from({ length: VOCABULARY_SIZE }, (_, r) => 1 / (r + 2.7));
    const total = weights.reduce((a, b) => a + b, 0);
    let slot = 0;
    let cumulative = 0;
    for (let r = 0; r < VOCABULARY_SIZE; r++) {
      cumulative += (weights[r] ?? 0) / total;
      const end = Math.min(65536, Math.round(cumulative * 65536));
      for (; slot < end; slot++) this.#zipf[slot] = r;
    }
    for (; slot < 65536; slot++) this.#zipf[slot] = VOCABULARY_SIZE - 1;

    this.#skewedByte = new Uint8Array(65536);
    for (let i = 0; i < 65536; i++) {
      const u = i / 65536;
      // Two thirds small numbers (exponential), the rest any byte: like lengths, flags and pointers in binaries.
      this.#skewedByte[i] = u < 0.66 ? Math.min(255, Math.floor(-Math.log(1 - u / 0.66) * 6)) : Math.floor(((u - 0.66) / 0.34) * 256);
    }
  }

  /** Fills `out` with one file's worth of content of the given kind, using `rng` for every choice. */
  fill(kind: ContentKind, rng: Rng, out: Buffer): void {
    switch (kind) {
      case 'random':
        rng.fill(out);
        return;
      case 'sparse':
        this.#fillSparse(rng, out);
        return;
      case 'text':
        this.#fillText(rng, out);
        break;
      case 'binary':
        this.#fillBinary(rng, out);
        break;
    }
    addZeroRuns(rng, out);
  }

  /** Fills `out` from a mix: each piece of `pieceBytes` gets one kind (an overlay write touches many files). */
  fillMixed(mix: ContentMix, rng: Rng, out: Buffer, pieceBytes = 65536): void {
    const weights = CONTENT_KINDS.map((k) => mix[k]);
    for (let at = 0; at < out.length; at += pieceBytes) {
      const kind = CONTENT_KINDS[rng.pick(weights)] ?? 'random';
      this.fill(kind, rng, out.subarray(at, Math.min(out.length, at + pieceBytes)));
    }
  }

  #fillText(rng: Rng, out: Buffer): void {
    const words = this.#words;
    const zipf = this.#zipf;
    const r16 = this.#random16;
    let k = r16.length;
    let o = 0;
    while (o < out.length) {
      if (k >= r16.length - 1) {
        rng.fill(this.#scratch);
        k = 0;
      }
      const r = r16[k++] as number;
      if (r < TEXT_REPEAT_BELOW && o >= 4096) {
        // Repeat an earlier phrase of this file (code lines, boilerplate): the matches real text gives LZ.
        const len = Math.min(16 + (r & 63), out.length - o);
        const from = o - 64 - ((r16[k++] as number) & 4095);
        out.copyWithin(o, from, from + len);
        o += len;
        continue;
      }
      const w = zipf[r] as number;
      const start = this.#wordStart[w] as number;
      const len = Math.min(this.#wordLen[w] as number, out.length - o);
      for (let i = 0; i < len; i++) out[o + i] = words[start + i] as number;
      o += len;
    }
  }

  #fillBinary(rng: Rng, out: Buffer): void {
    // 16-byte records from 32 templates of this file with a byte changed: matches of 4–15 bytes, like
    // instruction streams and tables of structs.
    const templates = this.#templates;
    const skewed = this.#skewedByte;
    const rnd = this.#scratch;
    rng.fill(rnd);
    for (let i = 0; i < templates.length; i++) templates[i] = skewed[rnd.readUInt16LE(i * 2)] as number;
    let r = rnd.length;
    for (let o = 0; o < out.length; o += 16) {
      if (r > rnd.length - 8) {
        rng.fill(rnd);
        r = 0;
      }
      const t = ((rnd[r++] as number) & 31) * 16;
      const n = Math.min(16, out.length - o);
      for (let i = 0; i < n; i++) out[o + i] = templates[t + i] as number;
      for (let m = 0; m < BINARY_CHANGES_PER_RECORD; m++) {
        const pos = (rnd[r++] as number) & 15;
        const value = skewed[((rnd[r++] as number) << 8) | (rnd[r++] as number)] as number;
        if (pos < n) out[o + pos] = value;
      }
    }
  }

  #fillSparse(rng: Rng, out: Buffer): void {
    // A binary header of 128–640 bytes per 4 KiB page keeps every cluster allocated: qemu-img convert would drop an
    // all-zero cluster and change the allocation the workload promises.
    this.#fillBinary(rng, out);
    for (let page = 0; page < out.length; page += 4096) {
      const header = 128 + rng.int(512);
      out.fill(0, Math.min(out.length, page + header), Math.min(out.length, page + 4096));
    }
  }
}

/** Puts runs of zeros into `out`, about one per ZERO_RUN_EVERY_BYTES. */
function addZeroRuns(rng: Rng, out: Buffer): void {
  const runs = Math.floor(out.length / ZERO_RUN_EVERY_BYTES + rng.float());
  for (let i = 0; i < runs; i++) {
    const len = Math.min(out.length, rng.logRange(ZERO_RUN_MIN, ZERO_RUN_MAX));
    const at = rng.int(out.length - len + 1);
    out.fill(0, at, at + len);
  }
}
