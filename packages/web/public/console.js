// @ts-check
// The console page: /console/NAME (or /console.html?desktop=NAME). Gets a console token (from the URL
// fragment that `POST …/console` returns in `url`, or by asking the API with the stored bearer token) and
// connects noVNC to the server's WebSocket proxy. Status is in #status[data-state]:
// idle | login | connecting | connected | disconnected | error.
import RFB from '/novnc/core/rfb.js';
import { api, ApiCallError, ensureLogin } from '/api.js';

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const statusEl = $('status');
const reconnectBtn = $('reconnect');
const cadBtn = $('cad');

/** @param {string} state @param {string} text */
function setStatus(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

function desktopName() {
  const m = /^\/console\/([^/]+)$/.exec(location.pathname);
  if (m?.[1] !== undefined) return decodeURIComponent(m[1]);
  return new URLSearchParams(location.search).get('desktop') ?? '';
}

const name = desktopName();
$('desktop').textContent = name;
document.title = `${name} — Roamdesk`;

/** A token handed over in the fragment (never sent to the server by the browser); used at most once. */
function tokenFromFragment() {
  const t = new URLSearchParams(location.hash.slice(1)).get('token');
  if (t !== null) history.replaceState(null, '', location.pathname + location.search);
  return t;
}

async function consoleToken() {
  const fromUrl = tokenFromFragment();
  if (fromUrl !== null) return fromUrl;
  for (;;) {
    setStatus('login', 'log in to open the console');
    await ensureLogin($('login'));
    setStatus('connecting', 'requesting console…');
    try {
      const r = await api(`/api/v1/desktops/${encodeURIComponent(name)}/console`, { method: 'POST' });
      return /** @type {string} */ (r.token);
    } catch (e) {
      // 401: the stored token expired and was dropped; ask for a login again. Anything else is final.
      if (!(e instanceof ApiCallError && e.status === 401)) throw e;
    }
  }
}

/** @type {RFB | null} */
let rfb = null;

async function connect() {
  reconnectBtn.hidden = true;
  if (name === '') throw new Error('no desktop named in the URL');
  const token = await consoleToken();
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const url = `${scheme}://${location.host}/api/v1/console/ws?token=${encodeURIComponent(token)}`;
  setStatus('connecting', 'connecting…');
  let connected = false;
  rfb = new RFB($('screen'), url, { wsProtocols: ['binary'], shared: true });
  rfb.scaleViewport = true; // fit the remote screen to the window, keeping its aspect
  rfb.resizeSession = false;
  rfb.background = '#111';
  rfb.addEventListener('connect', () => {
    connected = true;
    setStatus('connected', `connected to ${name}`);
    cadBtn.hidden = false;
    rfb?.focus();
  });
  rfb.addEventListener('disconnect', (/** @type {any} */ e) => {
    cadBtn.hidden = true;
    rfb = null;
    const why = !connected
      ? 'could not connect (desktop stopped, token refused or console busy)'
      : e.detail?.clean ? 'the desktop closed the console' : 'connection lost';
    setStatus('disconnected', `disconnected: ${why}`);
    reconnectBtn.hidden = false;
  });
  rfb.addEventListener('securityfailure', (/** @type {any} */ e) => {
    setStatus('error', `security failure: ${e.detail?.reason ?? e.detail?.status ?? 'unknown'}`);
  });
}

function start() {
  connect().catch((e) => {
    setStatus('error', e instanceof Error ? e.message : String(e));
    reconnectBtn.hidden = false;
  });
}

reconnectBtn.addEventListener('click', start);
cadBtn.addEventListener('click', () => rfb?.sendCtrlAltDel());
start();
