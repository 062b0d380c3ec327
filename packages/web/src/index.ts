// @roamdesk/web: the browser pages, as files the server serves as-is (plain HTML, CSS and ES modules; no
// build step). This module only tells the server where they are.

import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Absolute path of the directory with the pages (index.html, console.html, *.js, style.css). */
export const webRoot = resolve(fileURLToPath(new URL('../public/', import.meta.url)));

/** The console page's file name in webRoot; the server serves it at /console/:name. */
export const CONSOLE_PAGE = 'console.html';

/**
 * Absolute path of the @novnc/novnc package (its `core/` and `vendor/` are served under /novnc/). Resolved
 * through Node's resolver rather than a guessed node_modules path, so hoisting does not matter. The package
 * exports only core/rfb.js, hence two dirname()s.
 */
export const novncRoot = dirname(dirname(createRequire(import.meta.url).resolve('@novnc/novnc')));
