// @ts-check
// The pages' only way to the API: a bearer token kept in sessionStorage (per tab, gone when the tab
// closes), and a login form when there is none or it stopped working.

const KEY = 'roamdesk.token';

export class ApiCallError extends Error {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiCallError';
    this.status = status;
    this.code = code;
  }
}

/** @returns {string | null} */
export function storedToken() {
  return sessionStorage.getItem(KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

/**
 * JSON call to the API with the stored bearer token.
 * @param {string} path
 * @param {{ method?: string, body?: unknown }} [options]
 * @returns {Promise<any>}
 */
export async function api(path, options = {}) {
  /** @type {Record<string, string>} */
  const headers = {};
  const token = storedToken();
  if (token !== null) headers['authorization'] = `Bearer ${token}`;
  /** @type {RequestInit} */
  const init = { method: options.method ?? 'GET', headers };
  if (options.body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(options.body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  const body = text === '' ? null : JSON.parse(text);
  if (!r.ok) {
    const err = body?.error ?? {};
    if (r.status === 401) forgetToken();
    throw new ApiCallError(r.status, String(err.code ?? 'HTTP_' + r.status), String(err.message ?? r.statusText));
  }
  return body;
}

/**
 * Resolve once a bearer token is stored: at once if there is one, else after the user logged in through
 * the form built in `container`.
 * @param {HTMLElement} container
 * @returns {Promise<void>}
 */
export function ensureLogin(container) {
  if (storedToken() !== null) return Promise.resolve();
  return new Promise((resolveLogin) => {
    container.replaceChildren();
    container.hidden = false;
    const form = document.createElement('form');
    form.className = 'login';
    form.innerHTML = `
      <h2>Log in to Roamdesk</h2>
      <label>User <input name="user" autocomplete="username" required></label>
      <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
      <button type="submit">Log in</button>
      <p class="error" role="alert"></p>`;
    const error = /** @type {HTMLElement} */ (form.querySelector('.error'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      error.textContent = '';
      try {
        const r = await api('/api/v1/auth/login', { method: 'POST', body: { user: String(data.get('user')), password: String(data.get('password')) } });
        sessionStorage.setItem(KEY, r.token);
        container.replaceChildren();
        container.hidden = true;
        resolveLogin();
      } catch (e) {
        error.textContent = e instanceof Error ? e.message : String(e);
      }
    });
    container.append(form);
    /** @type {HTMLInputElement | null} */ (form.querySelector('input[name=user]'))?.focus();
  });
}
