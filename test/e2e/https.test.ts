/**
 * The server over HTTPS: certificates made with openssl for a private CA, a real server in this process, and the
 * CLI as a user runs it (a child process trusting the CA through NODE_EXTRA_CA_CERTS). Checks that wrong TLS
 * files stop the start and change nothing, that a device without the CA is told what to do, that check-out
 * (piece streams read straight from the TLS socket) and check-in (pieces on an upgraded TLS connection) work
 * end to end, that the console's WebSocket upgrades over TLS, and that SIGHUP's reload serves a renewed certificate
 * and keeps the old one when the new is broken.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { copyFile, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect } from 'node:tls';

import { ConfigError, type ServerHandle } from '@roamdesk/server';
import WebSocket from 'ws';

import { BIN } from '../support/cli.ts';
import { tempDir } from '../support/guest-vm.ts';
import { ADMIN, api, boot, login, spawnServer } from '../support/server.ts';

const MiB = 1024 * 1024;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** The CLI in a child process (asynchronously: the server answers from this process). */
async function roamdesk(home: string, args: string[], opts: { ca?: string; input?: string } = {}): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, ROAMDESK_HOME: home, NO_COLOR: '1' };
  delete env['NODE_EXTRA_CA_CERTS'];
  if (opts.ca !== undefined) env['NODE_EXTRA_CA_CERTS'] = opts.ca;
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.stdin.end(opts.input ?? '');
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

function json<T>(r: Run): T {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** SHA-256 fingerprint of the certificate a TLS handshake with `port` presents (trusting `ca`). */
async function servedFingerprint(port: number, ca: Buffer): Promise<string> {
  const socket = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' });
  try {
    await once(socket, 'secureConnect');
    return socket.getPeerX509Certificate()?.fingerprint256 ?? '';
  } finally {
    socket.destroy();
  }
}

describe('the server over HTTPS', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let h: ServerHandle;
  const file = (name: string) => join(tmp.dir, name);
  const tls = () => ({ certFile: file('server.pem'), keyFile: file('server.key') });

  /** A key pair and a certificate for 127.0.0.1 and localhost signed by the test CA. */
  function issue(name: string): void {
    sh('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', `/CN=${name}`]);
    sh('openssl', ['x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', file('san.ext'), '-out', file(`${name}.pem`)]);
  }

  before(async () => {
    tmp = await tempDir('roamdesk-e2e-https-');
    sh('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2', '-subj', '/CN=Roamdesk test CA']);
    await writeFile(file('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n');
    issue('server');
    issue('renewed');
    // A disk with 12 MiB of guest data, so the check-out moves several pieces.
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', file('base.qcow2'), '128M']);
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 8M', '-c', 'write -P 0x11 64M 4M', file('base.qcow2')]);

    h = await boot(file('server-data'), { tls: tls() });
    const admin = await login(h);
    assert.equal((await api(h, 'POST', '/images', admin, { name: 'base', path: file('base.qcow2'), format: 'qcow2' })).statusCode, 201);
    assert.equal((await api(h, 'POST', '/desktops', admin, { name: 'work', image: 'base', owner: 'admin', memoryMiB: 256 })).statusCode, 201);
  });

  after(async () => {
    await h?.close();
    await tmp.remove();
  });

  it('refuses to start on TLS files it cannot use, naming the file, and creates nothing', async () => {
    await writeFile(file('garbage.pem'), 'not a certificate\n');
    const cases: Array<[{ certFile: string; keyFile: string }, string, RegExp]> = [
      [{ certFile: file('missing.pem'), keyFile: file('server.key') }, '/tls/certFile', /cannot be read \(ENOENT\)/],
      [{ certFile: file('garbage.pem'), keyFile: file('server.key') }, '/tls/certFile', /is not a PEM certificate/],
      [{ certFile: file('server.pem'), keyFile: file('garbage.pem') }, '/tls/keyFile', /is not a PEM private key/],
      [{ certFile: file('server.pem'), keyFile: file('renewed.key') }, '/tls', /does not belong to the certificate/],
    ];
    for (const [files, path, message] of cases) {
      await assert.rejects(boot(file('never'), { tls: files }), (e: unknown) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.equal(e.data.issues[0]?.path, path);
        assert.match(e.message, message);
        return true;
      });
    }
    await assert.rejects(stat(file('never')), /ENOENT/, 'no data directory was created');
  });

  it('serves HTTPS; a device without the CA is told how to trust it, and with it checks a desktop out and in', async () => {
    assert.match(h.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const home = file('home');
    const untrusted = await roamdesk(home, ['login', h.url, '--user', 'admin', '--password-stdin', '--json'], { input: `${ADMIN}\n` });
    assert.equal(untrusted.code, 1, untrusted.stderr);
    const refused = (JSON.parse(untrusted.stdout) as { error: { code: string; message: string; data: { hint: string } } }).error;
    assert.equal(refused.code, 'CLIENT_ERR_UNREACHABLE');
    assert.match(refused.message, /TLS certificate is not trusted/);
    assert.match(refused.data.hint, /NODE_EXTRA_CA_CERTS=/);

    const ca = file('ca.pem');
    json(await roamdesk(home, ['login', h.url, '--user', 'admin', '--password-stdin', '--json'], { ca, input: `${ADMIN}\n` }));
    json(await roamdesk(home, ['device', 'register', '--name', 'laptop', '--json'], { ca }));
    const co = json<{ download: { bytesTransferred: number } }>(await roamdesk(home, ['checkout', 'work', '--json'], { ca }));
    assert.ok(co.download.bytesTransferred >= 12 * MiB, `the chain came down over TLS (${co.download.bytesTransferred} bytes)`);
    const st = json<{ overlay: string; image: string }>(await roamdesk(home, ['status', 'work', '--json'], { ca }));
    const image = await readFile(st.image);
    assert.deepEqual(image, await readFile(join(file('server-data'), 'store', 'objects', (st.image.split('/').at(-1) ?? ''))), 'the image is byte-identical');

    // Local work: 6 MiB the server has never seen.
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 32M 6M', st.overlay]);
    const ci = json<{ top: string; layersSent: string[]; upload: { upgraded: boolean; bytesTransferred: number } }>(await roamdesk(home, ['checkin', 'work', '--json'], { ca }));
    assert.equal(ci.layersSent.length, 1);
    assert.equal(ci.upload.upgraded, true, 'the pieces went up on an upgraded TLS connection');
    assert.ok(ci.upload.bytesTransferred >= 6 * MiB);
    const top = join(file('server-data'), 'store', 'objects', `${ci.top}.qcow2`);
    const read = sh('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read -P 0x77 32M 6M', '-c', 'read -P 0x5a 0 8M', top]);
    assert.doesNotMatch(read, /verification failed/, 'the server holds the device\'s writes on top of the image');
  });

  it('the console\'s WebSocket upgrades over TLS too: a bad token is refused by the console route', async () => {
    const ca = await readFile(file('ca.pem'));
    const refused = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const ws = new WebSocket(`${h.url.replace(/^https/, 'wss')}/api/v1/console/ws?token=rdt_${'x'.repeat(43)}`, ['binary'], { ca });
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      ws.once('open', () => reject(new Error('a bogus console token was accepted')));
      ws.once('error', reject);
    });
    assert.equal(refused.status, 401);
    assert.match(refused.body, /AUTH_INVALID/);
  });

  it('`roamdesk server --tls-cert --tls-key` serves HTTPS and loads a renewed certificate on SIGHUP', async () => {
    const ca = await readFile(file('ca.pem'));
    await copyFile(file('server.pem'), file('cli.pem'));
    await copyFile(file('server.key'), file('cli.key'));
    const { child: server, url } = await spawnServer(
      ['--data', file('cli-data'), '--listen', '127.0.0.1:0', '--log-level', 'warn', '--tls-cert', file('cli.pem'), '--tls-key', file('cli.key')],
      { ROAMDESK_ADMIN_PASSWORD: ADMIN },
    );
    try {
      assert.match(url, /^https:/);
      const port = Number(new URL(url).port);
      assert.equal(await servedFingerprint(port, ca), new X509Certificate(await readFile(file('server.pem'))).fingerprint256);
      await copyFile(file('renewed.pem'), file('cli.pem'));
      await copyFile(file('renewed.key'), file('cli.key'));
      server.kill('SIGHUP');
      const renewed = new X509Certificate(await readFile(file('renewed.pem'))).fingerprint256;
      const deadline = Date.now() + 10_000;
      while ((await servedFingerprint(port, ca)) !== renewed) {
        assert.ok(Date.now() < deadline, 'the renewed certificate is served within 10 s of SIGHUP');
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      server.kill('SIGTERM');
      if (server.exitCode === null && server.signalCode === null) await once(server, 'exit');
    }
  });

  it('reloadTls (what SIGHUP runs) serves a renewed certificate to new connections, and keeps the old one when the new files are broken', async () => {
    const ca = await readFile(file('ca.pem'));
    const port = Number(new URL(h.url).port);
    const original = new X509Certificate(await readFile(file('server.pem'))).fingerprint256;
    const renewed = new X509Certificate(await readFile(file('renewed.pem'))).fingerprint256;
    assert.equal(await servedFingerprint(port, ca), original);

    await copyFile(file('renewed.pem'), file('server.pem'));
    await copyFile(file('renewed.key'), file('server.key'));
    const loaded = await h.reloadTls();
    assert.equal(loaded.subject, 'CN=renewed');
    assert.equal(await servedFingerprint(port, ca), renewed);

    await writeFile(file('server.key'), 'truncated by a careless renewal\n');
    await assert.rejects(h.reloadTls(), (e: unknown) => e instanceof ConfigError && e.data.issues[0]?.path === '/tls/keyFile');
    assert.equal(await servedFingerprint(port, ca), renewed, 'the certificate in use stays');
  });
});
