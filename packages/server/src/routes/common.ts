import { ErrorBody } from '@roamdesk/api';
import { Type } from 'typebox';
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import type { AppContext } from '../context.ts';

/** Error answers every route documents (and serializes with) in OpenAPI. */
export const errorResponses = { '4xx': ErrorBody, '5xx': ErrorBody } as const;

/** One file per resource; each exports a plugin built from the app context. */
export type RoutePlugin = (ctx: AppContext) => FastifyPluginCallbackTypebox;

/** 204 answers have no body; the schema says so for OpenAPI. */
export const NoContent = Type.Null({ description: 'No content' });
