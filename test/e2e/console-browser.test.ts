/**
 * The remote console end to end: the tiny guest (`idle` workload, which draws a white-on-blue title bar on
 * the VGA console) under real QEMU, its VNC UNIX socket behind the server's WebSocket proxy, and the real
 * console page with noVNC in Debian Chromium (playwright-core). Checks the pixels the user would see, not
 * only that noVNC said "connected".
 *
 * The server is the real one (real store, real QEMU runtime): the desktop is created and started through
 * the API, exactly as a user's would be. The portal's Start and Force stop buttons are driven the same way.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { findGuest, guestAppend } from '@roamdesk/cli';
import { DeviceAgent } from '@roamdesk/client';
import type { ServerHandle } from '@roamdesk/server';
import { chromium, type Browser, type Page } from 'playwright-core';

import { tempDir } from '../support/guest-vm.ts';
import { api, boot, createDesktop, killOurs, login, ourQemus, serial, until } from '../support/server.ts';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** What the canvas shows: how many pixels are not black, and how many are the console's title-bar blue. */
interface CanvasStats {
  width: number;
  height: number;
  nonBlack: number;
  blue: number;
  white: number;
}

/** A real server whose desktop `name` (stopped) boots the idle tiny guest, and Chromium; all stopped and removed after `fn`. */
async function withIdleDesktop(name: string, fn: (s: { h: ServerHandle; token: string; browser: Browser; dir: string }) => Promise<void>): Promise<void> {
  const tmp = await tempDir('roamdesk-e2e-browser-');
  let h: ServerHandle | undefined;
  let browser: Browser | undefined;
  try {
    const guest = await findGuest();
    h = await boot(tmp.dir);
    const token = await login(h);
    const img = await api(h, 'POST', '/images', token, { name: 'guest', path: guest.disk, format: 'qcow2' });
    assert.equal(img.statusCode, 201, img.body);
    await createDesktop(h, token, guest, name, guestAppend(guest, 'idle'));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    await fn({ h, token, browser, dir: tmp.dir });
  } finally {
    await browser?.close();
    await h?.close();
    await killOurs(tmp.dir);
    await tmp.remove();
  }
}

/** The portal's page, logged in with `token`; errors the page throws are collected. */
async function openPortal(browser: Browser, h: ServerHandle, token: string): Promise<{ page: Page; pageErrors: string[] }> {
  const context = await browser.newContext();
  await context.addInitScript({ content: `sessionStorage.setItem('roamdesk.token', ${JSON.stringify(token)});` });
  const page = await context.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`${h.url}/`);
  return { page, pageErrors };
}

describe('the console and the portal in a real browser', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed` }, () => {
  it("shows the idle guest's screen through the proxy and noVNC", () => withIdleDesktop('demo', async ({ h, token, browser, dir }) => {
    const started = await api(h, 'POST', '/desktops/demo/start', token);
    assert.equal(started.statusCode, 200, started.body);
    const base = h.url;

    const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
    await context.addInitScript({ content: `sessionStorage.setItem('roamdesk.token', ${JSON.stringify(token)});` });
    const page = await context.newPage();
    const consoleErrors: string[] = [];
    const consoleLog: string[] = [];
    page.on('pageerror', (e) => consoleErrors.push(e.message));
    page.on('console', (m) => consoleLog.push(`${m.type()}: ${m.text()}`));
    await page.goto(`${base}/console/demo`);
    // The page settles in connected, disconnected or error. On a loaded machine the first attempt may fail
    // (as a user would, the test presses "reconnect" once); what it saw is kept for the failure message.
    const settled = '#status[data-state="connected"], #status[data-state="disconnected"], #status[data-state="error"]';
    for (let attempt = 1; ; attempt += 1) {
      await page.waitForSelector(settled, { timeout: 90_000 });
      const state = await page.getAttribute('#status', 'data-state');
      if (state === 'connected') break;
      const why = `console page ${state ?? '?'}: ${await page.textContent('#status') ?? ''}; page log: ${consoleLog.join(' | ')}`;
      if (attempt === 2) assert.fail(why);
      console.error(`retrying the console connection once (${why})`);
      await page.click('#reconnect');
    }

    const server = h;
    await until('the guest to show its idle screen', async () => ((await serial(server, token, 'demo')).includes('ROAMDESK idle') ? true : undefined));

    // QEMU sends the redrawn screen in updates; poll until the title bar is there.
    // Browser-side code is passed as source text: this project type-checks for Node (no DOM lib).
    const sample = (): Promise<CanvasStats | null> =>
      page.evaluate<CanvasStats | null>(`(() => {
        const canvas = document.querySelector('#screen canvas');
        if (!(canvas instanceof HTMLCanvasElement) || canvas.width === 0) return null;
        const { data, width, height } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
        let nonBlack = 0, blue = 0, white = 0;
        for (let i = 0; i < data.length; i += 4) {
          const r = data[i], g = data[i + 1], b = data[i + 2];
          if (r + g + b > 60) nonBlack += 1;
          if (b >= 120 && r < 80 && g < 80) blue += 1;
          if (r > 160 && g > 160 && b > 160) white += 1;
        }
        return { width, height, nonBlack, blue, white };
      })()`);
    let stats: CanvasStats | null = null;
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      stats = await sample();
      if (stats !== null && stats.blue > 2000) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    await page.screenshot({ path: join(dir, 'console.png') });
    const canvasPng = await page.evaluate<string>(`document.querySelector('#screen canvas').toDataURL('image/png')`);
    await writeFile(join(dir, 'canvas.png'), Buffer.from(canvasPng.replace(/^data:image\/png;base64,/, ''), 'base64'));
    if (process.env['ROAMDESK_KEEP_SCREENSHOT'] !== undefined) {
      await writeFile(process.env['ROAMDESK_KEEP_SCREENSHOT'], await page.screenshot());
    }

    assert.ok(stats !== null, 'noVNC drew a canvas');
    assert.deepEqual([stats.width, stats.height], [720, 400], 'the guest console size (VGA text mode)');
    const total = stats.width * stats.height;
    // The title bar is a full-width blue band (720 × 16 px = 11520 px); text adds white pixels.
    assert.ok(stats.blue > 5000, `title-bar blue pixels: ${JSON.stringify(stats)}`);
    assert.ok(stats.nonBlack > total * 0.02, `non-black pixels: ${JSON.stringify(stats)}`);
    assert.ok(stats.white > 200, `white text pixels: ${JSON.stringify(stats)}`);
    assert.equal(await page.locator('#status').getAttribute('data-state'), 'connected');
    assert.deepEqual(consoleErrors, []);

    // Closing the page ends the session on the server (and its event).
    await page.close();
    const events = async (): Promise<string[]> => {
      const r = await api(server, 'GET', '/events?desktop=demo&limit=50', token);
      assert.equal(r.statusCode, 200, r.body);
      return r.json<{ events: { action: string }[] }>().events.map((e) => e.action).filter((a) => a.startsWith('console.')).sort();
    };
    await until('the console session to end', async () => ((await events()).includes('console.end') ? true : undefined), 10_000);
    assert.deepEqual(await events(), ['console.end', 'console.start']);
    const stopped = await api(server, 'POST', '/desktops/demo/stop', token);
    assert.equal(stopped.statusCode, 200, stopped.body);
  }));

  it('the portal starts a desktop, then force-stops it after a confirmation', () => withIdleDesktop('desk', async ({ h, token, browser, dir }) => {
    const { page, pageErrors } = await openPortal(browser, h, token);
    const row = page.locator('#desktops tbody tr', { hasText: 'desk' });
    await row.locator('button[data-action="start"]').click();
    await row.locator('a', { hasText: 'Open console' }).waitFor({ timeout: 60_000 });
    assert.match(await row.textContent() ?? '', /running/);
    assert.equal(await row.locator('button[data-action="start"]').count(), 0, 'no Start for a running desktop');

    // Force stop asks first: dismissing changes nothing, accepting stops the VM at once.
    page.once('dialog', (d) => void d.dismiss());
    await row.locator('button[data-action="force-stop"]').click();
    assert.equal((await api(h, 'GET', '/desktops/desk', token)).json<{ desktop: { state: string } }>().desktop.state, 'running');
    page.once('dialog', (d) => void d.accept());
    await row.locator('button[data-action="force-stop"]').click();
    await row.locator('button[data-action="start"]').waitFor({ timeout: 60_000 });
    assert.match(await row.textContent() ?? '', /stopped/);
    assert.equal((await api(h, 'GET', '/desktops/desk', token)).json<{ desktop: { state: string } }>().desktop.state, 'stopped');
    assert.deepEqual(await ourQemus(dir), [], 'the VM is gone');
    const events = (await api(h, 'GET', '/events?desktop=desk&limit=10', token)).json<{ events: Array<{ action: string; detail: Record<string, unknown> }> }>().events;
    assert.equal(events.find((e) => e.action === 'desktop.stop')?.detail['force'], true, 'the portal asked for a forced stop');
    assert.deepEqual(pageErrors, []);
  }));

  it('the portal shows a desktop checked out to a device, and when the server last got a copy of its work', () => withIdleDesktop('away', async ({ h, token, browser, dir }) => {
    const laptop = new DeviceAgent({ home: join(dir, 'laptop'), session: { server: h.url, token } });
    await laptop.register({ name: 'laptop' });
    await laptop.checkout('away');
    const overlay = (await laptop.records.require('away')).overlay!.path;
    assert.equal(spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', overlay]).status, 0);
    await laptop.replicate('away');
    const { page, pageErrors } = await openPortal(browser, h, token);
    const row = page.locator('#desktops tbody tr', { hasText: 'away' });
    await row.waitFor();
    assert.match(await row.textContent() ?? '', /checked out to laptop since .*\(lease \d+; last replicated [^)]+\)/);
    assert.equal(await row.locator('button[data-action="start"]').count(), 0, 'no Start while it is checked out');
    assert.deepEqual(pageErrors, []);
  }));
});
