/**
 * Eager forwards against the emulator: a failed first StartSession is retried with backoff without any
 * local connection, and a session the service idle-times out (no keepAlive) is not reopened at once,
 * forever: the forward falls back to lazy until the next local connection, and says so.
 */
import test from 'ava';
import { startEmulator } from '../../src/emulator/index.js';
import type { Emulator } from '../../src/emulator/index.js';
import { captureLog } from '../helpers/log.js';
import { StreamingEcho, TARGET, startForward, startPausableEcho, until, withTimeout } from './fixtures.js';

function countCalls(emulator: Emulator, op: string): { count: number } {
  const counter = { count: 0 };
  emulator.on('apiCall', (called: string) => {
    if (called === op) counter.count++;
  });
  return counter;
}

test.serial('eager: a failed first StartSession is retried with backoff until it succeeds', async (t) => {
  let connected = false;
  const emulator = await startEmulator({ agentPacingMs: 0, unknownTargets: () => !connected });
  const starts = countCalls(emulator, 'StartSession');
  const log = captureLog('info');
  const { forward } = await startForward(emulator, { remotePort: 1, eager: true }, undefined, {
    logger: log.logger,
  });
  try {
    await log.waitFor(
      'warn',
      /eager session start failed: target .* is not connected.*retrying with backoff/,
      10_000,
    );
    // The target's agent comes online; no local connection is ever made.
    connected = true;
    await until(
      forward,
      'session',
      () => forward.currentSession?.state === 'open',
      15_000,
      'the retried session',
    );
    t.true(starts.count >= 2);
    t.is(forward.stats.connectionsAccepted, 0);
    t.is(log.matching('warn', /eager session start failed/).length, 1, 'the same failure is logged once');
  } finally {
    await forward.stop(0);
    await emulator.close();
  }
});

test.serial(
  'eager without keepAlive: an idle timeout by the service falls back to lazy until the next connection',
  async (t) => {
    const echo = await startPausableEcho();
    const emulator = await startEmulator({ agentPacingMs: 0, idleTimeoutMs: 600 });
    const starts = countCalls(emulator, 'StartSession');
    const log = captureLog('info');
    const { forward, port } = await startForward(
      emulator,
      { remotePort: echo.port, eager: true, keepAlive: false },
      undefined,
      { logger: log.logger },
    );
    try {
      await log.waitFor(
        'info',
        /ended by the service while no connection was open .*next local connection/,
        10_000,
      );
      t.is(starts.count, 1, 'no new session right after the idle timeout');
      t.is(forward.currentSession, undefined);
      const e = new StreamingEcho(port, { totalBytes: 8 * 1024, windowBytes: 8 * 1024 });
      const r = await withTimeout(e.done, 10_000, 'a connection after the fallback');
      t.is(r.receivedSha256, r.sentSha256);
      t.is(starts.count, 2, 'the next connection started the next session');
      t.is(forward.config.target, TARGET);
    } finally {
      await forward.stop(0);
      await emulator.close();
      await echo.close();
    }
  },
);
