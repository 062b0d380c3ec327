// The device agent (issue 5): registration, check-out, the local VM, replicate, check-in, rollback, quarantine.
export {
  DeviceAgent, DEFAULT_MAX_CHAIN_LENGTH, isOffline, type AgentProgress, type AgentProgressFn, type AgentStep, type CheckinResult, type CheckoutResult,
  type CheckoutStatus, type DeviceAgentOptions, type HeartbeatResult, type LocalChainFiles, type SendResult, type UserSession,
} from './agent.ts';
export { LeaseApi, type LeaseApiOptions, type OperationEnd } from './api.ts';
export { advance, CLOCK_FILE, DeviceClock, offlineElapsed, systemTime, type ClockReading, type ClockState, type TimeSource } from './clock.ts';
export { DEVICE_ERROR_CODES, DeviceError, type DeviceErrorCode } from './errors.ts';
export { checkGrant, verifyGrant, type GrantCheck } from './grant.ts';
export { DEVICE_FILE, IdentityStore, type DeviceIdentity } from './identity.ts';
export { chooseDisplay, DISK_DEVICE, localRunDir, localSerialLog, localVm, withLocalQmp, type LocalVmInfo, type LocalVmPause, type StartLocalOptions, type StopResult } from './local-vm.ts';
export { keeperPlan, runKeeper, type KeeperEvent, type KeeperExit, type KeeperOptions, type KeeperPlan, type KeeperPlanInput } from './keeper.ts';
export { keeperPid, lockDesktop, lockKeeper, SCHEDULED_REPLICATION, type Lock, type LockWait } from './lock.ts';
export { exportQuarantine, listQuarantine, QUARANTINE_DIR, quarantineDesktop, readEntry, type QuarantineEntry } from './quarantine.ts';
export { CHECKOUTS_DIR, pendingLayers, RecordStore, sealedTop, type LocalDesktop, type LocalState, type LocalVmConfig } from './records.ts';
