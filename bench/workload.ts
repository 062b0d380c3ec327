/**
 * The deterministic benchmark workload (notes/performance.md, "Proposed benchmark workload"): a base image, the
 * layer a check-out ships, the check-in on top of it, a base update that shifts the qcow2 layout, and a sparse
 * 256 GiB variant. Everything comes from a seeded stream, so every machine measures the same bytes; the files are
 * cached under .cache/bench/<params-hash>/ and rebuilt only when the parameters (or GENERATOR_VERSION) change.
 *
 * How the files are made, and why:
 * - base: a sparse raw file written with positional writes (holes stay unallocated), then
 *   `qemu-img convert -O qcow2 -o cluster_size=65536`: fast, and the qcow2 is laid out as qemu-img lays out a
 *   flattened base.
 * - layer, check-in, base update: overlays written by ONE `qemu-io` process per batch of `write -s PAYLOAD OFF LEN`
 *   commands, so the overlays are allocated as a guest writing those extents would allocate them.
 * - backing names are relative (`-b v1.qcow2`, created from inside the directory) so files can be copied elsewhere
 *   with their backing file linked beside them.
 *
 * Run alone to build and print the description: `node --import tsx bench/workload.ts [--size 4g|16g|1g]`.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, open, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { BASE_MIX, CONTENT_KINDS, ContentSource, PAYLOAD_MIX, type ContentKind, type ContentMix } from './content.ts';
import { hasCommand, runCommand } from './exec.ts';
import { removeTree } from './fsutil.ts';
import { Rng } from './prng.ts';
import { createOverlay } from './qemu-img.ts';

/** Bump when the generator's output changes for the same parameters: the cache is then rebuilt. */
const GENERATOR_VERSION = 1;

export const GiB = 1024 ** 3;
const CLUSTER = 65536;
/** The counts in notes/performance.md are given per 4 GiB of virtual disk; they scale linearly with the size. */
const REFERENCE_VIRTUAL = 4 * GiB;
/** Largest base file, in clusters (32 MiB): sizes are log-uniform from one cluster up to this. */
const MAX_FILE_CLUSTERS = 512;
/** qemu-io commands per process: keeps argv far below ARG_MAX even for the 16 GiB workload. */
const QEMU_IO_BATCH = 400;

/** The repository root; the cache lives in its .cache/ (git-ignored). */
export const REPO_ROOT = resolve(import.meta.dirname, '..');
export const CACHE_ROOT = join(REPO_ROOT, '.cache', 'bench');

export interface WriteCounts {
  /** Scattered single-cluster (64 KiB) writes. */
  readonly scattered64k: number;
  /** Runs of 1 MiB (16 clusters). */
  readonly runs1m: number;
}

export interface WorkloadParams {
  readonly version: number;
  readonly seed: string;
  readonly virtualBytes: number;
  /** Virtual size of the sparse variant: same allocated bytes and same layer size, over a much larger disk. */
  readonly sparseVirtualBytes: number;
  readonly clusterBytes: number;
  /** Share of the base's clusters that hold data (the measured base: 63 %). */
  readonly allocatedFraction: number;
  readonly baseMix: ContentMix;
  readonly payloadMix: ContentMix;
  /** The check-out delta: 5 % of the disk, uniform over it. */
  readonly layer: WriteCounts;
  /** The check-in: 1 %, `overlapFraction` of the writes landing on clusters the layer already holds. */
  readonly checkin: WriteCounts & { readonly overlapFraction: number };
  /** The base update: 3 %, `inHolesFraction` of the writes landing where the base had no data (layout shift). */
  readonly update: WriteCounts & { readonly inHolesFraction: number };
}

/** Parameters for a virtual disk size, with the per-4-GiB counts of notes/performance.md scaled to it. */
export function workloadParams(virtualBytes: number): WorkloadParams {
  const k = virtualBytes / REFERENCE_VIRTUAL;
  const n = (per4GiB: number): number => Math.max(1, Math.round(per4GiB * k));
  return {
    version: GENERATOR_VERSION,
    seed: 'roamdesk-bench-1',
    virtualBytes,
    sparseVirtualBytes: 256 * GiB,
    clusterBytes: CLUSTER,
    allocatedFraction: 0.63,
    baseMix: BASE_MIX,
    payloadMix: PAYLOAD_MIX,
    layer: { scattered64k: n(1800), runs1m: n(92) },
    checkin: { scattered64k: n(400), runs1m: n(14), overlapFraction: 0.3 },
    update: { scattered64k: n(1100), runs1m: n(54), inHolesFraction: 0.4 },
  };
}

/** One image file of the workload. */
export interface ImageFile {
  /** Path relative to the workload directory (stable across machines). */
  readonly file: string;
  /** Absolute path. */
  readonly path: string;
  readonly fileBytes: number;
  readonly virtualBytes: number;
  /** Backing name written in the qcow2 header (relative to the image's directory), or null. */
  readonly backing: string | null;
}

export interface BaseImage extends ImageFile {
  /** Guest bytes holding data (allocated clusters × 64 KiB). */
  readonly allocatedBytes: number;
  /** zstd -1 compression ratio of the whole file, when the zstd CLI was there. */
  readonly zstd1Ratio: number | null;
}

export interface LayerImage extends ImageFile {
  /** Write commands that made it. */
  readonly writes: number;
  /** Guest bytes changed relative to its backing chain (distinct clusters written × 64 KiB). */
  readonly changedBytes: number;
  readonly zstd1Ratio: number | null;
}

export interface UpdatedBase extends ImageFile {
  readonly writes: number;
  /** Guest bytes that differ from v1. */
  readonly changedBytes: number;
  /** Of those, the bytes where v1 had no data: they make the flattened file's layout shift. */
  readonly inHolesBytes: number;
}

/** The whole workload: what scenarios read (all paths absolute). */
export interface Workload {
  readonly dir: string;
  readonly hash: string;
  readonly params: WorkloadParams;
  /** Base v1 (standalone qcow2). */
  readonly base: BaseImage;
  /** The check-out layer: overlay on v1.qcow2, 5 % of the disk. */
  readonly layer: LayerImage;
  /** The check-in: overlay on layer.qcow2, 1 % of the disk. changedBytes is relative to the layer. */
  readonly checkin: LayerImage;
  /**
   * The layer after the client's check-in writes, in one file (backing v1.qcow2): the "client overlay" of the
   * notes' check-in anchor (rsync pushes it onto the server's copy of layer.qcow2). changedBytes = checkin's.
   */
  readonly clientLayer: LayerImage;
  /** Base v2: v1 plus 3 %, flattened into a standalone qcow2. */
  readonly v2: UpdatedBase;
  /**
   * A base with v1's allocated bytes over 256 GiB virtual, a layer of the same size as `layer` on it, and a
   * check-in of the same size as `checkin` on that layer.
   */
  readonly sparse: { readonly base: BaseImage; readonly layer: LayerImage; readonly checkin: LayerImage };
  /** Seconds the generation took (0 when it came from the cache). */
  readonly generatedSeconds: number;
}

/** Bumped whenever generate() makes other files from the same parameters: an older cache is not reused. */
const WORKLOAD_FORMAT = 2;

/** Parameters' fingerprint: the cache directory's name. */
export function paramsHash(params: WorkloadParams): string {
  return createHash('sha256').update(JSON.stringify({ format: WORKLOAD_FORMAT, ...params })).digest('hex').slice(0, 16);
}

/** Returns the cached workload for `params`, building it first when missing or stale. */
export async function ensureWorkload(params: WorkloadParams, log: (msg: string) => void = () => {}): Promise<Workload> {
  const hash = paramsHash(params);
  const dir = join(CACHE_ROOT, hash);
  const cached = await loadWorkload(dir, hash);
  if (cached) return cached;

  await mkdir(CACHE_ROOT, { recursive: true });
  await removeStaleTempDirs();
  const tmp = `${dir}.tmp-${process.pid}`;
  await removeTree(tmp);
  await mkdir(tmp, { recursive: true });
  let seconds: number;
  try {
    const t0 = performance.now();
    log(`generating workload ${hash} (${params.virtualBytes / GiB} GiB virtual) in ${tmp}`);
    const facts = await generate(params, tmp, log);
    // Make the files durable now, so their write-back does not run into the first measurements.
    await runCommand('sync', []);
    seconds = (performance.now() - t0) / 1000;
    const stored: StoredWorkload = { hash, params, ...facts, generatedSeconds: seconds };
    await writeFile(join(tmp, MANIFEST), JSON.stringify(stored, null, 2));
    await removeTree(dir);
    await rename(tmp, dir);
    log(`workload ready in ${seconds.toFixed(1)} s`);
  } catch (e) {
    await removeTree(tmp);
    throw e;
  }
  const made = await loadWorkload(dir, hash);
  if (!made) throw new Error(`workload in ${dir} is unreadable right after generation`);
  return { ...made, generatedSeconds: seconds };
}

const MANIFEST = 'workload.json';

/** What workload.json holds: the description without absolute paths (the directory may move). */
type StoredImage<T extends ImageFile> = Omit<T, 'path'>;
interface StoredWorkload {
  readonly hash: string;
  readonly params: WorkloadParams;
  readonly base: StoredImage<BaseImage>;
  readonly layer: StoredImage<LayerImage>;
  readonly checkin: StoredImage<LayerImage>;
  readonly clientLayer: StoredImage<LayerImage>;
  readonly v2: StoredImage<UpdatedBase>;
  readonly sparse: { readonly base: StoredImage<BaseImage>; readonly layer: StoredImage<LayerImage>; readonly checkin: StoredImage<LayerImage> };
  readonly generatedSeconds: number;
}

/** Reads workload.json and checks that every file is there with its recorded size; undefined when not usable. */
async function loadWorkload(dir: string, hash: string): Promise<Workload | undefined> {
  let stored: StoredWorkload;
  try {
    stored = JSON.parse(await readFile(join(dir, MANIFEST), 'utf8')) as StoredWorkload;
  } catch {
    return undefined;
  }
  if (stored.hash !== hash) return undefined;
  const at = <T extends ImageFile>(img: StoredImage<T>): T => ({ ...img, path: join(dir, img.file) }) as T;
  const w: Workload = {
    dir,
    hash,
    params: stored.params,
    base: at(stored.base),
    layer: at(stored.layer),
    checkin: at(stored.checkin),
    clientLayer: at(stored.clientLayer),
    v2: at(stored.v2),
    sparse: { base: at(stored.sparse.base), layer: at(stored.sparse.layer), checkin: at(stored.sparse.checkin) },
    generatedSeconds: 0,
  };
  for (const img of [w.base, w.layer, w.checkin, w.clientLayer, w.v2, w.sparse.base, w.sparse.layer, w.sparse.checkin]) {
    const st = await stat(img.path).catch(() => undefined);
    if (st?.size !== img.fileBytes) return undefined;
  }
  return w;
}

/**
 * Deletes what a killed bench left behind (SIGKILL skips every cleanup): half-built workloads (`<hash>.tmp-<pid>`)
 * and run directories (`work-<time>-<pid>`) whose pid no longer runs.
 */
export async function removeStaleTempDirs(): Promise<void> {
  let names: string[];
  try {
    names = await readdir(CACHE_ROOT);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^(?:[0-9a-f]+\.tmp|work-.+)-(\d+)$/.exec(name);
    if (!m) continue;
    let alive = true;
    try {
      process.kill(Number(m[1]), 0);
    } catch {
      alive = false;
    }
    if (!alive) await removeTree(join(CACHE_ROOT, name));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Planning: where data goes (pure, seeded)

/** A run of clusters. */
interface Extent {
  readonly cluster: number;
  readonly clusters: number;
}

interface PlannedFile extends Extent {
  readonly kind: ContentKind;
  /** Index into the file list: names the file's content stream, so the sparse variant gets the same bytes. */
  readonly index: number;
}

interface BasePlan {
  readonly files: readonly PlannedFile[];
  readonly holes: readonly Extent[];
  readonly totalClusters: number;
}

/**
 * Files of log-uniform size separated by holes, starting at cluster 0. The allocated clusters always number
 * allocatedFraction × the main disk; `totalClusters` only changes the holes, so the sparse variant has the same
 * files (same sizes, kinds and bytes) spread further apart.
 */
function planBase(params: WorkloadParams, totalClusters: number): BasePlan {
  const rng = new Rng(params.seed, 'base/plan');
  const target = Math.round((params.allocatedFraction * params.virtualBytes) / CLUSTER);
  const lengths: number[] = [];
  const rawHoles: number[] = [];
  let allocated = 0;
  while (allocated < target) {
    const len = Math.min(rng.logRange(1, MAX_FILE_CLUSTERS), target - allocated);
    lengths.push(len);
    rawHoles.push(rng.logRange(1, MAX_FILE_CLUSTERS));
    allocated += len;
  }
  const holeTotal = totalClusters - target;
  const rawHoleTotal = rawHoles.reduce((a, b) => a + b, 0);
  const holeLengths = rawHoles.map((h) => Math.floor((h * holeTotal) / rawHoleTotal));
  holeLengths[holeLengths.length - 1] = (holeLengths.at(-1) ?? 0) + holeTotal - holeLengths.reduce((a, b) => a + b, 0);

  // Kinds by largest deficit, so the byte shares match the mix exactly rather than by luck of a few big files.
  const kindBytes = new Map<ContentKind, number>(CONTENT_KINDS.map((k) => [k, 0]));
  const files: PlannedFile[] = [];
  const holes: Extent[] = [];
  let cluster = 0;
  let assigned = 0;
  for (let i = 0; i < lengths.length; i++) {
    const len = lengths[i] ?? 0;
    assigned += len;
    let kind: ContentKind = 'random';
    let deficit = -Infinity;
    for (const k of CONTENT_KINDS) {
      const d = params.baseMix[k] * assigned - (kindBytes.get(k) ?? 0);
      if (d > deficit) [kind, deficit] = [k, d];
    }
    kindBytes.set(kind, (kindBytes.get(kind) ?? 0) + len);
    files.push({ cluster, clusters: len, kind, index: i });
    cluster += len;
    const hole = holeLengths[i] ?? 0;
    if (hole > 0) holes.push({ cluster, clusters: hole });
    cluster += hole;
  }
  return { files, holes, totalClusters };
}

/** Picks the cluster at position `u` (0-based) of the concatenation of `extents`. */
function clusterAt(extents: readonly Extent[], prefix: readonly number[], u: number): number {
  let lo = 0;
  let hi = extents.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((prefix[mid + 1] ?? Infinity) <= u) lo = mid + 1;
    else hi = mid;
  }
  const e = extents[lo];
  return e ? e.cluster + (u - (prefix[lo] ?? 0)) : 0;
}

function prefixSums(extents: readonly Extent[]): number[] {
  const p = [0];
  for (const e of extents) p.push((p.at(-1) ?? 0) + e.clusters);
  return p;
}

/** Where a write lands: uniform over the disk, over given extents, or on top of an earlier write. */
type Placement =
  | { readonly kind: 'uniform' }
  | { readonly kind: 'split'; readonly fraction: number; readonly a: readonly Extent[]; readonly b: readonly Extent[] }
  | { readonly kind: 'overlap'; readonly fraction: number; readonly on: readonly Extent[] };

/** Plans scattered 64 KiB writes and 1 MiB runs, in a shuffled order (as a guest would issue them). */
function planWrites(rng: Rng, totalClusters: number, counts: WriteCounts, placement: Placement): Extent[] {
  const sizes = [...Array<number>(counts.scattered64k).fill(1), ...Array<number>(counts.runs1m).fill(16)];
  for (let i = sizes.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [sizes[i], sizes[j]] = [sizes[j] ?? 1, sizes[i] ?? 1];
  }
  const prefixA = placement.kind === 'split' ? prefixSums(placement.a) : [];
  const prefixB = placement.kind === 'split' ? prefixSums(placement.b) : [];
  const writes: Extent[] = [];
  for (const len of sizes) {
    let start: number;
    if (placement.kind === 'split') {
      const inA = rng.float() < placement.fraction;
      const prefix = inA ? prefixA : prefixB;
      start = clusterAt(inA ? placement.a : placement.b, prefix, rng.int(prefix.at(-1) ?? 1));
    } else if (placement.kind === 'overlap' && placement.on.length > 0 && rng.float() < placement.fraction) {
      const target = placement.on[rng.int(placement.on.length)] ?? { cluster: 0, clusters: 1 };
      start = target.cluster + (len === 1 ? rng.int(target.clusters) : 0);
    } else {
      start = rng.int(totalClusters - len + 1);
    }
    start = Math.min(start, totalClusters - len);
    writes.push({ cluster: start, clusters: len });
  }
  return writes;
}

/** Distinct clusters covered by `writes`, and how many of them fall inside `within` (if given). */
function coverage(totalClusters: number, writes: readonly Extent[], within?: readonly Extent[]): { clusters: number; inside: number } {
  const seen = new Uint8Array(totalClusters);
  let clusters = 0;
  for (const w of writes) {
    for (let c = w.cluster; c < w.cluster + w.clusters; c++) {
      if (seen[c] === 0) {
        seen[c] = 1;
        clusters++;
      }
    }
  }
  let inside = 0;
  for (const e of within ?? []) for (let c = e.cluster; c < e.cluster + e.clusters; c++) inside += seen[c] ?? 0;
  return { clusters, inside };
}

// ---------------------------------------------------------------------------------------------------------------
// Building the files

type Facts = Omit<StoredWorkload, 'hash' | 'params' | 'generatedSeconds'>;

async function generate(params: WorkloadParams, dir: string, logLine: (msg: string) => void): Promise<Facts> {
  const t0 = performance.now();
  const log = (msg: string): void => logLine(`  ${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s ${msg}`);
  const content = new ContentSource(new Rng(params.seed, 'vocabulary'));
  const total = params.virtualBytes / CLUSTER;
  const sparseTotal = params.sparseVirtualBytes / CLUSTER;
  const plan = planBase(params, total);
  const allocatedBytes = plan.files.reduce((a, f) => a + f.clusters, 0) * CLUSTER;

  log(`base: ${plan.files.length} files, ${(allocatedBytes / 1e9).toFixed(2)} GB of data`);
  const raw = join(dir, 'v1.raw');
  await writeRawBase(raw, params.virtualBytes, plan, (f, buf) => content.fill(f.kind, new Rng(params.seed, `base/file/${f.index}`), buf));
  await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=65536', 'v1.raw', 'v1.qcow2'], { cwd: dir });

  // The sparse variant copies each file's bytes from the raw base instead of generating them again.
  log(`sparse base: the same data over ${params.sparseVirtualBytes / GiB} GiB`);
  await mkdir(join(dir, 'sparse'));
  const sparsePlan = planBase(params, sparseTotal);
  const rawIn = await open(raw, 'r');
  try {
    await writeRawBase(join(dir, 'sparse', 'base.raw'), params.sparseVirtualBytes, sparsePlan, async (f, buf) => {
      const src = plan.files[f.index];
      if (!src) throw new Error(`sparse plan has no file ${f.index}`);
      await rawIn.read(buf, 0, buf.length, src.cluster * CLUSTER);
    });
  } finally {
    await rawIn.close();
  }
  await removeTree(raw);
  await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=65536', 'base.raw', 'base.qcow2'], { cwd: join(dir, 'sparse') });
  await removeTree(join(dir, 'sparse', 'base.raw'));

  const payload = (label: string) => (i: number, buf: Buffer): void =>
    content.fillMixed(params.payloadMix, new Rng(params.seed, `${label}/payload/${i}`), buf);

  log('layer: overlay on v1 (5 %)');
  const layerWrites = planWrites(new Rng(params.seed, 'layer/plan'), total, params.layer, { kind: 'uniform' });
  await createOverlay(dir, 'layer.qcow2', 'v1.qcow2');
  await applyWrites(dir, 'layer.qcow2', layerWrites, payload('layer'));

  log('check-in: overlay on the layer (1 %), and the same writes into a copy of the layer');
  const checkinWrites = planWrites(new Rng(params.seed, 'checkin/plan'), total, params.checkin, {
    kind: 'overlap', fraction: params.checkin.overlapFraction, on: layerWrites,
  });
  await createOverlay(dir, 'checkin.qcow2', 'layer.qcow2');
  await applyWrites(dir, 'checkin.qcow2', checkinWrites, payload('checkin'));
  await copyFile(join(dir, 'layer.qcow2'), join(dir, 'client-layer.qcow2'));
  await applyWrites(dir, 'client-layer.qcow2', checkinWrites, payload('checkin'));

  log('base update v2: v1 + 3 %, flattened');
  const updateWrites = planWrites(new Rng(params.seed, 'update/plan'), total, params.update, {
    kind: 'split', fraction: params.update.inHolesFraction, a: plan.holes, b: plan.files,
  });
  await createOverlay(dir, 'v2-changes.qcow2', 'v1.qcow2');
  await applyWrites(dir, 'v2-changes.qcow2', updateWrites, payload('update'));
  await runCommand('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', '-o', 'cluster_size=65536', 'v2-changes.qcow2', 'v2.qcow2'], { cwd: dir });
  await removeTree(join(dir, 'v2-changes.qcow2'));

  log('sparse layer: the layer\'s payloads spread over the sparse disk');
  const sparseLayerWrites = planWrites(new Rng(params.seed, 'sparse-layer/plan'), sparseTotal, params.layer, { kind: 'uniform' });
  await createOverlay(join(dir, 'sparse'), 'layer.qcow2', 'base.qcow2');
  await applyWrites(join(dir, 'sparse'), 'layer.qcow2', sparseLayerWrites, payload('layer'));
  log('sparse check-in: the check-in\'s payloads over the sparse layer');
  const sparseCheckinWrites = planWrites(new Rng(params.seed, 'sparse-checkin/plan'), sparseTotal, params.checkin, {
    kind: 'overlap', fraction: params.checkin.overlapFraction, on: sparseLayerWrites,
  });
  await createOverlay(join(dir, 'sparse'), 'checkin.qcow2', 'layer.qcow2');
  await applyWrites(join(dir, 'sparse'), 'checkin.qcow2', sparseCheckinWrites, payload('checkin'));

  log('measuring zstd -1 ratios');
  const image = async (file: string, virtualBytes: number, backing: string | null): Promise<StoredImage<ImageFile>> =>
    ({ file, fileBytes: (await stat(join(dir, file))).size, virtualBytes, backing });
  const layerFacts = async (file: string, backing: string | null, writes: readonly Extent[], totalClusters: number, ratio: boolean): Promise<StoredImage<LayerImage>> => ({
    ...(await image(file, totalClusters * CLUSTER, backing)),
    writes: writes.length,
    changedBytes: coverage(totalClusters, writes).clusters * CLUSTER,
    zstd1Ratio: ratio ? await zstd1Ratio(join(dir, file)) : null,
  });
  const updateCoverage = coverage(total, updateWrites, plan.holes);
  return {
    base: { ...(await image('v1.qcow2', params.virtualBytes, null)), allocatedBytes, zstd1Ratio: await zstd1Ratio(join(dir, 'v1.qcow2')) },
    layer: await layerFacts('layer.qcow2', 'v1.qcow2', layerWrites, total, true),
    checkin: await layerFacts('checkin.qcow2', 'layer.qcow2', checkinWrites, total, false),
    clientLayer: await layerFacts('client-layer.qcow2', 'v1.qcow2', checkinWrites, total, false),
    v2: {
      ...(await image('v2.qcow2', params.virtualBytes, null)),
      writes: updateWrites.length,
      changedBytes: updateCoverage.clusters * CLUSTER,
      inHolesBytes: updateCoverage.inside * CLUSTER,
    },
    sparse: {
      base: { ...(await image('sparse/base.qcow2', params.sparseVirtualBytes, null)), allocatedBytes, zstd1Ratio: null },
      layer: await layerFacts('sparse/layer.qcow2', 'base.qcow2', sparseLayerWrites, sparseTotal, false),
      checkin: await layerFacts('sparse/checkin.qcow2', 'layer.qcow2', sparseCheckinWrites, sparseTotal, false),
    },
  };
}

/** Writes each planned file of a base into a sparse raw file of `virtualBytes` (holes are never written). */
async function writeRawBase(path: string, virtualBytes: number, plan: BasePlan, fill: (f: PlannedFile, buf: Buffer) => void | Promise<void>): Promise<void> {
  // One buffer for every file: fresh memory is slow to touch on the project's VMs (see prng.ts).
  const buf = Buffer.alloc(MAX_FILE_CLUSTERS * CLUSTER);
  const fh = await open(path, 'w');
  try {
    await fh.truncate(virtualBytes);
    for (const f of plan.files) {
      const view = buf.subarray(0, f.clusters * CLUSTER);
      await fill(f, view);
      await fh.write(view, 0, view.length, f.cluster * CLUSTER);
    }
  } finally {
    await fh.close();
  }
}

/**
 * Writes `writes` into the qcow2 `target` (relative to `dir`) with qemu-io `write -s PAYLOAD OFFSET LEN`, a batch of
 * commands per process. Each payload is written to its own file first (`-s` reads a file from its start).
 */
async function applyWrites(dir: string, target: string, writes: readonly Extent[], payload: (i: number, buf: Buffer) => void): Promise<void> {
  const payloads = join(dir, 'payloads');
  await mkdir(payloads, { recursive: true });
  const buf = Buffer.alloc(16 * CLUSTER);
  try {
    for (let start = 0; start < writes.length; start += QEMU_IO_BATCH) {
      const args = ['-f', 'qcow2'];
      const batch = writes.slice(start, start + QEMU_IO_BATCH);
      for (const [j, w] of batch.entries()) {
        const i = start + j;
        const view = buf.subarray(0, w.clusters * CLUSTER);
        payload(i, view);
        await writeFile(join(payloads, String(i)), view);
        args.push('-c', `write -q -s payloads/${i} ${w.cluster * CLUSTER} ${view.length}`);
      }
      await runCommand('qemu-io', [...args, target], { cwd: dir });
      for (let i = start; i < start + batch.length; i++) await removeTree(join(payloads, String(i)));
    }
  } finally {
    await removeTree(payloads);
  }
}

/** Bytes fed to zstd when measuring a ratio: 16 slices spread over the file, so a 16 GiB base costs no more. */
const ZSTD_SAMPLE_SLICES = 16;
const ZSTD_SAMPLE_SLICE_BYTES = 64 * 1024 * 1024;

/** zstd -1 ratio of a file (single thread), over evenly spread slices of large files; null without the zstd CLI. */
async function zstd1Ratio(path: string): Promise<number | null> {
  if (!hasCommand('zstd')) return null;
  const size = (await stat(path)).size;
  const child = spawn('zstd', ['-1', '-T1', '-q', '-c'], { stdio: ['pipe', 'pipe', 'ignore'] });
  let compressed = 0;
  child.stdout.on('data', (chunk: Buffer) => {
    compressed += chunk.length;
  });
  const closed = new Promise<number | null>((r) => child.once('close', r));
  const slices = size <= ZSTD_SAMPLE_SLICES * ZSTD_SAMPLE_SLICE_BYTES
    ? [{ at: 0, len: size }]
    : Array.from({ length: ZSTD_SAMPLE_SLICES }, (_, i) => ({ at: Math.floor((i * (size - ZSTD_SAMPLE_SLICE_BYTES)) / (ZSTD_SAMPLE_SLICES - 1)), len: ZSTD_SAMPLE_SLICE_BYTES }));
  let fed = 0;
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(1024 * 1024);
    for (const { at, len } of slices) {
      for (let off = 0; off < len; ) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, len - off), at + off);
        if (bytesRead === 0) break;
        // zstd copies what it is given, but write() may keep a reference until it drains: give it its own copy.
        if (!child.stdin.write(Buffer.from(buf.subarray(0, bytesRead)))) await new Promise((r) => child.stdin.once('drain', r));
        off += bytesRead;
        fed += bytesRead;
      }
    }
  } finally {
    await fh.close();
    child.stdin.end();
  }
  const code = await closed;
  return code !== 0 || compressed === 0 ? null : fed / compressed;
}

/** Parses a size such as `4g`, `16G`, `1gib` or `512m` into bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) throw new Error(`not a size: ${JSON.stringify(text)} (try 4g or 16g)`);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: GiB, t: 1024 * GiB }[(m[2] ?? '').toLowerCase()] ?? 1;
  const bytes = Math.round(Number(m[1]) * unit);
  if (bytes % (16 * CLUSTER) !== 0 || bytes < 256 * 1024 * 1024) throw new Error(`size ${text}: use a multiple of 1 MiB, at least 256 MiB`);
  return bytes;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  const { values } = parseArgs({ options: { size: { type: 'string', default: '4g' } } });
  const w = await ensureWorkload(workloadParams(parseSize(values.size)), (m) => console.error(m));
  console.log(JSON.stringify(w, null, 2));
}
