// Checks on server paths that admins name (image import source, kernel, initrd).

import { stat } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { ApiError } from '@roamdesk/api';

/** The path must be absolute and name an existing regular file (symlinks to one are followed). */
export async function requireRegularFile(field: string, path: string): Promise<void> {
  if (!isAbsolute(path) || path.includes('\u0000')) {
    throw new ApiError('INVALID_PATH', `${field} must be an absolute path`, { field, reason: 'not-absolute' });
  }
  let isFile: boolean;
  try {
    isFile = (await stat(path)).isFile();
  } catch {
    throw new ApiError('INVALID_PATH', `${field} does not exist or is not readable`, { field, reason: 'not-found' });
  }
  if (!isFile) throw new ApiError('INVALID_PATH', `${field} is not a regular file`, { field, reason: 'not-a-regular-file' });
}
