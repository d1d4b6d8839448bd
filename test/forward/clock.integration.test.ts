/**
 * Liveness on a monotonic clock (issue 10 item 10, spec §3.4): the wall clock of the process is stepped (as
 * NTP or a suspended VM would) by stubbing `Date.now`. A step back must not disable dead-link detection, and a
 * step forward must not declare a healthy link dead. The link is frozen with a TCP proxy (no frames, no
 * pongs), as in the resilience tests.
 */
import test from 'ava';
import type { TunnelSession } from '../../src/forward/session.js';
import { startEmulator } from '../../src/emulator/index.js';
import {
  StreamingEcho,
  emulatorSsm,
  startForward,
  startFreezableProxy,
  startPausableEcho,
  tuningWith,
  viaPort,
  withTimeout,
} from './fixtures.js';

const HOUR_MS = 3_600_000;

/** Replace `Date.now` with the real clock shifted by `offsetMs`; returns the restore function. */
function stepWallClock(offsetMs: number): () => void {
  const real = Date.now;
  Date.now = () => real.call(Date) + offsetMs;
  return () => {
    Date.now = real;
  };
}

async function setUp(pingIntervalMs: number, livenessTimeoutMs: number) {
  const echo = await startPausableEcho();
  const emulator = await startEmulator({});
  const proxy = await startFreezableProxy(emulator.port);
  const { forward, port } = await startForward(
    emulator,
    { remotePort: echo.port },
    tuningWith({ pingIntervalMs, livenessTimeoutMs }),
    { ssm: emulatorSsm(emulator, (url) => viaPort(url, proxy.port)) },
  );
  const sessionP = withTimeout(
    new Promise<TunnelSession>((resolve) => forward.once('session', resolve)),
    10_000,
    'the session',
  );
  const first = new StreamingEcho(port, { totalBytes: 16 * 1024, windowBytes: 16 * 1024 });
  const session = await sessionP;
  await withTimeout(first.done, 10_000, 'a first echo');
  const teardown = async (): Promise<void> => {
    proxy.thaw();
    await forward.stop(0);
    await proxy.close();
    await emulator.close();
    await echo.close();
  };
  return { session, port, proxy, teardown };
}

test.serial(
  'wall clock stepped back 1 h, then the link freezes: dead-link detection still fires and the session resumes',
  async (t) => {
    const { session, proxy, teardown } = await setUp(200, 1_000);
    const restore = stepWallClock(-HOUR_MS);
    try {
      const up = withTimeout(
        new Promise<number>((resolve) => session.once('reconnected', resolve)),
        8_000,
        'liveness to detect the frozen link and the session to resume',
      );
      const frozenAt = performance.now();
      proxy.freeze();
      await up;
      const took = Math.round(performance.now() - frozenAt);
      t.true(took >= 1_000, `detected only after the liveness bound (${took} ms)`);
      t.is(proxy.accepted, 2, 'a new WebSocket');
      t.log(`clock stepped back 1 h: frozen link detected and resumed ${took} ms after the freeze`);
    } finally {
      restore();
      await teardown();
    }
  },
);

test.serial('wall clock stepped forward 1 h on a healthy link: no false dead-link detection', async (t) => {
  // No ping within the test, so the liveness checks (every second) run while nothing has been heard since
  // the step; the first echo's last frames are let through by a quiet phase before the step.
  const { session, port, teardown } = await setUp(20_000, 40_000);
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  let downs = 0;
  session.on('state', (state: string) => {
    if (state === 'reconnecting') downs++;
  });
  const restore = stepWallClock(HOUR_MS);
  try {
    // A quiet phase spanning two liveness checks (the length of the scenario, not a synchronisation), then
    // echo round trips: the link must have stayed up throughout.
    await new Promise((resolve) => setTimeout(resolve, 2_200));
    const startedAt = performance.now();
    let rounds = 0;
    while (performance.now() - startedAt < 1_000) {
      const echo = new StreamingEcho(port, { totalBytes: 4 * 1024, windowBytes: 4 * 1024 });
      const r = await withTimeout(echo.done, 5_000, 'an echo round trip');
      t.is(r.receivedSha256, r.sentSha256);
      rounds++;
    }
    t.is(downs, 0, 'the link was never declared dead');
    t.is(session.reconnects, 0);
    t.log(`clock stepped forward 1 h: quiet 2.2 s, then ${rounds} echo round trips, no reconnect`);
  } finally {
    restore();
    await teardown();
  }
});
