/**
 * KVM when it can run ordinary guests here; TCG otherwise.
 *
 * An openable /dev/kvm is not enough: some hosts expose /dev/kvm through kvm_pvm (a paravirtual KVM that runs only
 * PVM-enabled guest kernels; an ordinary kernel dies with "INTERNAL_ERROR in batch emul"). KVM counts as usable only
 * with a hardware backend (kvm_intel or kvm_amd) loaded. ROAMDESK_ACCEL=kvm|tcg overrides the detection.
 */
import { access, open } from 'node:fs/promises';

import type { Accel } from '../spec.ts';

export interface DetectAccelOptions {
  devicePath?: string;
  /** Where kernel modules show up; tests point this elsewhere. */
  sysModuleDir?: string;
  env?: Readonly<Record<string, string | undefined>>;
}

export async function detectAccel(opts: DetectAccelOptions = {}): Promise<Accel> {
  const override = (opts.env ?? process.env)['ROAMDESK_ACCEL'];
  if (override === 'kvm' || override === 'tcg') return override;
  const modules = opts.sysModuleDir ?? '/sys/module';
  const hardware = await Promise.any(['kvm_intel', 'kvm_amd'].map((m) => access(`${modules}/${m}`))).then(() => true, () => false);
  if (!hardware) return 'tcg';
  try {
    // Opening O_RDWR is exactly what QEMU will do; access() alone misses e.g. a device cgroup deny.
    const handle = await open(opts.devicePath ?? '/dev/kvm', 'r+');
    await handle.close();
    return 'kvm';
  } catch {
    return 'tcg';
  }
}
