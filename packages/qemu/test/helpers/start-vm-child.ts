/**
 * Child process for lifetime tests: starts a VM and prints {"pid": …} on stdout, then idles until
 * killed. Usage: node --import tsx start-vm-child.ts <owner|detached> <config-json> <runDir>
 */
import { startVm, type VmConfig, type VmLifetime } from '../../src/index.ts';

const [lifetime, configJson, runDir] = process.argv.slice(2);
const vm = await startVm(JSON.parse(configJson!) as VmConfig, { runDir: runDir!, lifetime: lifetime as VmLifetime });
process.stdout.write(`${JSON.stringify({ pid: vm.pid })}\n`);
setInterval(() => {}, 60_000);
