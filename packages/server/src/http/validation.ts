// Validation of requests: TypeBox's checks, after converting the strings of a query string, path or headers to
// the schema's types. TypeBox converts an integer leniently ("1.5" → 1, "" → 0); in a query string that turned
// `?timeoutSeconds=` into "kill the VM at once". Here an integer field must be spelled as one.

import { TypeBoxValidatorCompiler } from '@fastify/type-provider-typebox';
import type { FastifySchemaCompiler } from 'fastify';
import type { TSchema } from 'typebox';

const INTEGER = /^-?\d{1,16}$/;

/** The top-level properties of an object schema whose type is integer. */
function integerFields(schema: unknown): string[] {
  const props = (schema as { properties?: Record<string, { type?: unknown }> } | null)?.properties;
  if (props === undefined || props === null) return [];
  return Object.entries(props).filter(([, p]) => p.type === 'integer').map(([k]) => k);
}

export const strictValidatorCompiler: FastifySchemaCompiler<TSchema> = (route) => {
  const check = TypeBoxValidatorCompiler(route);
  const integers = route.httpPart === 'body' ? [] : integerFields(route.schema);
  if (integers.length === 0) return check;
  return (value: unknown) => {
    const raw = value as Record<string, unknown> | null;
    for (const key of integers) {
      const v = raw?.[key];
      if (typeof v === 'string' && !INTEGER.test(v)) {
        return { error: [{ keyword: 'type', instancePath: `/${key}`, schemaPath: `#/properties/${key}/type`, params: { type: 'integer' }, message: 'must be an integer' }] };
      }
    }
    return check(value);
  };
};
