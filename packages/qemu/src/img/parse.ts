/**
 * Pure parsers for qemu-img's `--output=json` and `-p` output. They throw `TypeError` on a shape they do not
 * expect; the wrapper turns that into QemuImgOutputError with the command's context.
 */
import type { CheckReport, ImageInfo, ImgProgress, MapExtent, MeasureResult } from './types.ts';

type Json = Record<string, unknown>;

function object(value: unknown, what: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TypeError(`${what}: expected an object`);
  return value as Json;
}

function num(o: Json, key: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new TypeError(`expected number at "${key}"`);
  return v;
}

function optNum(o: Json, key: string): number | null {
  return o[key] === undefined ? null : num(o, key);
}

function optStr(o: Json, key: string): string | null {
  const v = o[key];
  if (v === undefined) return null;
  if (typeof v !== 'string') throw new TypeError(`expected string at "${key}"`);
  return v;
}

function optBool(o: Json, key: string): boolean | null {
  const v = o[key];
  if (v === undefined) return null;
  if (typeof v !== 'boolean') throw new TypeError(`expected boolean at "${key}"`);
  return v;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new TypeError(`not JSON: ${(e as Error).message}`);
  }
}

function imageInfoFrom(o: Json): ImageInfo {
  const specific = o['format-specific'] === undefined ? null : object(o['format-specific'], 'format-specific');
  const data = specific !== null && specific['data'] !== undefined ? object(specific['data'], 'format-specific.data') : null;
  const filename = optStr(o, 'filename');
  const format = optStr(o, 'format');
  if (filename === null || format === null) throw new TypeError('info: missing filename or format');
  return {
    filename,
    format,
    virtualSize: num(o, 'virtual-size'),
    actualSize: optNum(o, 'actual-size'),
    clusterSize: optNum(o, 'cluster-size'),
    dirty: optBool(o, 'dirty-flag') ?? false,
    backingFilename: optStr(o, 'backing-filename'),
    fullBackingFilename: optStr(o, 'full-backing-filename'),
    backingFormat: optStr(o, 'backing-filename-format'),
    corrupt: data === null ? null : optBool(data, 'corrupt'),
    compat: data === null ? null : optStr(data, 'compat'),
    raw: o,
  };
}

/** `qemu-img info --output=json` (one object). */
export function parseInfo(text: string): ImageInfo {
  return imageInfoFrom(object(parseJson(text), 'info'));
}

/** `qemu-img info --output=json --backing-chain` (an array, top image first). */
export function parseInfoChain(text: string): ImageInfo[] {
  const v = parseJson(text);
  if (!Array.isArray(v)) throw new TypeError('info --backing-chain: expected an array');
  return v.map((item, i) => imageInfoFrom(object(item, `info[${i}]`)));
}

/** `qemu-img check --output=json`. QAPI ImageCheck omits counters that are zero. */
export function parseCheck(text: string): CheckReport {
  const o = object(parseJson(text), 'check');
  return {
    checkErrors: optNum(o, 'check-errors') ?? 0,
    corruptions: optNum(o, 'corruptions') ?? 0,
    leaks: optNum(o, 'leaks') ?? 0,
    corruptionsFixed: optNum(o, 'corruptions-fixed') ?? 0,
    leaksFixed: optNum(o, 'leaks-fixed') ?? 0,
    totalClusters: optNum(o, 'total-clusters'),
    allocatedClusters: optNum(o, 'allocated-clusters'),
    imageEndOffset: optNum(o, 'image-end-offset'),
  };
}

/** `qemu-img map --output=json`: an array of extents (7.2 has no "filename" field per extent). */
export function parseMap(text: string): MapExtent[] {
  const v = parseJson(text);
  if (!Array.isArray(v)) throw new TypeError('map: expected an array');
  return v.map((item, i) => {
    const o = object(item, `map[${i}]`);
    return {
      start: num(o, 'start'),
      length: num(o, 'length'),
      depth: num(o, 'depth'),
      present: optBool(o, 'present') ?? true,
      zero: optBool(o, 'zero') ?? false,
      data: optBool(o, 'data') ?? false,
      offset: optNum(o, 'offset'),
    };
  });
}

/** `qemu-img measure --output=json`. */
export function parseMeasure(text: string): MeasureResult {
  const o = object(parseJson(text), 'measure');
  return { required: num(o, 'required'), fullyAllocated: num(o, 'fully-allocated'), bitmaps: optNum(o, 'bitmaps') };
}

const PROGRESS_RE = /\((\d+(?:\.\d+)?)\/100%\)/g;

/**
 * Incremental parser for `-p` output ("    (12.34/100%)\r", qemu-progress.c). Feed it stdout chunks; it calls
 * `onProgress` once per new percentage and keeps a partial record across chunk boundaries.
 */
export function createProgressParser(onProgress: (p: ImgProgress) => void): (chunk: string) => void {
  let pending = '';
  let last = -1;
  return (chunk: string) => {
    pending += chunk;
    const cut = pending.lastIndexOf('\r');
    if (cut < 0) {
      if (pending.length > 4096) pending = pending.slice(-64);
      return;
    }
    const complete = pending.slice(0, cut);
    pending = pending.slice(cut + 1);
    for (const m of complete.matchAll(PROGRESS_RE)) {
      const percent = Number(m[1]);
      if (percent !== last && percent >= 0 && percent <= 100) {
        last = percent;
        onProgress({ percent });
      }
    }
  };
}
