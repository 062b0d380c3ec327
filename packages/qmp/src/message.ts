/**
 * Classifies one parsed server line into the message kinds of qmp-spec section 2: greeting (2.2),
 * success / error reply (2.4.1 / 2.4.2) or asynchronous event (2.5). Pure; no I/O.
 */
import type { QmpEvent, QmpGreeting, QmpTimestamp } from './types.ts';

export type QmpServerMessage =
  | { kind: 'greeting'; greeting: QmpGreeting }
  | { kind: 'event'; event: QmpEvent }
  | { kind: 'return'; id: unknown; hasId: boolean; value: unknown }
  | { kind: 'error'; id: unknown; hasId: boolean; errorClass: string; desc: string }
  | { kind: 'malformed'; why: string }
  | { kind: 'unknown' };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isTriple(v: unknown): boolean {
  return isObject(v) && ['major', 'minor', 'micro'].every((k) => typeof v[k] === 'number');
}

/** Returns null unless `msg` is a well-formed greeting (qmp-spec 2.2). */
export function parseGreeting(msg: unknown): QmpGreeting | null {
  if (!isObject(msg) || !isObject(msg['QMP'])) return null;
  const { version, capabilities } = msg['QMP'];
  if (!isObject(version) || !isTriple(version['qemu'])) return null;
  if (!Array.isArray(capabilities) || !capabilities.every((c) => typeof c === 'string')) return null;
  const qemu = version['qemu'] as { major: number; minor: number; micro: number };
  const pkg = version['package'];
  return {
    version: { qemu: { major: qemu.major, minor: qemu.minor, micro: qemu.micro }, package: typeof pkg === 'string' ? pkg : '' },
    capabilities: [...capabilities],
  };
}

function parseTimestamp(v: unknown): QmpTimestamp {
  // "if there is a failure to retrieve host time, both members of the timestamp will be set to -1"
  // (qmp-spec 2.5): use the same sentinel when it is missing altogether.
  if (isObject(v) && typeof v['seconds'] === 'number' && typeof v['microseconds'] === 'number') {
    return { seconds: v['seconds'], microseconds: v['microseconds'] };
  }
  return { seconds: -1, microseconds: -1 };
}

export function classifyMessage(msg: unknown): QmpServerMessage {
  if (!isObject(msg)) return { kind: 'malformed', why: 'not a JSON object' };
  if ('QMP' in msg) {
    const greeting = parseGreeting(msg);
    return greeting ? { kind: 'greeting', greeting } : { kind: 'malformed', why: 'malformed greeting' };
  }
  if ('event' in msg) {
    if (typeof msg['event'] !== 'string') return { kind: 'malformed', why: 'event name is not a string' };
    // "The data member ... is optional" (qmp-spec 2.5): normalise to {}.
    const data = isObject(msg['data']) ? msg['data'] : {};
    return { kind: 'event', event: { event: msg['event'], data, timestamp: parseTimestamp(msg['timestamp']) } };
  }
  const hasId = 'id' in msg;
  if ('return' in msg) return { kind: 'return', id: msg['id'], hasId, value: msg['return'] };
  if ('error' in msg) {
    const err = msg['error'];
    if (!isObject(err)) return { kind: 'malformed', why: 'error member is not an object' };
    const errorClass = typeof err['class'] === 'string' ? err['class'] : 'GenericError';
    const desc = typeof err['desc'] === 'string' ? err['desc'] : '';
    return { kind: 'error', id: msg['id'], hasId, errorClass, desc };
  }
  // qmp-spec 5: a client should be "liberal in what they accept"; a future message kind is ignored.
  return { kind: 'unknown' };
}
