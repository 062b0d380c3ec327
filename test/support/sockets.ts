/**
 * The sockets a process holds, read from /proc (no `ss` needed): each open fd that is a socket, matched by inode
 * against the kernel's tables of inet sockets (/proc/net/tcp, tcp6, udp, udp6) and UNIX sockets (/proc/net/unix).
 */
import { readdir, readFile, readlink } from 'node:fs/promises';

export interface InetSocket {
  readonly proto: 'tcp' | 'tcp6' | 'udp' | 'udp6';
  /** hex address:port as the kernel prints it */
  readonly local: string;
  /** TCP state in hex (0A = LISTEN); UDP sockets have 07 (unconnected) */
  readonly state: string;
}

export interface UnixSocket {
  /** The bound path ('' for an unnamed socket, '@…' for an abstract one). */
  readonly path: string;
  readonly listening: boolean;
}

async function socketInodes(pid: number): Promise<Set<string>> {
  const out = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [])) {
    const m = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/fd/${fd}`).catch(() => ''));
    if (m?.[1] !== undefined) out.add(m[1]);
  }
  return out;
}

/** The sockets of `pid` (which must be in this network namespace). */
export async function socketsOf(pid: number): Promise<{ inet: InetSocket[]; unix: UnixSocket[] }> {
  const mine = await socketInodes(pid);
  const inet: InetSocket[] = [];
  for (const proto of ['tcp', 'tcp6', 'udp', 'udp6'] as const) {
    const table = await readFile(`/proc/net/${proto}`, 'utf8').catch(() => '');
    for (const line of table.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      if (f.length > 9 && mine.has(f[9]!)) inet.push({ proto, local: f[1]!, state: f[3]! });
    }
  }
  const unix: UnixSocket[] = [];
  for (const line of (await readFile('/proc/net/unix', 'utf8')).split('\n').slice(1)) {
    // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = __SO_ACCEPTCON (listening)
    const f = line.trim().split(/\s+/);
    if (f.length > 6 && mine.has(f[6]!)) unix.push({ path: f.slice(7).join(' '), listening: f[3] === '00010000' });
  }
  return { inet, unix };
}
