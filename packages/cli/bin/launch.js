// How the roamdesk CLI starts. It runs from its TypeScript sources, with no build step between a clone and a
// working command, but loading ~250 modules through a TypeScript loader costs every command half a second.
// So the first run after the sources change bundles them once with esbuild (which tsx already brings) into
// `.cache/cli/<key>/`, keyed by the path, size and mtime of every source file (and this file), and later runs import that
// bundle directly. Third-party packages stay external (loaded from node_modules as usual). If anything about
// the bundle fails, the CLI runs from the sources through tsx exactly as before; ROAMDESK_NO_BUNDLE=1 forces that.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const entry = join(root, 'packages', 'cli', 'src', 'main.ts');
const cacheDir = join(root, '.cache', 'cli');
const KEEP_BUNDLES = 8;

/** Every file the bundle is made of: the workspace packages' sources and manifests, by path, size and mtime. */
function sourceKey() {
  const h = createHash('sha256');
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (e.name === 'node_modules') continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        const s = statSync(p);
        h.update(`${p}\0${s.size}\0${s.mtimeMs}\n`);
      }
    }
  };
  const packages = join(root, 'packages');
  for (const pkg of readdirSync(packages).sort()) {
    const src = join(packages, pkg, 'src');
    if (existsSync(src)) walk(src);
    const manifest = join(packages, pkg, 'package.json');
    if (existsSync(manifest)) h.update(readFileSync(manifest));
  }
  h.update(readFileSync(fileURLToPath(import.meta.url)));
  h.update(process.version);
  return h.digest('hex').slice(0, 16);
}

/** Bare imports other than the workspace's own stay imports of node_modules packages. */
function externalPackages() {
  return {
    name: 'external-packages',
    setup(build) {
      build.onResolve({ filter: /^[^./]/ }, (args) => (args.path.startsWith('@roamdesk/') || args.path.startsWith('node:') ? undefined : { path: args.path, external: true }));
    },
  };
}

/** `import.meta.url` keeps meaning the source file (the CLI finds the guest and the web assets by it). */
function sourceUrls() {
  return {
    name: 'source-urls',
    setup(build) {
      build.onLoad({ filter: /\.ts$/ }, (args) => {
        const text = readFileSync(args.path, 'utf8');
        if (!text.includes('import.meta.url')) return undefined;
        return { contents: text.replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href)), loader: 'ts' };
      });
    },
  };
}

async function bundle(dir) {
  const { build } = await import('esbuild');
  const temp = `${dir}.tmp-${process.pid}`;
  rmSync(temp, { recursive: true, force: true });
  await build({
    entryPoints: { main: entry },
    outdir: temp,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    sourcemap: false,
    logLevel: 'silent',
    plugins: [externalPackages(), sourceUrls()],
  });
  try {
    renameSync(temp, dir);
  } catch {
    // Another roamdesk process published the same bundle first.
    rmSync(temp, { recursive: true, force: true });
  }
  pruneOldBundles();
}

/**
 * Keep the most recently used bundles only. Not just the newest: a long-running `roamdesk server` started from an
 * older bundle still loads chunks of it on demand.
 */
function pruneOldBundles() {
  const bundles = readdirSync(cacheDir).filter((n) => !n.includes('.tmp-')).map((n) => ({ path: join(cacheDir, n), used: statSync(join(cacheDir, n)).mtimeMs }));
  bundles.sort((a, b) => b.used - a.used);
  for (const b of bundles.slice(KEEP_BUNDLES)) rmSync(b.path, { recursive: true, force: true });
}

async function bundled() {
  if (process.env.ROAMDESK_NO_BUNDLE === '1') return null;
  try {
    const dir = join(cacheDir, sourceKey());
    const main = join(dir, 'main.js');
    if (!existsSync(main)) {
      mkdirSync(dirname(dir), { recursive: true });
      await bundle(dir);
    } else {
      // Marks it used (pruneOldBundles keeps the most recently used).
      const now = new Date();
      utimesSync(dir, now, now);
    }
    return pathToFileURL(main).href;
  } catch {
    return null;
  }
}

export async function launch() {
  const main = await bundled();
  if (main !== null) {
    await import(main);
    return;
  }
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(entry).href);
}
