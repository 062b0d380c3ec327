// The server's offline-grant key: Ed25519, made on first start in the data directory (PEM, mode 0600), and
// the grants it signs (format and verification: @roamdesk/api grants.ts). The key file is published with
// link(2), which fails when it exists: two processes starting at once cannot end up with two keys.

import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { link, open, readFile, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { type GrantBody, signGrant } from '@roamdesk/api';

export interface GrantKeys {
  privateKey: KeyObject;
  /** SPKI PEM: what devices verify grants with. */
  publicKeyPem: string;
}

function isCode(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function keysOf(pem: string, file: string): GrantKeys {
  const privateKey = createPrivateKey(pem);
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`${file} is not an Ed25519 private key`);
  return { privateKey, publicKeyPem: createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }).toString() };
}

/** Read the key at `file`, or make it (temp file, fsync, link into place, fsync the directory). */
export async function loadOrCreateGrantKeys(file: string): Promise<GrantKeys> {
  try {
    return keysOf(await readFile(file, 'utf8'), file);
  } catch (err) {
    if (!isCode(err, 'ENOENT')) throw err;
  }
  const { privateKey } = generateKeyPairSync('ed25519');
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const tmp = join(dirname(file), `.grant-key.${process.pid}.${Date.now()}.tmp`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(pem);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, file);
  } catch (err) {
    // Another process made it first: use theirs.
    if (!isCode(err, 'EEXIST')) throw err;
  } finally {
    await unlink(tmp).catch(() => {});
  }
  await fsyncDir(dirname(file));
  return keysOf(await readFile(file, 'utf8'), file);
}

/** Loads the key once, on first use (buildApp asks at start so the file exists from the first run). */
export class GrantSigner {
  #keys: Promise<GrantKeys> | undefined;

  constructor(private readonly file: string) {}

  keys(): Promise<GrantKeys> {
    this.#keys ??= loadOrCreateGrantKeys(this.file).catch((err: unknown) => {
      this.#keys = undefined;
      throw err;
    });
    return this.#keys;
  }

  async publicKeyPem(): Promise<string> {
    return (await this.keys()).publicKeyPem;
  }

  async sign(body: GrantBody): Promise<string> {
    return signGrant(body, (await this.keys()).privateKey);
  }
}
