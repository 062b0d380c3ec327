// @ts-check
// The minimal portal: log in, list my desktops, start and stop those on the server, open a console.
import { api, ensureLogin, forgetToken } from '/api.js';

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

async function main() {
  await ensureLogin($('login'));
  let me;
  try {
    me = await api('/api/v1/me');
  } catch {
    // An expired token was dropped by api(); start over with the form.
    await ensureLogin($('login'));
    me = await api('/api/v1/me');
  }
  $('who').textContent = `${me.user?.name ?? me.name ?? ''}`;
  const logout = $('logout');
  logout.hidden = false;
  logout.addEventListener('click', async () => {
    await api('/api/v1/auth/logout', { method: 'POST' }).catch(() => undefined);
    forgetToken();
    location.reload();
  });

  const { desktops } = await api('/api/v1/desktops');
  const { operations } = await api('/api/v1/operations?limit=100').catch(() => ({ operations: [] }));
  const tbody = /** @type {HTMLElement} */ (document.querySelector('#desktops tbody'));
  for (const d of desktops) {
    const tr = document.createElement('tr');
    const op = operations.find((/** @type {any} */ o) => o.desktop === d.name && o.state === 'running');
    for (const text of [d.name, stateText(d), where(d), op === undefined ? '' : describeOperation(op)]) {
      const td = document.createElement('td');
      td.textContent = text; // textContent, never innerHTML: names come from the server but stay data
      tr.append(td);
    }
    const td = document.createElement('td');
    td.className = 'actions';
    if (d.location === 'server') {
      if (d.state === 'running') {
        const a = document.createElement('a');
        a.href = `/console/${encodeURIComponent(d.name)}`;
        a.textContent = 'Open console';
        td.append(a);
      }
      if (d.state === 'stopped') td.append(action(d.name, 'Start', 'start'));
      // A paused VM (a disk error): Start resumes it (the server also does, once a full disk has room again).
      if (d.state === 'running' && d.paused !== undefined) td.append(action(d.name, 'Resume', 'start'));
      // From 'error' too: stopping is how a failed start is cleaned up.
      if (d.state === 'running' || d.state === 'error') {
        td.append(action(d.name, 'Shut down', 'stop'));
        td.append(action(d.name, 'Force stop', 'force-stop', `Stop ${d.name} at once? What its guest has not saved is lost.`));
      }
    }
    tr.append(td);
    tbody.append(tr);
  }
  /** @type {HTMLElement} */ (document.querySelector('#desktops .empty')).hidden = desktops.length > 0;
  // While a check-out, replication or check-in runs, follow its progress.
  if (operations.some((/** @type {any} */ o) => o.state === 'running')) setTimeout(() => location.reload(), 3000);
  $('desktops').hidden = false;
}

const ACTION_PATHS = { start: 'start', stop: 'stop', 'force-stop': 'stop?force=true' };

/** The state column: a VM a disk error paused says so, and why. */
function stateText(/** @type {any} */ d) {
  if (d.paused === undefined) return d.state;
  if (d.paused.reason === 'no-space') return "paused: the server's disk is full (it resumes once there is room)";
  if (d.paused.reason === 'disk-error') return 'paused: its disk reported an I/O error';
  return 'paused';
}

/**
 * A button that POSTs the action and then shows the new state. A stop waits for the guest to shut down (up to
 * the server's timeout), so the button says what it is doing meanwhile.
 */
function action(/** @type {string} */ name, /** @type {string} */ label, /** @type {keyof typeof ACTION_PATHS} */ kind, confirmText = '') {
  const button = document.createElement('button');
  button.textContent = label;
  button.dataset['action'] = kind;
  button.addEventListener('click', async () => {
    if (confirmText !== '' && !confirm(confirmText)) return;
    for (const b of document.querySelectorAll('td.actions button')) /** @type {HTMLButtonElement} */ (b).disabled = true;
    button.textContent = `${label}…`;
    try {
      await api(`/api/v1/desktops/${encodeURIComponent(name)}/${ACTION_PATHS[kind]}`, { method: 'POST' });
      location.reload();
    } catch (e) {
      $('error').textContent = e instanceof Error ? e.message : String(e);
      button.textContent = label;
      for (const b of document.querySelectorAll('td.actions button')) /** @type {HTMLButtonElement} */ (b).disabled = false;
    }
  });
  return button;
}

/** "server", or which device holds the lease, since when, and when the server last got a copy of its work. */
function where(/** @type {any} */ d) {
  const lease = d.lease;
  if (d.location !== 'device' || lease === undefined || lease === null) return d.location;
  const since = new Date(lease.since).toLocaleString();
  const verb = lease.state === 'checking-out' ? 'being checked out to' : 'checked out to';
  const replicated = lease.replicatedAt === null || lease.replicatedAt === undefined ? '' : `; last replicated ${new Date(lease.replicatedAt).toLocaleString()}`;
  return `${verb} ${lease.deviceName ?? lease.deviceId} since ${since} (lease ${lease.generation}${replicated})`;
}

/** A running operation's progress, as the transfer engine reports it: phase, percent, rate, ETA. */
function describeOperation(/** @type {any} */ op) {
  const p = op.progress;
  const pct = p.bytesTotal > 0 ? ` ${Math.floor((100 * p.bytesDone) / p.bytesTotal)}%` : '';
  const rate = p.rateBytesPerSec > 0 ? `, ${(p.rateBytesPerSec / 1e6).toFixed(1)} MB/s` : '';
  const eta = p.etaSeconds !== null && p.etaSeconds > 0 ? `, ${Math.ceil(p.etaSeconds)} s left` : '';
  return `${op.kind}: ${p.phase}${pct}${rate}${eta}`;
}

main().catch((e) => {
  $('error').textContent = e instanceof Error ? e.message : String(e);
});
