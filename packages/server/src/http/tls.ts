// The server's TLS credentials: read from the configured PEM files and checked before anything else starts, so
// a wrong path, a key that belongs to another certificate or an unparsable file stops the start with an error
// naming the file, instead of a listener whose every handshake fails.

import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';

import { ConfigError } from '../config.ts';

export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

export interface TlsCredentials {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** Subject of the leaf certificate and when it stops being valid (for the log). */
  readonly subject: string;
  readonly validTo: Date;
}

function invalid(path: string, message: string, cause?: unknown): ConfigError {
  return new ConfigError(`invalid configuration: ${path} ${message}`, { issues: [{ path, message }] }, cause === undefined ? undefined : { cause });
}

async function readPem(file: string, path: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw invalid(path, `cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}): ${file}`, err);
  }
}

/** Reads and checks the certificate and key; throws ConfigError (paths /tls/certFile, /tls/keyFile, /tls). */
export async function loadTlsCredentials(files: TlsFiles): Promise<TlsCredentials> {
  const cert = await readPem(files.certFile, '/tls/certFile');
  const key = await readPem(files.keyFile, '/tls/keyFile');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw invalid('/tls/certFile', `is not a PEM certificate: ${files.certFile}`, err);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw invalid('/tls/keyFile', `is not a PEM private key (an encrypted key needs its passphrase removed): ${files.keyFile}`, err);
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw invalid('/tls', `the private key ${files.keyFile} does not belong to the certificate ${files.certFile}`);
  }
  try {
    // What the listener will do with them: catches what the two checks above do not (a broken chain file).
    createSecureContext({ cert, key });
  } catch (err) {
    throw invalid('/tls', `cannot be used: ${(err as Error).message}`, err);
  }
  return { cert, key, subject: leaf.subject.replace(/\n/g, ', '), validTo: new Date(leaf.validTo) };
}
