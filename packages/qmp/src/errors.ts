/**
 * Errors raised by the QMP client. Every error carries a stable `code` (`QMP_ERR_*`) and structured
 * `data`, so callers branch on the code and never parse messages. The tree mirrors qemu.qmp's
 * `error.py`:
 *
 *   QmpError                           (base; never thrown directly)
 *   ├── QmpConnectError                QMP_ERR_CONNECT        the socket could not be opened in time
 *   ├── QmpProtocolError               (base of protocol violations by the server)
 *   │   ├── QmpGreetingError           QMP_ERR_BAD_GREETING   first message is not a QMP greeting (qmp-spec 2.2)
 *   │   ├── QmpNegotiationError        QMP_ERR_NEGOTIATION    qmp_capabilities failed (qmp-spec 4)
 *   │   ├── QmpServerParseError        QMP_ERR_SERVER_PARSE   a line is not a JSON object, or is too long
 *   │   └── QmpBadReplyError           QMP_ERR_BAD_REPLY      a reply without id, or a malformed reply
 *   ├── QmpExecuteError                QMP_ERR_EXECUTE        the server answered a command with an error (qmp-spec 2.4.2)
 *   ├── QmpDisconnectedError           QMP_ERR_DISCONNECTED   the connection ended before the reply (every pending call)
 *   └── QmpTimeoutError                QMP_ERR_TIMEOUT        no reply / greeting / event within the deadline
 *
 * A protocol error is fatal to the connection (as in qemu.qmp): the stream can no longer be trusted to
 * carry the replies we wait for, so the client disconnects and every pending call fails with a
 * QmpDisconnectedError whose `cause` is the protocol error.
 */

export type QmpErrorCode =
  | 'QMP_ERR_CONNECT'
  | 'QMP_ERR_BAD_GREETING'
  | 'QMP_ERR_NEGOTIATION'
  | 'QMP_ERR_SERVER_PARSE'
  | 'QMP_ERR_BAD_REPLY'
  | 'QMP_ERR_EXECUTE'
  | 'QMP_ERR_DISCONNECTED'
  | 'QMP_ERR_TIMEOUT';

export type QmpErrorData = Readonly<Record<string, unknown>>;

export class QmpError extends Error {
  constructor(
    readonly code: QmpErrorCode,
    message: string,
    readonly data: QmpErrorData = {},
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The UNIX socket could not be connected (missing, refused past the deadline, or another error). */
export class QmpConnectError extends QmpError {
  constructor(message: string, data: { path: string; errno?: string }, options?: ErrorOptions) {
    super('QMP_ERR_CONNECT', message, data, options);
  }
}

/** The server broke the protocol. Subclasses say how. */
export class QmpProtocolError extends QmpError {}

export class QmpGreetingError extends QmpProtocolError {
  constructor(message: string, data: { line?: string } = {}, options?: ErrorOptions) {
    super('QMP_ERR_BAD_GREETING', message, data, options);
  }
}

export class QmpNegotiationError extends QmpProtocolError {
  constructor(message: string, data: { errorClass?: string; desc?: string } = {}, options?: ErrorOptions) {
    super('QMP_ERR_NEGOTIATION', message, data, options);
  }
}

export class QmpServerParseError extends QmpProtocolError {
  constructor(message: string, data: { line: string }, options?: ErrorOptions) {
    super('QMP_ERR_SERVER_PARSE', message, data, options);
  }
}

export class QmpBadReplyError extends QmpProtocolError {
  constructor(message: string, data: { message: unknown }, options?: ErrorOptions) {
    super('QMP_ERR_BAD_REPLY', message, data, options);
  }
}

/** QEMU answered `{"error": {"class", "desc"}}` (qmp-spec 2.4.2). `desc` is for humans only. */
export class QmpExecuteError extends QmpError {
  readonly command: string;
  readonly errorClass: string;
  readonly desc: string;
  constructor(command: string, id: string, errorClass: string, desc: string) {
    super('QMP_ERR_EXECUTE', `QMP command '${command}' failed: ${errorClass}: ${desc}`, {
      command,
      id,
      errorClass,
      desc,
    });
    this.command = command;
    this.errorClass = errorClass;
    this.desc = desc;
  }
}

/** The connection is gone: a pending call can never get its reply, or a call came after the end. */
export class QmpDisconnectedError extends QmpError {
  constructor(message: string, data: { command?: string; id?: string; reason: string }, options?: ErrorOptions) {
    super('QMP_ERR_DISCONNECTED', message, data, options);
  }
}

/** A deadline passed. Only the operation that set it fails; the connection stays usable. */
export class QmpTimeoutError extends QmpError {
  constructor(message: string, data: { operation: string; timeoutMs: number; command?: string; id?: string }) {
    super('QMP_ERR_TIMEOUT', message, data);
  }
}
