// Publishing an image: the store imports the bytes, then one row makes it visible. If the row cannot be
// written, the object is dropped again (unless something else already refers to the same bytes), so a
// failed import leaves nothing behind.

import { ApiError, type ImageFormat, isObjectId } from '@roamdesk/api';
import type { Caller } from '../auth/authenticate.ts';
import type { AppContext } from '../context.ts';
import { isUniqueViolation } from '../db/constraints.ts';
import { findImageById, findImageByName, type ImageWithUsage, insertImage, isObjectUnreferenced } from '../db/repositories/images.ts';
import { conflict } from '../errors.ts';

type Ctx = Pick<AppContext, 'db' | 'store' | 'logger' | 'nowIso'>;

export async function assertImageNameFree(ctx: Ctx, name: string): Promise<void> {
  if ((await findImageByName(ctx.db, name)) !== undefined) throw conflict(`image "${name}" already exists`, { name });
}

export async function publishImage(
  ctx: Ctx,
  input: { name: string; sourcePath: string; format: ImageFormat | undefined; caller: Caller },
): Promise<ImageWithUsage> {
  const object = await ctx.store.importImage(input.sourcePath, input.format === undefined ? {} : { format: input.format });
  if (!isObjectId(object.id)) throw new Error('the store returned an object id that is not 64-hex');
  try {
    await insertImage(ctx.db, {
      id: object.id,
      name: input.name,
      format: object.format ?? input.format ?? 'qcow2',
      size: object.size,
      virtual_size: object.virtualSize,
      created_at: ctx.nowIso(),
      created_by: input.caller.userId,
    });
  } catch (err) {
    if (await isObjectUnreferenced(ctx.db, object.id)) {
      await ctx.store.remove(object.id).catch((e: unknown) => ctx.logger.error({ err: e, id: object.id }, 'could not remove orphan object'));
    }
    if (isUniqueViolation(err)) {
      const same = await findImageById(ctx.db, object.id);
      if (same !== undefined && same.name !== input.name) {
        throw conflict(`these bytes are already imported as image "${same.name}"`, { existing: same.name });
      }
      throw conflict(`image "${input.name}" already exists`, { name: input.name });
    }
    throw err;
  }
  const image = await findImageByName(ctx.db, input.name);
  if (image === undefined) throw new ApiError('INTERNAL', 'image vanished after import');
  return image;
}
