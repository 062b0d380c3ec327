// The one error shape of the API as a TypeBox schema; the catalog of codes and ApiError: error-catalog.ts.

import { Type, type Static } from 'typebox';

export * from './error-catalog.ts';

export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'stable error code, e.g. NOT_FOUND or QCOW2_ERR_BAD_MAGIC' }),
      message: Type.String({ description: 'human-readable; may change between versions' }),
      data: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: 'structured detail' })),
    }),
  },
  { description: 'The one error shape of the API' },
);
export type ErrorBody = Static<typeof ErrorBody>;
