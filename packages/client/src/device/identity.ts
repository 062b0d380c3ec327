// This machine's device registration: `<ROAMDESK_HOME>/device.json`, mode 0600 in a 0700 directory (it holds
// the device credential), replaced atomically. One registration per home and server.

import { chmod, mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { isUuid } from '@roamdesk/api/core';

import { writeFileAtomic } from '../fsutil.ts';
import { DeviceError } from './errors.ts';

export const DEVICE_FILE = 'device.json';

export interface DeviceIdentity {
  version: 1;
  /** The server this device is registered with (normalized URL). */
  server: string;
  id: string;
  name: string;
  owner: string;
  /** Bearer credential (`rdd_…`). */
  credential: string;
  /** The server's Ed25519 grant key (PEM). */
  grantKey: string;
  registeredAt: string;
}

export class IdentityStore {
  readonly file: string;

  constructor(readonly home: string) {
    this.file = join(home, DEVICE_FILE);
  }

  async load(): Promise<DeviceIdentity | null> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new DeviceError('DEVICE_ERR_STATE_INVALID', `cannot read ${this.file}: ${(err as Error).message}`, { file: this.file }, { cause: err });
    }
    let v: Partial<DeviceIdentity>;
    try {
      v = JSON.parse(text) as Partial<DeviceIdentity>;
    } catch {
      throw this.#invalid();
    }
    if (
      v.version !== 1 || typeof v.server !== 'string' || !isUuid(v.id) || typeof v.name !== 'string' || typeof v.owner !== 'string' ||
      typeof v.credential !== 'string' || typeof v.grantKey !== 'string' || typeof v.registeredAt !== 'string'
    ) {
      throw this.#invalid();
    }
    return v as DeviceIdentity;
  }

  /** The registration, or DEVICE_ERR_NOT_REGISTERED with the command to run. */
  async require(): Promise<DeviceIdentity> {
    const id = await this.load();
    if (id === null) {
      throw new DeviceError('DEVICE_ERR_NOT_REGISTERED', 'this machine is not registered as a device', {
        home: this.home,
        hint: 'register it first: roamdesk device register [--name NAME]',
      });
    }
    return id;
  }

  async save(identity: DeviceIdentity): Promise<void> {
    await mkdir(this.home, { recursive: true, mode: 0o700 });
    await chmod(this.home, 0o700).catch(() => undefined);
    await writeFileAtomic(this.file, `${JSON.stringify(identity, null, 2)}\n`, 0o600);
  }

  async remove(): Promise<void> {
    await rm(this.file, { force: true });
  }

  #invalid(): DeviceError {
    return new DeviceError('DEVICE_ERR_STATE_INVALID', `the device record ${this.file} is invalid`, {
      file: this.file,
      hint: 'remove it and register again (roamdesk device register); desktops checked out with it are then fenced',
    });
  }
}
