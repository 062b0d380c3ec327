// `roamdesk admin …`: users, images, desktops and the event log. The server enforces the admin role; these
// commands only shape requests and answers.

import { isAbsolute, resolve } from 'node:path';

import type { Command } from 'commander';

import { CPUS_MAX, CPUS_MIN, EVENTS_LIMIT_MAX, MEMORY_MIB_MAX, MEMORY_MIB_MIN } from '@roamdesk/api/core';
import type { Image, ImageFormat, ImageVersionResponse } from '@roamdesk/api';

import { CliUsageError } from '../../errors.ts';
import { formatBytes, shortId } from '../../format.ts';
import type { CommandContext } from '../../main.ts';
import { desktopTable } from './desktops.ts';
import { readPassword } from './password.ts';
import { progressMeter } from './progress.ts';
import { parseIntOption, runRemote } from './session.ts';
import { formatTable, shortTime } from './table.ts';

export function registerAdmin(program: Command, ctx: CommandContext): void {
  const admin = program.command('admin').description('administration: users, images, desktops, events (needs an admin account)');
  registerUsers(admin, ctx);
  registerImages(admin, ctx);
  registerAdminDesktops(admin, ctx);
  registerEvents(admin, ctx);
}

function registerUsers(admin: Command, ctx: CommandContext): void {
  const user = admin.command('user').description('manage users');
  user
    .command('add')
    .description('create a user')
    .argument('<name>', 'user name (lower-case letters, digits, ".", "_", "-")')
    .option('--admin', 'make the user an administrator')
    .option('--password-stdin', 'read the password from stdin (otherwise: a hidden prompt on a terminal, asked twice)')
    .action((name: string, opts: { admin?: boolean; passwordStdin?: boolean }, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const { client } = await remote.connect();
        const password = await readPassword({ fromStdin: opts.passwordStdin === true, prompt: `Password for the new user ${name}: `, confirm: true });
        const created = await client.createUser({ name, password, role: opts.admin === true ? 'admin' : 'user' });
        out.result({ user: created }, () => `Created ${created.role === 'admin' ? 'administrator' : 'user'} ${created.name}.`);
      }),
    );
  user
    .command('list')
    .description('list users')
    .action((_opts: unknown, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const { client } = await remote.connect();
        const users = await client.listUsers();
        out.result({ users }, () =>
          formatTable(['name', 'role', 'disabled', 'created'], users.map((u) => [u.name, u.role, u.disabled ? 'yes' : 'no', shortTime(u.createdAt)])),
        );
      }),
    );
  user
    .command('remove')
    .description('delete a user (not while they own desktops; never the last administrator)')
    .argument('<name>', 'user name')
    .action((name: string, _opts: unknown, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const { client } = await remote.connect();
        await client.deleteUser(name);
        out.result({ user: name, removed: true }, () => `Removed user ${name}.`);
      }),
    );
}

function imageTable(images: readonly Image[]): string {
  if (images.length === 0) return 'No images.';
  return formatTable(
    ['name', 'format', 'size', 'virtual', 'version', 'desktops', 'id', 'created'],
    images.map((i) => [
      i.name, i.format, formatBytes(i.size), formatBytes(i.virtualSize), String(i.version), String(i.usage), shortId(i.id), shortTime(i.createdAt),
    ]),
  );
}

/** One image: its fields, then every version with the size of its layer (what a device holding the previous version fetches). */
function imageDetail(i: Image): string {
  const head = [
    `Image ${i.name}: ${i.format}, ${formatBytes(i.virtualSize)} virtual, version ${i.version}, used by ${i.usage} desktop${i.usage === 1 ? '' : 's'}`,
    `id ${i.id}`,
    `top ${i.topObjectId}`,
    '',
  ];
  const versions = formatTable(
    ['version', 'layer', 'top', 'created', 'by'],
    i.versions.map((v) => [String(v.version), formatBytes(v.diffSize), shortId(v.topObjectId), shortTime(v.createdAt), v.createdBy ?? '']),
  );
  return [...head, versions].join('\n');
}

function parseFormat(value: string | undefined): ImageFormat | undefined {
  if (value === undefined || value === 'raw' || value === 'qcow2') return value;
  throw new CliUsageError(`--format must be raw or qcow2, got ${JSON.stringify(value)}`);
}

/** Loopback servers run on this machine, so a relative path means the same file there as here. */
function isLoopback(server: string): boolean {
  const host = new URL(server).hostname;
  return host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * FILE as the server should read it: absolute paths go as they are; a relative one only to a loopback server
 * (same machine), resolved here.
 */
function serverPath(file: string, server: string): string {
  if (isAbsolute(file)) return file;
  if (!isLoopback(server)) {
    throw new CliUsageError(`FILE must be an absolute path on the server machine, got ${JSON.stringify(file)}`, {
      hint: 'give the path as the server sees it, or pass --upload to send this local file',
    });
  }
  return resolve(file);
}

function registerImages(admin: Command, ctx: CommandContext): void {
  const image = admin.command('image').description('manage base images');
  image
    .command('import')
    .description('import an image from a file on the server machine (or, with --upload, from this machine)')
    .argument('<name>', 'image name')
    .argument('<file>', 'path of the image file on the server machine (absolute), or a local file with --upload')
    .option('--format <format>', 'raw or qcow2 (default: detected by the server)')
    .option('--upload', 'stream FILE from this machine to the server (PUT /images/:name/content)')
    .action((name: string, file: string, opts: { format?: string; upload?: boolean }, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const format = parseFormat(opts.format);
        const { client, server } = await remote.connect();
        let imported: Image;
        if (opts.upload === true) {
          const meter = progressMeter(`uploading ${name}`);
          try {
            imported = await client.uploadImage(name, resolve(file), { ...(format !== undefined ? { format } : {}), onProgress: (p) => meter.update(p) });
          } finally {
            meter.done();
          }
        } else {
          imported = await client.importImage({ name, path: serverPath(file, server), ...(format !== undefined ? { format } : {}) });
        }
        out.result({ image: imported }, () =>
          `Imported image ${imported.name}: ${imported.format}, ${formatBytes(imported.size)} (${formatBytes(imported.virtualSize)} virtual), id ${shortId(imported.id)}.`,
        );
      }),
    );
  image
    .command('publish')
    .description(
      'publish a new version of an image: FILE is the whole new disk (same virtual size); the server stores only the ' +
        'difference from the latest version, as one layer, and new desktops start from it (existing desktops keep their version)',
    )
    .argument('<name>', 'image name')
    .argument('<file>', 'path of the new disk on the server machine (absolute), or a local file with --upload')
    .option('--format <format>', 'raw or qcow2 (default: detected by the server)')
    .option('--upload', 'stream FILE from this machine to the server (PUT /images/:name/versions)')
    .action((name: string, file: string, opts: { format?: string; upload?: boolean }, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const format = parseFormat(opts.format);
        const { client, server } = await remote.connect();
        const withFormat = format !== undefined ? { format } : {};
        let published: ImageVersionResponse;
        if (opts.upload === true) {
          const meter = progressMeter(`uploading ${name}`);
          try {
            published = await client.uploadImageVersion(name, resolve(file), { ...withFormat, onProgress: (p) => meter.update(p) });
          } finally {
            meter.done();
          }
        } else {
          published = await client.publishImageVersion(name, { path: serverPath(file, server), ...withFormat });
        }
        const { image: img, version: v } = published;
        out.result(published, () =>
          `Published version ${v.version} of image ${img.name}: a ${formatBytes(v.diffSize)} layer over version ${v.version - 1} ` +
            `(top ${shortId(v.topObjectId)}); new desktops start from it.`,
        );
      }),
    );
  image
    .command('show')
    .description('one image and its versions')
    .argument('<name>', 'image name')
    .action((name: string, _opts: unknown, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const { client } = await remote.connect();
        const shown = await client.getImage(name);
        out.result({ image: shown }, () => imageDetail(shown));
      }),
    );
  image
    .command('list')
    .description('list images with their size, latest version and how many desktops use them')
    .action((_opts: unknown, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const { client } = await remote.connect();
        const images = await client.listImages();
        out.result({ images }, () => imageTable(images));
      }),
    );
  image
    .command('remove')
    .description('delete an image that no desktop uses')
    .argument('<name>', 'image name')
    .action((name: string, _opts: unknown, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const { client } = await remote.connect();
        await client.deleteImage(name);
        out.result({ image: name, removed: true }, () => `Removed image ${name}.`);
      }),
    );
}

interface CreateOptions {
  image: string;
  owner: string;
  memory?: string;
  cpus?: string;
  kernel?: string;
  initrd?: string;
  append?: string;
}

function registerAdminDesktops(admin: Command, ctx: CommandContext): void {
  const desktop = admin.command('desktop').description('manage desktops');
  desktop
    .command('create')
    .description('create a desktop from an image for a user')
    .argument('<name>', 'desktop name')
    .requiredOption('--image <image>', 'image name')
    .requiredOption('--owner <user>', 'owning user')
    .option('--memory <MiB>', `memory in MiB (${MEMORY_MIB_MIN}..${MEMORY_MIB_MAX}; server default 1024)`)
    .option('--cpus <n>', `virtual CPUs (${CPUS_MIN}..${CPUS_MAX}; server default 1)`)
    .option('--kernel <file>', 'direct kernel boot: kernel path on the server machine')
    .option('--initrd <file>', 'direct kernel boot: initrd path on the server machine (needs --kernel)')
    .option('--append <cmdline>', 'direct kernel boot: kernel command line')
    .action((name: string, opts: CreateOptions, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const memoryMiB = parseIntOption(opts.memory, '--memory', MEMORY_MIB_MIN, MEMORY_MIB_MAX);
        const cpus = parseIntOption(opts.cpus, '--cpus', CPUS_MIN, CPUS_MAX);
        if ((opts.initrd !== undefined || opts.append !== undefined) && opts.kernel === undefined) {
          throw new CliUsageError('--initrd and --append need --kernel');
        }
        const { client } = await remote.connect();
        const created = await client.createDesktop({
          name,
          image: opts.image,
          owner: opts.owner,
          ...(memoryMiB !== undefined ? { memoryMiB } : {}),
          ...(cpus !== undefined ? { cpus } : {}),
          ...(opts.kernel !== undefined ? { kernel: opts.kernel } : {}),
          ...(opts.initrd !== undefined ? { initrd: opts.initrd } : {}),
          ...(opts.append !== undefined ? { append: opts.append } : {}),
        });
        out.result({ desktop: created }, () =>
          `Created desktop ${created.name} for ${created.owner} on image ${created.image} (${created.memoryMiB} MiB, ${created.cpus} CPU${created.cpus === 1 ? '' : 's'}).`,
        );
      }),
    );
  desktop
    .command('list')
    .description('list all desktops')
    .action((_opts: unknown, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const { client } = await remote.connect();
        const desktops = await client.listDesktops();
        out.result({ desktops }, () => desktopTable(desktops));
      }),
    );
  desktop
    .command('remove')
    .description('delete a stopped desktop and its disk')
    .argument('<name>', 'desktop name')
    .action((name: string, _opts: unknown, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const { client } = await remote.connect();
        await client.deleteDesktop(name);
        out.result({ desktop: name, removed: true }, () => `Removed desktop ${name}.`);
      }),
    );
}

function registerEvents(admin: Command, ctx: CommandContext): void {
  admin
    .command('events')
    .description('the event log: who did what to which desktop, when, with what result (newest first)')
    .option('--desktop <name>', 'only events of this desktop')
    .option('--limit <n>', `at most N events (1..${EVENTS_LIMIT_MAX}; server default 100)`)
    .option('--before <id>', 'only events older than this event id (paging)')
    .action((opts: { desktop?: string; limit?: string; before?: string }, cmd: Command) =>
      runRemote(ctx, cmd, async (remote, out) => {
        const limit = parseIntOption(opts.limit, '--limit', 1, EVENTS_LIMIT_MAX);
        const before = parseIntOption(opts.before, '--before', 1, Number.MAX_SAFE_INTEGER);
        const { client } = await remote.connect();
        const events = await client.listEvents({
          ...(opts.desktop !== undefined ? { desktop: opts.desktop } : {}),
          ...(limit !== undefined ? { limit } : {}),
          ...(before !== undefined ? { before } : {}),
        });
        out.result({ events }, () =>
          events.length === 0
            ? 'No events.'
            : formatTable(
                ['id', 'at', 'actor', 'action', 'target', 'result'],
                events.map((e) => [String(e.id), shortTime(e.at), e.actor ?? '(server)', e.action, e.target ?? '', e.result]),
              ),
        );
      }),
    );
}
