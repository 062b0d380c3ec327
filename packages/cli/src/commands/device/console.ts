// `roamdesk console NAME` for a desktop running on THIS device: a tiny web server on 127.0.0.1 (a random port)
// serving a noVNC page (noVNC's own modules from @roamdesk/web's novncRoot) and a WebSocket that pipes to the
// local VM's VNC UNIX socket (0600, in the 0700 run dir). It needs no server and works offline.
//
// Access: the printed URL carries a random token in its fragment (never sent in a request line, kept out of
// logs and Referer); the page hands it to the WebSocket upgrade, which accepts it ONCE. A reload needs a new
// `roamdesk console`. The WebSocket must also come from this origin (Origin check), so another web page the
// user visits cannot connect to it. The command serves until Ctrl-C or until the VM stops.

import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { join, normalize, sep } from 'node:path';

import { WebSocketServer, type RawData, type WebSocket } from 'ws';

import { DeviceError, type LocalVmInfo } from '@roamdesk/client';
import { novncRoot } from '@roamdesk/web';

import type { Output } from '../../output.ts';

const CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

const PAGE = (name: string): string => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${name} — Roamdesk (this device)</title>
<style>html,body{margin:0;height:100%;background:#111;color:#ddd;font:14px sans-serif}header{padding:4px 8px}#screen{position:absolute;top:28px;bottom:0;left:0;right:0}</style>
<script type="module" src="/local-console.js"></script></head>
<body><header>${name} (this device) <span id="status" data-state="connecting">connecting…</span></header><div id="screen"></div></body></html>
`;

const SCRIPT = `import RFB from '/novnc/core/rfb.js';
const status = document.getElementById('status');
const set = (state, text) => { status.dataset.state = state; status.textContent = text; };
const token = new URLSearchParams(location.hash.slice(1)).get('token') ?? '';
history.replaceState(null, '', location.pathname);
const rfb = new RFB(document.getElementById('screen'), 'ws://' + location.host + '/ws?token=' + encodeURIComponent(token), { wsProtocols: ['binary'], shared: true });
rfb.scaleViewport = true;
rfb.addEventListener('connect', () => { set('connected', 'connected'); rfb.focus(); });
rfb.addEventListener('disconnect', (e) => set('disconnected', e.detail && e.detail.clean ? 'the desktop closed the console' : 'disconnected (run roamdesk console again)'));
`;

/** Serve files below `root` only (no traversal), for noVNC's core/ and vendor/. */
async function serveFile(res: ServerResponse, root: string, rel: string): Promise<void> {
  const file = normalize(join(root, rel));
  if (!file.startsWith(root + sep) || !(await stat(file).then((s) => s.isFile(), () => false))) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': file.endsWith('.js') ? 'text/javascript; charset=utf-8' : 'application/octet-stream', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  createReadStream(file).pipe(res);
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/** WebSocket binary frames <-> the VNC socket, with backpressure both ways. */
function pipe(ws: WebSocket, socketPath: string): void {
  const vnc = connect(socketPath);
  const end = (): void => {
    vnc.destroy();
    if (ws.readyState === ws.OPEN) ws.close(1000, 'console closed');
  };
  ws.on('message', (data) => {
    if (!vnc.write(toBuffer(data))) ws.pause();
  });
  vnc.on('drain', () => ws.resume());
  vnc.on('data', (chunk: Buffer) => {
    ws.send(chunk, { binary: true }, () => {
      if (vnc.isPaused() && ws.bufferedAmount < 256 * 1024) vnc.resume();
    });
    if (ws.bufferedAmount > 1024 * 1024) vnc.pause();
  });
  vnc.on('error', end);
  vnc.on('close', end);
  ws.on('close', () => vnc.destroy());
  ws.on('error', () => vnc.destroy());
}

export interface LocalConsoleHandle {
  url: string;
  close(): Promise<void>;
  /** Resolves when the console server stopped (Ctrl-C, VM gone, close()). */
  done: Promise<void>;
}

export async function startLocalConsole(name: string, vm: LocalVmInfo, opts: { port?: number } = {}): Promise<LocalConsoleHandle> {
  if (!vm.running) {
    throw new DeviceError('DEVICE_ERR_VM_NOT_RUNNING', `${name} does not run on this device`, { desktop: name, hint: `start it: roamdesk start ${name}` });
  }
  const token = randomBytes(24).toString('base64url');
  let used = false;
  const coreRoot = join(novncRoot, 'core');
  const vendorRoot = join(novncRoot, 'vendor');
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    res.setHeader('content-security-policy', CSP);
    res.setHeader('referrer-policy', 'no-referrer');
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method !== 'GET') {
      res.writeHead(405).end();
    } else if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(PAGE(name));
    } else if (path === '/local-console.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' }).end(SCRIPT);
    } else if (path.startsWith('/novnc/core/')) {
      void serveFile(res, coreRoot, path.slice('/novnc/core/'.length));
    } else if (path.startsWith('/novnc/vendor/')) {
      void serveFile(res, vendorRoot, path.slice('/novnc/vendor/'.length));
    } else {
      res.writeHead(404).end();
    }
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const given = Buffer.from(u.searchParams.get('token') ?? '');
    const want = Buffer.from(token);
    const origin = req.headers.origin;
    const host = req.headers.host ?? '';
    const sameOrigin = origin === undefined || origin === `http://${host}`;
    if (u.pathname !== '/ws' || used || given.length !== want.length || !timingSafeEqual(given, want) || !sameOrigin) {
      socket.end('HTTP/1.1 403 Forbidden\r\nconnection: close\r\n\r\n');
      return;
    }
    used = true;
    wss.handleUpgrade(req, socket, head, (ws) => pipe(ws, vm.paths.vnc));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', resolve);
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  let finish: () => void = () => undefined;
  const done = new Promise<void>((r) => {
    finish = r;
  });
  const close = async (): Promise<void> => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    finish();
  };
  return { url: `http://127.0.0.1:${port}/#token=${token}`, close, done };
}

/** Serve until Ctrl-C or until the local VM stops; the URL alone on stdout. */
export async function serveLocalConsole(name: string, vm: LocalVmInfo, out: Output): Promise<void> {
  const h = await startLocalConsole(name, vm);
  out.result({ desktop: name, location: 'this-device', url: h.url }, () => h.url);
  if (!out.opts.json) process.stderr.write('(single use; this device only; Ctrl-C to stop serving)\n');
  const onSig = (): void => void h.close();
  process.once('SIGINT', onSig);
  process.once('SIGTERM', onSig);
  const pid = vm.pid;
  const watch = setInterval(() => {
    if (pid === null) return;
    try {
      process.kill(pid, 0);
    } catch {
      void h.close();
    }
  }, 1000);
  try {
    await h.done;
  } finally {
    clearInterval(watch);
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
  }
}
