// Publishing an image: the store imports the bytes, then one row makes it visible. If the row cannot be
// written, the object is dropped again (unless something else already refers to the same bytes), so a
// failed import leaves nothing behind. Publishing a new version of an image: publishImageVersion below.

import { ApiError, type ImageFormat, isObjectId } from '@roamdesk/api';
import type { Caller } from '../auth/authenticate.ts';
import type { AppContext } from '../context.ts';
import { isForeignKeyViolation, isUniqueViolation } from '../db/constraints.ts';
import {
  findImageById, findImageByName, type ImageVersionView, type ImageView, insertImage, insertImageVersion, isObjectUnreferenced,
} from '../db/repositories/images.ts';
import { conflict, notFound } from '../errors.ts';

type Ctx = Pick<AppContext, 'db' | 'store' | 'logger' | 'nowIso'>;

export async function assertImageNameFree(ctx: Ctx, name: string): Promise<void> {
  if ((await findImageByName(ctx.db, name)) !== undefined) throw conflict(`image "${name}" already exists`, { name });
}

export async function publishImage(
  ctx: Ctx,
  input: { name: string; sourcePath: string; format: ImageFormat | undefined; caller: Caller },
): Promise<ImageView> {
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

/** Drop an object the database does not refer to (any more); a failure here is logged, never reported. */
async function dropIfUnreferenced(ctx: Ctx, id: string, why: string): Promise<void> {
  try {
    if (await isObjectUnreferenced(ctx.db, id)) await ctx.store.remove(id);
  } catch (err) {
    ctx.logger.error({ err, id }, `could not remove ${why}`);
  }
}

/**
 * Publish a new version of an image. The new version arrives as a standalone disk (a file on the server, or an
 * upload in a temp file); what is published is ONE layer over the latest version's top object, holding the
 * guest-level difference, so a device that holds the latest version fetches only that layer:
 *  1. import the file as a standalone object, with exactly the checks of an image import (qcow2 header in
 *     TypeScript before any QEMU tool, qemu-img check …);
 *  2. refuse a different virtual size (a layer cannot resize the disk; resizing is not supported yet);
 *  3. the store computes the difference over the latest top (`qemu-img rebase` in safe mode), checks that the
 *     new chain shows the guest exactly the uploaded disk (`qemu-img compare`) and imports it as a layer;
 *     no difference = 409 IMAGE_VERSION_UNCHANGED (nothing is published);
 *  4. one row (image_id, version) publishes the version. Publishes are serialized in this process; should
 *     another server process on the same database take the number first, this one is a 409 CONFLICT.
 * The standalone object is removed again unless something else refers to it; on any failure the layer goes
 * too, so the store and the database are left as they were.
 */
export function publishImageVersion(ctx: Ctx, input: PublishVersionInput): Promise<{ image: ImageView; version: ImageVersionView }> {
  return serialized(ctx.store, () => publishVersionNow(ctx, input));
}

interface PublishVersionInput {
  name: string;
  sourcePath: string;
  format: ImageFormat | undefined;
  caller: Caller;
}

/**
 * Version publishes run one at a time per store. A second publish of the same image then builds on the version
 * the first one made instead of losing the race for the number (409), and one publish never removes the
 * standalone copy another is still reading (the same disk sent for two images).
 */
const queues = new WeakMap<object, Promise<unknown>>();

function serialized<T>(key: object, fn: () => Promise<T>): Promise<T> {
  const run = (queues.get(key) ?? Promise.resolve()).then(fn, fn);
  queues.set(key, run.catch(() => undefined));
  return run;
}

async function publishVersionNow(ctx: Ctx, input: PublishVersionInput): Promise<{ image: ImageView; version: ImageVersionView }> {
  const image = await findImageByName(ctx.db, input.name);
  if (image === undefined) throw notFound('image', input.name);
  const next = image.version + 1;

  const object = await ctx.store.importImage(input.sourcePath, input.format === undefined ? {} : { format: input.format });
  let layerId: string | undefined;
  let published = false;
  try {
    if (!isObjectId(object.id)) throw new Error('the store returned an object id that is not 64-hex');
    if (object.virtualSize !== Number(image.virtual_size)) {
      throw new ApiError(
        'IMAGE_SIZE_MISMATCH',
        `the new version is ${object.virtualSize} bytes virtual, image "${input.name}" is ${Number(image.virtual_size)}: ` +
          'every version of an image has the same virtual size (resizing is not supported yet); ' +
          `publish a disk of exactly ${Number(image.virtual_size)} bytes, or import it as a new image`,
        { name: input.name, imageVirtualSize: Number(image.virtual_size), versionVirtualSize: object.virtualSize },
      );
    }
    const layer = await ctx.store.importDifference(image.top_object_id, object.id);
    if (layer === null) {
      throw new ApiError(
        'IMAGE_VERSION_UNCHANGED',
        `the new version shows the guest the same disk as version ${image.version} of image "${input.name}": nothing to publish`,
        { name: input.name, version: image.version },
      );
    }
    if (!isObjectId(layer.id) || layer.parent !== image.top_object_id) throw new Error('the store returned a layer that is not over the latest version');
    layerId = layer.id;
    try {
      await insertImageVersion(ctx.db, {
        image_id: image.id,
        version: next,
        top_object_id: layer.id,
        diff_size: layer.size,
        created_at: ctx.nowIso(),
        created_by: input.caller.userId,
      });
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw conflict(`version ${next} of image "${input.name}" was published meanwhile; publish again to build on it`, {
          name: input.name,
          version: next,
        });
      }
      if (isForeignKeyViolation(err)) throw notFound('image', input.name);
      throw err;
    }
    published = true;
  } finally {
    // Children before parents, the order the store accepts: the unpublished layer (its parent, the previous
    // top, stays), then the standalone copy, which nothing names as backing once the temp overlay is gone.
    if (!published && layerId !== undefined) await dropIfUnreferenced(ctx, layerId, 'an unpublished version layer');
    await dropIfUnreferenced(ctx, object.id, 'the standalone copy of a new version');
  }

  const updated = await findImageByName(ctx.db, input.name);
  const version = updated?.versions.find((v) => v.version === next);
  if (updated === undefined || version === undefined) throw new ApiError('INTERNAL', 'image version vanished after publishing');
  return { image: updated, version };
}
