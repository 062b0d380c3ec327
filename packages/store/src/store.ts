/**
 * The content-addressed store of images and layers. See README.md for layout, durability and crash safety.
 * One process owns a store directory at a time (the server, or the device agent); Store.open() removes
 * temp files, which is only safe under that rule.
 */
import { mkdir, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';

import { QemuImg, type DiskNode } from '@roamdesk/qemu';

import { adopt, type AdoptExpectation, type AdoptOptions } from './adopt.ts';
import { hasOwnClusters } from './allocation.ts';
import { discard, fsyncDir } from './durable.ts';
import { ChainBrokenError, ObjectInUseError, ObjectNotFoundError, ParentMissingError } from './errors.ts';
import { exportChain, type ExportOptions } from './export.ts';
import { readBackingName, readHeader } from './header-io.ts';
import { assertObjectId, idFromObjectFileName, isOverlayFileName, isTempFileName, newOverlayFileName, objectFileName, type ObjectId } from './ids.ts';
import { importDifference, type DifferenceOptions } from './difference.ts';
import { importImage, importLayer, type ImportImageOptions, type ImportOptions } from './import.ts';
import { Layout, type Overlay } from './layout.ts';
import { seal, type SealOptions } from './seal.ts';
import { removeRetired, resumeLiveSeal, sealLive, type LiveSealResult, type LiveVm } from './seal-live.ts';
import type { ObjectInfo } from './sidecar.ts';
import { verify, type VerifyOptions, type VerifyReport } from './verify.ts';
import { fsyncPath } from './durable.ts';

/** Chains longer than this are refused (a guard against loops in hand-edited stores, not a product limit). */
const MAX_CHAIN_LENGTH = 4096;

export interface StoreOptions {
  /** The qemu-img wrapper to use (tests inject one with a fake binary). */
  readonly qemuImg?: QemuImg;
  /**
   * Open without removing temp files: for a reader (e.g. `roamdesk status`) while another process may be
   * writing the store. Only the store's one writer may clean up.
   */
  readonly reader?: boolean;
}

export class Store {
  readonly root: string;
  readonly #layout: Layout;
  readonly #img: QemuImg;

  private constructor(layout: Layout, img: QemuImg) {
    this.#layout = layout;
    this.#img = img;
    this.root = layout.root;
  }

  /** Opens (creating if needed) the store at `root` and removes temp files left by interrupted writes. */
  static async open(root: string, opts: StoreOptions = {}): Promise<Store> {
    const layout = new Layout(root);
    for (const dir of [layout.objectsDir, layout.metaDir]) {
      await mkdir(dir, { recursive: true, mode: 0o755 });
      let removed = false;
      for (const name of opts.reader === true ? [] : await readdir(dir)) {
        if (isTempFileName(name)) {
          await discard(join(dir, name));
          removed = true;
        }
      }
      if (removed) await fsyncDir(dir);
    }
    await mkdir(layout.incomingDir, { recursive: true, mode: 0o700 });
    await fsyncDir(layout.root);
    return new Store(layout, opts.qemuImg ?? new QemuImg());
  }

  get objectsDir(): string {
    return this.#layout.objectsDir;
  }

  /** Where objects are assembled while they arrive (see adopt.ts); not cleaned on open, so transfers resume. */
  get incomingDir(): string {
    return this.#layout.incomingDir;
  }

  /** `<root>/objects/<id>.qcow2`; throws InvalidObjectIdError for anything but 64 lowercase hex. */
  objectPath(id: ObjectId): string {
    return this.#layout.objectPath(id);
  }

  async has(id: ObjectId): Promise<boolean> {
    return this.#layout.exists(this.#layout.objectPath(id));
  }

  async get(id: ObjectId): Promise<ObjectInfo | null> {
    return this.#layout.info(id);
  }

  /** Every object, oldest first. */
  async list(): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    for (const name of await readdir(this.#layout.objectsDir)) {
      const id = idFromObjectFileName(name);
      if (id === null) continue;
      const info = await this.#layout.info(id);
      if (info !== null) out.push(info);
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  }

  /** The chain ending at `top`, bottom (image) first; every link is checked against the qcow2 headers. */
  async chain(top: ObjectId): Promise<ObjectInfo[]> {
    assertObjectId(top);
    const out: ObjectInfo[] = [];
    const seen = new Set<ObjectId>();
    let id: ObjectId | null = top;
    let child: ObjectId | null = null;
    while (id !== null) {
      if (seen.has(id) || out.length >= MAX_CHAIN_LENGTH) throw new ChainBrokenError(`chain at ${top} loops or is too long`, { top });
      seen.add(id);
      const info = await this.#layout.info(id);
      if (info === null) throw child === null ? new ObjectNotFoundError(id) : new ParentMissingError(id, child);
      const header = await readHeader(this.#layout.objectPath(id));
      const expected = info.parent === null ? null : objectFileName(info.parent);
      if ((header.backing?.name ?? null) !== expected || (header.backing !== null && header.backing.format !== 'qcow2')) {
        throw new ChainBrokenError(`object ${id}: header backing ${JSON.stringify(header.backing)} does not match parent ${String(info.parent)}`,
          { id, parent: info.parent, backing: header.backing });
      }
      out.push(info);
      child = id;
      id = info.parent;
    }
    return out.reverse();
  }

  /** Imports a base image (qcow2 or raw) from a file. See import.ts for the checks and their order. */
  async importImage(source: string, opts: ImportImageOptions = {}): Promise<ObjectInfo> {
    return importImage(this.#ctx(), source, opts);
  }

  /** Imports an UNTRUSTED layer whose parent must be `expectedParent`. */
  async importLayer(source: string, expectedParent: ObjectId, opts: ImportOptions = {}): Promise<ObjectInfo> {
    return importLayer(this.#ctx(), source, expectedParent, opts);
  }

  /** Publishes a file received into incomingDir as object `expected.id` (no copy). See adopt.ts. */
  async adopt(path: string, expected: AdoptExpectation, opts: AdoptOptions = {}): Promise<ObjectInfo> {
    return adopt(this.#ctx(), path, expected, opts);
  }

  /**
   * Publishes the guest-level difference between the chain ending at `parent` and the object `target` as a
   * layer over `parent` (qemu-img rebase in safe mode; see difference.ts), or returns null when the guest would
   * see no difference. `target` stays in the store: removing it is the caller's decision.
   */
  async importDifference(parent: ObjectId, target: ObjectId, opts: DifferenceOptions = {}): Promise<ObjectInfo | null> {
    return importDifference(this.#ctx(), parent, target, opts);
  }

  /** A new writable overlay on `parent`: `qemu-img create -f qcow2 -b <parent>.qcow2 -F qcow2` (relative). */
  async createOverlay(parent: ObjectId, opts: { label?: string } = {}): Promise<Overlay> {
    assertObjectId(parent);
    if (!(await this.has(parent))) throw new ParentMissingError(parent);
    const path = join(this.#layout.objectsDir, newOverlayFileName(opts.label));
    try {
      await this.#img.create(path, { backing: { name: objectFileName(parent), format: 'qcow2' } });
      await fsyncPath(path);
    } catch (e) {
      await discard(path);
      throw e;
    }
    await fsyncDir(this.#layout.objectsDir);
    return { path, parent };
  }

  /**
   * What QEMU opens for this overlay: every object of its chain, bottom → top, then the overlay. Node names are
   * positional (image, layer1…, overlay) so a VM's block graph reads like its chain.
   */
  async diskNodes(overlay: Overlay): Promise<DiskNode[]> {
    const path = this.#layout.overlayPath(overlay);
    const chain = await this.chain(overlay.parent);
    const nodes: DiskNode[] = chain.map((obj, i) => ({ nodeName: i === 0 ? 'image' : `layer${i}`, path: this.objectPath(obj.id) }));
    nodes.push({ nodeName: 'overlay', path });
    return nodes;
  }

  /**
   * Deletes a writable overlay whose work is to be thrown away (its desktop was deleted). Only overlay names
   * this store generated, directly inside objects/, are accepted; an absent overlay is not an error. The
   * caller makes sure no VM has it open.
   */
  async discardOverlay(overlay: Overlay): Promise<void> {
    const path = this.#layout.overlayPath(overlay);
    if (!(await this.#layout.exists(path))) return;
    await unlink(path);
    await fsyncDir(this.#layout.objectsDir);
  }

  /** True when the overlay holds writes of its own (read from its qcow2 tables; allocation.ts). */
  async overlayHasData(overlay: Overlay): Promise<boolean> {
    return hasOwnClusters(this.#layout.overlayPath(overlay));
  }

  /** Offline: the VM is stopped. The overlay becomes a layer; its path is gone afterwards. */
  async seal(overlay: Overlay, opts: SealOptions = {}): Promise<ObjectInfo> {
    return seal(this.#ctx(), overlay, opts);
  }

  /** Online: the VM keeps running on a new overlay; the old overlay becomes a layer. See seal-live.ts. */
  async sealLive(overlay: Overlay, vm: LiveVm, opts: { label?: string } & SealOptions = {}): Promise<LiveSealResult> {
    return sealLive(this.#ctx(), overlay, vm, opts);
  }

  /** Finishes a live seal interrupted after its blockdev-snapshot while the VM runs on (null: none was). See seal-live.ts. */
  async resumeLiveSeal(overlay: Overlay, vm: LiveVm, opts: SealOptions = {}): Promise<LiveSealResult | null> {
    return resumeLiveSeal(this.#ctx(), overlay, vm, opts);
  }

  /** A live seal's `retired` name, once its VM has stopped (false: already gone). See seal-live.ts. */
  async removeRetired(path: string): Promise<boolean> {
    return removeRetired(this.#layout, path);
  }

  /** One standalone qcow2 of the chain's guest view at `dest`, durably. */
  async exportChain(top: ObjectId | Overlay, dest: string, opts: ExportOptions = {}): Promise<void> {
    return exportChain(this.#ctx(), top, dest, opts);
  }

  async verify(opts: VerifyOptions = {}): Promise<VerifyReport> {
    return verify(this.#layout, opts);
  }

  /** Removes an object; refuses (ObjectInUseError) while a layer or an overlay names it as backing. */
  async remove(id: ObjectId): Promise<void> {
    assertObjectId(id);
    if (!(await this.has(id))) throw new ObjectNotFoundError(id);
    const name = objectFileName(id);
    const dependents: string[] = [];
    for (const entry of await readdir(this.#layout.objectsDir)) {
      const other = idFromObjectFileName(entry);
      if (other === id || (other === null && !isOverlayFileName(entry))) continue;
      // The header is the truth for what a file depends on (a sidecar could be missing); only its name field is read.
      if ((await readBackingName(join(this.#layout.objectsDir, entry)).catch(() => null)) === name) dependents.push(entry);
    }
    if (dependents.length > 0) throw new ObjectInUseError(id, dependents);
    await unlink(this.#layout.objectPath(id));
    await fsyncDir(this.#layout.objectsDir);
    await discard(this.#layout.sidecarPath(id));
    await fsyncDir(this.#layout.metaDir);
  }

  #ctx(): { layout: Layout; img: QemuImg } {
    return { layout: this.#layout, img: this.#img };
  }
}
