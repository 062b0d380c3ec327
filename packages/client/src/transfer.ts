// Streaming file transfers for the client: downloads land in a temp file, are fsynced and renamed (never a
// partial file under the final name); uploads stream from disk. Both report progress as bytes move.

import { createReadStream } from 'node:fs';
import { access, type FileHandle, open, rm, stat } from 'node:fs/promises';

import { ClientError } from './errors.ts';
import { publishFile, tempPathFor } from './fsutil.ts';

export interface Progress {
  /** Bytes moved so far. */
  bytes: number;
  /** Total bytes, when known (a Content-Length or a local file size); null otherwise. */
  total: number | null;
}
export type ProgressFn = (p: Progress) => void;

export interface DownloadResult {
  file: string;
  bytes: number;
}

/** Refuse early (before any request) when the target exists and must not be overwritten. */
export async function assertTargetFree(file: string, overwrite: boolean): Promise<void> {
  if (overwrite) return;
  const exists = await access(file).then(() => true, () => false);
  if (exists) throw fileExists(file);
}

function fileExists(file: string): ClientError {
  return new ClientError('CLIENT_ERR_FILE_EXISTS', `${file} already exists`, { file, hint: 'choose another file name, or pass --force to overwrite it' });
}

/**
 * Write `body` to `file` durably: temp file in the same directory (mode 0600: a desktop disk holds the
 * user's data), fsync, then rename — or link, so that without `overwrite` a file that appeared meanwhile
 * is never clobbered. Any failure removes the temp file.
 */
export async function writeStreamToFile(
  body: ReadableStream<Uint8Array>,
  file: string,
  opts: { overwrite: boolean; total: number | null; onProgress?: ProgressFn; onReadError: (err: unknown) => Error },
): Promise<DownloadResult> {
  const temp = tempPathFor(file);
  let bytes = 0;
  try {
    const fh = await open(temp, 'wx', 0o600).catch((err: unknown) => {
      throw writeFailed(file, err);
    });
    try {
      const reader = body.getReader();
      for (;;) {
        const chunk = await reader.read().catch((err: unknown) => {
          throw opts.onReadError(err);
        });
        if (chunk.done) break;
        await writeAll(fh, chunk.value, file);
        bytes += chunk.value.byteLength;
        opts.onProgress?.({ bytes, total: opts.total });
      }
      if (opts.total !== null && bytes !== opts.total) {
        throw new ClientError('CLIENT_ERR_BAD_RESPONSE', `the download ended after ${bytes} of ${opts.total} bytes`, { file, bytes, total: opts.total });
      }
      await fh.sync().catch((err: unknown) => {
        throw writeFailed(file, err);
      });
    } finally {
      await fh.close();
    }
    await publishFile(temp, file, opts.overwrite).catch((err: unknown) => {
      throw (err as NodeJS.ErrnoException).code === 'EEXIST' ? fileExists(file) : writeFailed(file, err);
    });
    return { file, bytes };
  } catch (err) {
    await body.cancel().catch(() => undefined);
    await rm(temp, { force: true });
    throw err;
  }
}

async function writeAll(fh: FileHandle, buf: Uint8Array, file: string): Promise<void> {
  let off = 0;
  while (off < buf.byteLength) {
    const { bytesWritten } = await fh.write(buf, off, buf.byteLength - off).catch((err: unknown) => {
      throw writeFailed(file, err);
    });
    off += bytesWritten;
  }
}

function writeFailed(file: string, err: unknown): ClientError {
  return new ClientError('CLIENT_ERR_WRITE_FAILED', `cannot write ${file}: ${(err as Error).message}`, {
    file,
    ...(typeof (err as NodeJS.ErrnoException).code === 'string' ? { cause: (err as NodeJS.ErrnoException).code } : {}),
    hint: 'check free space and permissions of the target directory',
  }, { cause: err });
}

/** A local regular file to upload: its size (for Content-Length and progress) and a counting byte stream. */
export async function openUpload(file: string, onProgress?: ProgressFn): Promise<{ size: number; stream: AsyncIterable<Uint8Array> }> {
  const st = await stat(file).catch((err: unknown) => {
    throw new ClientError('CLIENT_ERR_FILE_INVALID', `cannot read ${file}: ${(err as Error).message}`, { file }, { cause: err });
  });
  if (!st.isFile()) throw new ClientError('CLIENT_ERR_FILE_INVALID', `${file} is not a regular file`, { file });
  const size = st.size;
  async function* counted(): AsyncGenerator<Uint8Array> {
    let bytes = 0;
    for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
      bytes += chunk.byteLength;
      onProgress?.({ bytes, total: size });
      yield chunk;
    }
  }
  return { size, stream: counted() };
}
