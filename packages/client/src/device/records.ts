// Local desktop records: what this device knows about each desktop checked out to it, one JSON file per
// desktop in `<ROAMDESK_HOME>/checkouts/<name>.json` (mode 0600, replaced atomically: a crash leaves the old
// record or the new one). The name is validated before it becomes a file name.
//
// A record is written BEFORE each step whose effect it must remember (check-out started, overlay created,
// layer sealed, check-in begun), so a re-run after a crash knows where it stopped.

import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { isObjectId, isUuid, isValidName } from '@roamdesk/api/core';
import type { StoredObject } from '@roamdesk/api';

import { writeFileAtomic } from '../fsutil.ts';
import type { ClockReading } from './clock.ts';
import { DeviceError } from './errors.ts';

export const CHECKOUTS_DIR = 'checkouts';

/**
 * checking-out: the lease is ours (server state checking-out) but the chain is not yet confirmed;
 * checked-out: the local VM may run; checking-in: the final top is sealed and being sent;
 * lost: the server says the lease moved away (rollback, cancel, revocation): the local work waits for quarantine.
 */
export type LocalState = 'checking-out' | 'checked-out' | 'checking-in' | 'lost';

export interface LocalVmConfig {
  memoryMiB: number;
  cpus: number;
  kernel: string | null;
  initrd: string | null;
  append: string | null;
}

export interface Contact extends ClockReading {
  /** Wall clock of the contact (for humans). */
  at: string;
}

export interface Replication {
  at: string;
  top: string;
  layers: number;
  bytes: number;
  bytesOnWire: number;
}

export interface LocalDesktop {
  version: 1;
  name: string;
  desktopId: string;
  server: string;
  deviceId: string;
  state: LocalState;
  generation: number;
  /** The check-out operation (progress is reported to it). */
  operation: string | null;
  checkedOutAt: string;
  /** The sealed local chain, image first: the server's chain at check-out, then the layers sealed here. */
  chain: StoredObject[];
  /** The last object the server holds a copy of (check-out point or last replication). */
  replicatedTop: string;
  replicatedAt: string | null;
  lastReplication: Replication | null;
  /** The writable overlay (in the local store's objects/), or null before it is created. */
  overlay: { path: string; parent: string } | null;
  grant: string | null;
  lastContact: Contact | null;
  /** This device's clock when `grant` arrived: its lifetime counts from here (absent in records from before). */
  grantReceived?: Contact;
  config: LocalVmConfig;
  /** Local objects replaced by compaction, removed once no VM has them open. */
  garbage: string[];
  /** Old overlay names of live seals (second links to their layers, store `removeRetired`), removed once the VM stopped. */
  retired?: string[];
  /** Why the lease was lost (state 'lost'). */
  lostReason: string | null;
  /** The server's compaction policy (CheckoutResponse/LeaseResponse maxChainLength), when it sent one. */
  maxChainLength: number | null;
  /** The server's scheduled-replication policy in seconds (0 = none); absent in records from before it existed. */
  replicateEverySeconds?: number;
  /** The replicate or check-in operation announced before uploading; reused by a re-run after a crash. */
  layersOperation: { id: string; kind: 'replicate' | 'checkin' } | null;
}

/** The layers above the replicated top: sealed here, not yet on the server. */
export function pendingLayers(r: LocalDesktop): StoredObject[] {
  const i = r.chain.findIndex((o) => o.id === r.replicatedTop);
  return i < 0 ? [] : r.chain.slice(i + 1);
}

export function sealedTop(r: LocalDesktop): string {
  const top = r.chain.at(-1);
  if (top === undefined) throw new DeviceError('DEVICE_ERR_STATE_INVALID', `the record of ${r.name} has an empty chain`, { desktop: r.name });
  return top.id;
}

function isStoredObject(v: unknown): v is StoredObject {
  const o = v as Partial<StoredObject>;
  return typeof o === 'object' && o !== null && isObjectId(o.id) && (o.kind === 'image' || o.kind === 'layer') &&
    (o.parent === null || isObjectId(o.parent)) && Number.isSafeInteger(o.size) && Number.isSafeInteger(o.virtualSize);
}

function validRecord(v: Partial<LocalDesktop>, name: string): boolean {
  return v.version === 1 && v.name === name && isUuid(v.desktopId) && typeof v.server === 'string' && isUuid(v.deviceId) &&
    (v.state === 'checking-out' || v.state === 'checked-out' || v.state === 'checking-in' || v.state === 'lost') &&
    Number.isSafeInteger(v.generation) && Array.isArray(v.chain) && v.chain.every(isStoredObject) && isObjectId(v.replicatedTop) &&
    (v.overlay === null || (typeof v.overlay === 'object' && typeof v.overlay.path === 'string' && isObjectId(v.overlay.parent))) &&
    typeof v.config === 'object' && v.config !== null && Array.isArray(v.garbage);
}

export class RecordStore {
  readonly dir: string;

  constructor(readonly home: string) {
    this.dir = join(home, CHECKOUTS_DIR);
  }

  file(name: string): string {
    if (!isValidName(name)) {
      throw new DeviceError('DEVICE_ERR_STATE_INVALID', `${JSON.stringify(String(name).slice(0, 80))} is not a desktop name`, {
        hint: 'names are lower-case letters, digits, ".", "_" and "-"',
      });
    }
    return join(this.dir, `${name}.json`);
  }

  async load(name: string): Promise<LocalDesktop | null> {
    const file = this.file(name);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new DeviceError('DEVICE_ERR_STATE_INVALID', `cannot read ${file}: ${(err as Error).message}`, { file }, { cause: err });
    }
    let v: Partial<LocalDesktop>;
    try {
      v = JSON.parse(text) as Partial<LocalDesktop>;
    } catch {
      v = {};
    }
    if (!validRecord(v, name)) {
      throw new DeviceError('DEVICE_ERR_STATE_INVALID', `the local record ${file} is invalid`, {
        file,
        hint: 'it was edited or damaged; the disk files are in the local store (roamdesk status --json lists them)',
      });
    }
    return v as LocalDesktop;
  }

  async require(name: string): Promise<LocalDesktop> {
    const r = await this.load(name);
    if (r === null) {
      throw new DeviceError('DEVICE_ERR_NOT_CHECKED_OUT', `desktop ${name} is not checked out to this device`, {
        desktop: name,
        hint: `check it out first: roamdesk checkout ${name}`,
      });
    }
    return r;
  }

  async save(r: LocalDesktop): Promise<void> {
    const file = this.file(r.name);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(file, `${JSON.stringify(r, null, 2)}\n`, 0o600);
  }

  async remove(name: string): Promise<void> {
    await rm(this.file(name), { force: true });
  }

  async list(): Promise<LocalDesktop[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: LocalDesktop[] = [];
    for (const f of names.sort()) {
      const m = /^(.+)\.json$/.exec(f);
      if (m?.[1] === undefined || !isValidName(m[1])) continue;
      const r = await this.load(m[1]);
      if (r !== null) out.push(r);
    }
    return out;
  }
}
