// Authorization for objects (images and layers) on the transfer endpoints: one function, so no route can
// forget it. An object the caller may not read fails exactly like a missing one (reliability.md §2.5).

import type { Caller } from '../auth/authenticate.ts';
import type { AppContext } from '../context.ts';
import { readableTops } from '../db/repositories/objects.ts';
import { notFound } from '../errors.ts';
import type { StoredObjectInfo } from '../ports.ts';

type Ctx = Pick<AppContext, 'db' | 'transfer'>;

export async function readableObject(ctx: Ctx, caller: Caller, id: string): Promise<StoredObjectInfo> {
  const object = await ctx.transfer.describe(id);
  if (object !== null && (caller.role === 'admin' || (await isInReadableChain(ctx, caller, id)))) return object;
  throw notFound('object', id);
}

async function isInReadableChain(ctx: Ctx, caller: Caller, id: string): Promise<boolean> {
  for (const top of await readableTops(ctx.db, caller.userId)) {
    const chain = await ctx.transfer.chain(top).catch(() => []);
    if (chain.some((o) => o.id === id)) return true;
  }
  return false;
}
