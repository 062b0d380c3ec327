/**
 * The tiny real guest built by guest/build.sh, and the grammar of what it prints on its serial console
 * (guest/README.md, "Serial grammar"). The demo and the end-to-end tests boot it to prove that data survived.
 */
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { CliError } from './errors.ts';

export interface GuestBuild {
  kernelPackage: string;
  vmlinuz: string;
  initrd: string;
  disk: string;
  /** Default kernel command line, without the workload. */
  append: string;
}

export type GuestWorkload = 'cycle' | 'stream' | 'idle';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** Where the guest build lives: ROAMDESK_GUEST_DIR, else the repository's .cache/guest/current. */
export function guestDir(): string {
  return process.env['ROAMDESK_GUEST_DIR'] ?? join(repoRoot, '.cache/guest/current');
}

export async function findGuest(): Promise<GuestBuild> {
  const file = join(guestDir(), 'guest.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new CliError('CLI_GUEST_MISSING', `the tiny guest is not built (no ${file})`, {
      hint: 'run `bash guest/build.sh` (npm start and npm test do it for you)',
    }, { cause: err });
  }
  const raw = JSON.parse(text) as Record<string, unknown>;
  const str = (k: string): string => {
    const v = raw[k];
    if (typeof v !== 'string') throw new CliError('CLI_GUEST_INVALID', `${file} lacks "${k}"`, { hint: 'run `bash guest/build.sh --force`' });
    return v;
  };
  return { kernelPackage: str('kernelPackage'), vmlinuz: str('vmlinuz'), initrd: str('initrd'), disk: str('disk'), append: str('append') };
}

/** Kernel command line for a workload; small generations keep TCG boots short. */
export function guestAppend(guest: GuestBuild, workload: GuestWorkload, opts: { genKib?: number; intervalMs?: number } = {}): string {
  const parts = [guest.append, `roamdesk.workload=${workload}`];
  if (opts.genKib !== undefined) parts.push(`roamdesk.gen_kib=${opts.genKib}`);
  if (opts.intervalMs !== undefined) parts.push(`roamdesk.interval_ms=${opts.intervalMs}`);
  return parts.join(' ');
}

export type GuestEvent =
  | { step: 'boot'; id: string; workload: string }
  | { step: 'verify'; gen: number; ok: boolean; sha256: string }
  | { step: 'verified'; count: number; ok: boolean }
  | { step: 'write'; gen: number; bytes: number; sha256: string }
  | { step: 'idle' }
  | { step: 'powerdown' }
  | { step: 'poweroff' }
  | { step: 'error'; message: string };

/** Parse every `ROAMDESK …` line of a serial log, in order; other lines are ignored. */
export function parseGuestSerial(serial: string): GuestEvent[] {
  const events: GuestEvent[] = [];
  for (const rawLine of serial.split('\n')) {
    const line = rawLine.replace(/\r$/, '');
    if (!line.startsWith('ROAMDESK ')) continue;
    const [step = '', ...rest] = line.slice('ROAMDESK '.length).split(' ');
    const kv = new Map<string, string>();
    for (const part of rest) {
      const eq = part.indexOf('=');
      if (eq > 0) kv.set(part.slice(0, eq), part.slice(eq + 1));
    }
    const num = (k: string): number => Number(kv.get(k) ?? NaN);
    switch (step) {
      case 'boot': events.push({ step, id: kv.get('id') ?? '', workload: kv.get('workload') ?? '' }); break;
      case 'verify': events.push({ step, gen: num('gen'), ok: kv.get('result') === 'ok', sha256: kv.get('sha256') ?? kv.get('got') ?? '' }); break;
      case 'verified': events.push({ step, count: num('count'), ok: kv.get('result') === 'ok' }); break;
      case 'write': events.push({ step, gen: num('gen'), bytes: num('bytes'), sha256: kv.get('sha256') ?? '' }); break;
      case 'idle': case 'powerdown': case 'poweroff': events.push({ step }); break;
      case 'error': events.push({ step, message: line.replace(/^ROAMDESK error msg=/, '') }); break;
      default: break;
    }
  }
  return events;
}

/** Summary of one boot: which generations were verified (and whether all were ok), which were written. */
export function summarizeBoot(events: readonly GuestEvent[]): { verified: number[]; allOk: boolean; written: number[]; errors: string[] } {
  const verified: number[] = [];
  const written: number[] = [];
  const errors: string[] = [];
  let allOk = true;
  for (const e of events) {
    if (e.step === 'verify') { verified.push(e.gen); if (!e.ok) allOk = false; }
    if (e.step === 'verified' && !e.ok) allOk = false;
    if (e.step === 'write') written.push(e.gen);
    if (e.step === 'error') { errors.push(e.message); allOk = false; }
  }
  return { verified, allOk, written, errors };
}
