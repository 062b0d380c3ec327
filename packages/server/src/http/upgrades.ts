// The server's one 'upgrade' listener (RFC 9110 §7.8). WebSocket handshakes (the console) go on to
// @fastify/websocket, which listens on `websockets` instead of the server. A piece upload that asks for
// PIECES_UPGRADE is routed through fastify like any request — hooks, authentication, validation, the error
// handler — and its route finds the connection with upgradedConnection(). Any other protocol is refused.

import type { EventEmitter } from 'node:events';
import { type IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { PIECES_UPGRADE } from '@roamdesk/transfer';
import type { FastifyInstance, FastifyRequest } from 'fastify';

const kUpgrade = Symbol('roamdesk.upgrade');

export interface UpgradedConnection {
  readonly socket: Socket;
  /** Bytes the server read past the request's head. */
  readonly head: Buffer;
}

type Tagged = IncomingMessage & { [kUpgrade]?: UpgradedConnection };

export function routeUpgrades(app: FastifyInstance, websockets: EventEmitter): void {
  app.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const protocol = (req.headers.upgrade ?? '').trim().toLowerCase();
    if (protocol === 'websocket') {
      websockets.emit('upgrade', req, socket, head);
      return;
    }
    // Node removes its own error listener before emitting 'upgrade'.
    socket.on('error', () => socket.destroy());
    if (protocol !== PIECES_UPGRADE) {
      socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    (req as Tagged)[kUpgrade] = { socket, head };
    const res = new ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket);
    // Answered without switching (refused, or an error before the 101): nothing else travels on it.
    res.on('finish', () => socket.end());
    try {
      app.routing(req, res);
    } catch (err) {
      app.log.warn({ err }, 'upgraded request failed');
      socket.destroy();
    }
  });
}

/** The connection of a request that asked for PIECES_UPGRADE, or null for a plain request. */
export function upgradedConnection(request: FastifyRequest): UpgradedConnection | null {
  return (request.raw as Tagged)[kUpgrade] ?? null;
}
