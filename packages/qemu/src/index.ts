// @roamdesk/qemu: buildQemuArgs (pure), the VM runner (src/node/), and the qemu-img wrapper (src/img/).
export * from './errors.ts';
export * from './spec.ts';
export { buildQemuArgs, diskBlockdevs, WRITABLE_NODE_OPTIONS } from './args.ts';
export { hmpQemuIo } from './hmp.ts';
export { classifyPause, RESUME_MIN_FREE_BYTES, type VmPause, type VmPauseReason } from './disk-pause.ts';
export { runPaths, socketPathExcess, specInRunDir, type VmConfig, type VmPaths } from './run-paths.ts';
export { classifyExit, type ExitFacts, type VmExit, type VmExitReason } from './exit.ts';
export { detectAccel } from './node/detect-accel.ts';
export { startVm, type RunRecord, type StartVmOptions, type VmLifetime } from './node/start-vm.ts';
export { attachVm } from './node/attach-vm.ts';
export { queryPause } from './node/query-pause.ts';
export { isQemuFor, isRunning, readCmdline, readPidFile } from './node/proc.ts';
export { readTail } from './node/files.ts';
export { Vm, type PowerDownOptions, type ProcessExit, type VmProcess, type VmState, type WaitForSerialOptions } from './node/vm.ts';

// qemu-img wrapper (explicit formats, resource limits): packages/qemu/src/img/
export * from './img/index.ts';
