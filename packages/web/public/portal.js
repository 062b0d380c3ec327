// @ts-check
// The minimal portal: log in, list my desktops, open a console. (The full portal comes later.)
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
  const tbody = /** @type {HTMLElement} */ (document.querySelector('#desktops tbody'));
  for (const d of desktops) {
    const tr = document.createElement('tr');
    for (const text of [d.name, d.state, d.location]) {
      const td = document.createElement('td');
      td.textContent = text; // textContent, never innerHTML: names come from the server but stay data
      tr.append(td);
    }
    const td = document.createElement('td');
    if (d.state === 'running' && d.location === 'server') {
      const a = document.createElement('a');
      a.href = `/console/${encodeURIComponent(d.name)}`;
      a.textContent = 'Open console';
      td.append(a);
    }
    tr.append(td);
    tbody.append(tr);
  }
  /** @type {HTMLElement} */ (document.querySelector('#desktops .empty')).hidden = desktops.length > 0;
  $('desktops').hidden = false;
}

main().catch((e) => {
  $('error').textContent = e instanceof Error ? e.message : String(e);
});
