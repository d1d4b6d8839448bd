/** Shared helpers of the smux session and stream tests. */
import type { EventEmitter } from 'node:events';
import { silentLogger } from '../../src/log.js';
import { SmuxClientSession } from '../../src/mux/session.js';
import type { SmuxSessionOptions } from '../../src/mux/session.js';
import { withTimeout } from '../helpers/net.js';

export const KiB = 1024;
/** Deadline for any awaited event in these tests, ms. */
export const TIMEOUT_MS = 2000;

/** Session options used unless a test overrides them. */
export const defaults: SmuxSessionOptions = {
  streamReceiveBufferBytes: 4 * KiB * KiB,
  sessionReceiveBufferBytes: 64 * KiB * KiB,
  streamBacklogLimitBytes: 512 * KiB * KiB,
  streamWriteBufferBytes: 64 * KiB,
  maxFrameDataBytes: 32 * KiB,
  sendBudgetBytes: 4 * KiB * KiB,
};

export function newSession(options: Partial<SmuxSessionOptions> = {}): SmuxClientSession {
  return new SmuxClientSession({ ...defaults, ...options }, { logger: silentLogger });
}

/** Await an event with a deadline, so a missing event fails the test instead of hanging it. */
export function eventually<T>(promise: Promise<T>, what: string): Promise<T> {
  return withTimeout(promise, TIMEOUT_MS, what);
}

/** Resolve on the next `event`; unlike `events.once`, an 'error' event does not reject it. */
export function next(emitter: EventEmitter, event: string): Promise<unknown[]> {
  return new Promise((resolve) => emitter.once(event, (...args: unknown[]) => resolve(args)));
}

/** Let queued microtasks and ticks run (Node schedules stream callbacks there). */
export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
