/**
 * Session expiry and daemon lifecycle end to end (spec §10.1, §10.2, §10.4): the service idle timeout ends
 * a session and the next connection transparently gets a fresh one; the keep-alive option (smux NOPs)
 * defeats the idle timeout; Daemon.stop() drains then terminates; Daemon.reload() keeps unchanged forwards'
 * connections open, closes removed forwards' listeners and starts added ones.
 */
import test from 'ava';
import type { AddressInfo } from 'node:net';
import type { DaemonConfig } from '../../src/config/types.js';
import { Daemon } from '../../src/daemon.js';
import { waitFor } from '../../src/emulator/index.js';
import { silentLogger } from '../../src/log.js';
import {
  StreamingEcho,
  connectRefused,
  forwardConfig,
  startForwardRig,
  startRig,
  tuningWith,
  withTimeout,
} from './fixtures.js';

test.serial('service idle timeout ends the session; the next connection gets a fresh one', async (t) => {
  const { emulator, forward, port, close } = await startForwardRig({
    emulator: { agentPacingMs: 0, idleTimeoutMs: 600 },
  });
  try {
    const idle = waitFor(emulator, 'sessionTerminated', undefined, 5_000);
    const first = new StreamingEcho(port, { totalBytes: 1024, windowBytes: 1024 });
    t.is((await first.done).receivedSha256, (await first.done).sentSha256);
    const [, reason] = await idle;
    t.is(reason, 'idleTimeout');
    await withTimeout(
      new Promise<void>((resolve) => {
        if (forward.currentSession === undefined) resolve();
        else forward.currentSession.once('closed', () => resolve());
      }),
      5_000,
      'the daemon to see channel_closed',
    );
    const second = new StreamingEcho(port, { totalBytes: 1024, windowBytes: 1024 });
    const r = await withTimeout(second.done, 10_000, 'a connection on a fresh session');
    t.is(r.receivedSha256, r.sentSha256);
    t.is(forward.stats.sessionsStarted, 2);
  } finally {
    await close();
  }
});

test.serial('keepAlive (smux NOP every keepAliveIntervalMs) defeats the service idle timeout', async (t) => {
  const { emulator, forward, port, close } = await startForwardRig({
    emulator: { agentPacingMs: 0, idleTimeoutMs: 600 },
    forward: { keepAlive: true },
    tuning: tuningWith({ keepAliveIntervalMs: 150 }),
  });
  try {
    const first = new StreamingEcho(port, { totalBytes: 1024, windowBytes: 1024 });
    await withTimeout(first.done, 10_000, 'first echo');
    // Five idle timeouts' worth of silence from the application: the session must survive.
    await t.throwsAsync(waitFor(emulator, 'sessionTerminated', undefined, 3_000), { message: /timed out/ });
    const second = new StreamingEcho(port, { totalBytes: 1024, windowBytes: 1024 });
    const r = await withTimeout(second.done, 10_000, 'second echo');
    t.is(r.receivedSha256, r.sentSha256);
    t.is(forward.stats.sessionsStarted, 1, 'the same session carried both connections');
  } finally {
    await close();
  }
});

function daemonConfig(forwards: DaemonConfig['forwards']): DaemonConfig {
  return { forwards, log: { level: 'error', format: 'plain' }, tuning: tuningWith({ drainGraceMs: 2_000 }) };
}

test.serial(
  'reload keeps an unchanged forward’s long-lived connection open, closes a removed one, starts an added one',
  async (t) => {
    const { destination: echo, ssm, close } = await startRig({ emulator: { agentPacingMs: 0 } });
    const keep = forwardConfig({ name: 'keep', remotePort: echo.port });
    const drop = forwardConfig({ name: 'drop', remotePort: echo.port });
    const daemon = new Daemon(daemonConfig([keep, drop]), { logger: silentLogger, ssmFor: () => ssm });
    await daemon.start();
    try {
      const keepPort = (daemon.running.get('keep')?.address as AddressInfo).port;
      const dropPort = (daemon.running.get('drop')?.address as AddressInfo).port;
      const long = new StreamingEcho(keepPort, { totalBytes: 256 * 1024, windowBytes: 16 * 1024 });
      await withTimeout(long.receivedAtLeast(32 * 1024), 10_000, 'the long-lived connection to move');
      long.pauseReading();
      const added = forwardConfig({ name: 'added', remotePort: echo.port });
      await daemon.reload(daemonConfig([keep, added]));
      t.true(await connectRefused(dropPort), 'the removed forward’s listener is closed');
      const addedPort = (daemon.running.get('added')?.address as AddressInfo).port;
      const fresh = new StreamingEcho(addedPort, { totalBytes: 8 * 1024, windowBytes: 8 * 1024 });
      const f = await withTimeout(fresh.done, 10_000, 'the added forward');
      t.is(f.receivedSha256, f.sentSha256);
      long.resumeReading();
      const r = await withTimeout(long.done, 30_000, 'the long-lived connection to finish');
      t.is(r.receivedSha256, r.sentSha256, 'the connection kept working across the reload');
      t.is(daemon.running.get('keep')?.stats.sessionsStarted, 1);
    } finally {
      await daemon.stop();
      await close();
    }
  },
);

test.serial(
  'stop: stops accepting, drains open connections within the grace period, then terminates the session',
  async (t) => {
    const { destination: echo, emulator, ssm, close } = await startRig({ emulator: { agentPacingMs: 0 } });
    const daemon = new Daemon(daemonConfig([forwardConfig({ name: 'a', remotePort: echo.port })]), {
      logger: silentLogger,
      ssmFor: () => ssm,
    });
    await daemon.start();
    const port = (daemon.running.get('a')?.address as AddressInfo).port;
    try {
      const open = new StreamingEcho(port, { totalBytes: 256 * 1024, windowBytes: 16 * 1024 });
      await withTimeout(open.receivedAtLeast(16 * 1024), 10_000, 'the connection to move');
      const terminated = waitFor(emulator, 'sessionTerminated', undefined, 10_000);
      const stopped = daemon.stop();
      t.true(await connectRefused(port), 'no new connections once stopping');
      const r = await withTimeout(open.done, 10_000, 'the open connection to finish during the drain');
      t.is(r.receivedSha256, r.sentSha256);
      await withTimeout(stopped, 10_000, 'stop()');
      await terminated;
    } finally {
      await daemon.stop();
      await close();
    }
  },
);
