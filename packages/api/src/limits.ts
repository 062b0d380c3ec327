// Numeric limits of the contract, shared by the schemas (which enforce them) and the CLI (which explains them).

export const MEMORY_MIB_MIN = 64;
export const MEMORY_MIB_MAX = 65536;
export const CPUS_MIN = 1;
export const CPUS_MAX = 64;

/** The longest a caller may give a guest to power off before its VM is killed: one hour. */
export const STOP_TIMEOUT_MAX_SECONDS = 3600;

export const SERIAL_LOG_TAIL_DEFAULT = 64 * 1024;
export const SERIAL_LOG_TAIL_MAX = 16 * 1024 * 1024;

export const EVENTS_LIMIT_DEFAULT = 100;
export const EVENTS_LIMIT_MAX = 1000;
