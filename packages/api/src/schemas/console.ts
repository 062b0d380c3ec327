import { Type, type Static } from 'typebox';
import { Timestamp } from '../names.ts';

/** How long a console token may wait before its WebSocket uses it. Short: it travels in a URL. */
export const CONSOLE_TOKEN_TTL_SECONDS = 60;

/** The WebSocket endpoint (under the API prefix) that a console token opens. */
export const CONSOLE_WS_PATH = '/console/ws';

export const ConsoleTokenResponse = Type.Object({
  token: Type.String({ description: 'single-use, bound to the caller and this desktop; open the WebSocket with it before expiresAt' }),
  expiresAt: Timestamp,
  url: Type.String({
    description: 'the console page, relative to the server (e.g. "/console/NAME#token=…"); the token rides in the fragment, which browsers never send',
  }),
  websocket: Type.String({ description: 'the WebSocket path with the token, relative to the server (subprotocol "binary", RFB inside)' }),
});
export type ConsoleTokenResponse = Static<typeof ConsoleTokenResponse>;

/**
 * The WebSocket's query. The browser cannot set headers on a WebSocket, so the token is in the URL. Only the
 * length is checked here: a malformed token is refused like an unknown one (401), not as a 400.
 */
export const ConsoleWsQuery = Type.Object(
  { token: Type.String({ maxLength: 128 }) },
  { additionalProperties: false },
);
export type ConsoleWsQuery = Static<typeof ConsoleWsQuery>;
