import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { EMPTY_STATE, resolveHome, StateStore } from '../src/index.ts';

describe('client state', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'roamdesk-state-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('resolves ROAMDESK_HOME, then XDG_CONFIG_HOME, then ~/.config', () => {
    assert.equal(resolveHome({ ROAMDESK_HOME: '/x/home', XDG_CONFIG_HOME: '/xdg' }), '/x/home');
    assert.equal(resolveHome({ XDG_CONFIG_HOME: '/xdg' }), '/xdg/roamdesk');
    assert.equal(resolveHome({ XDG_CONFIG_HOME: 'relative' }), join(homedir(), '.config', 'roamdesk'));
    assert.equal(resolveHome({}), join(homedir(), '.config', 'roamdesk'));
  });

  it('a missing file is the empty state', async () => {
    assert.deepEqual(await new StateStore(join(dir, 'none')).load(), EMPTY_STATE);
  });

  it('saves atomically with mode 0600 in a 0700 directory and loads it back', async () => {
    const home = join(dir, 'home');
    const store = new StateStore(home);
    const state = { version: 1 as const, server: 'http://127.0.0.1:8760', session: { user: 'alice', role: 'user' as const, token: 'rdt_x', expiresAt: '2025-01-01T00:00:00.000Z' } };
    await store.save(state);
    assert.equal((await stat(store.file)).mode & 0o777, 0o600);
    assert.equal((await stat(home)).mode & 0o777, 0o700);
    assert.deepEqual(await store.load(), state);
    await store.update((s) => ({ ...s, session: null }));
    assert.deepEqual(await store.load(), { ...state, session: null });
    // No temp files left behind.
    assert.deepEqual(await readdir(home), ['state.json']);
    assert.match(await readFile(store.file, 'utf8'), /"server": "http:\/\/127\.0\.0\.1:8760"/);
  });

  it('a corrupt file is CLIENT_ERR_STATE_INVALID with a hint', async () => {
    const home = join(dir, 'corrupt');
    const store = new StateStore(home);
    await store.save(EMPTY_STATE);
    await writeFile(store.file, '{"version": 1, "server": 5}');
    await assert.rejects(store.load(), (err: unknown) => {
      assert.equal((err as { code?: unknown }).code, 'CLIENT_ERR_STATE_INVALID');
      assert.match(String((err as { data: Record<string, unknown> }).data['hint']), /log in again/);
      return true;
    });
  });
});
