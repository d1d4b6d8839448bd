/**
 * Striping under a burst (issue 12, item 2, the scaling fix): a forward with `sessions: N` that gets many
 * connections at once starts up to one session per waiting connection concurrently, instead of one start
 * that every waiting connection then piles onto. Against the emulator at the real agent's pace (1 KiB
 * messages 1 ms apart), real sockets on 127.0.0.1, StartSession counted at the emulator's API.
 */
import test from 'ava';
import { startEmulator } from '../../src/emulator/index.js';
import type { Emulator } from '../../src/emulator/index.js';
import type { Forward } from '../../src/forward/forward.js';
import type { TunnelSession } from '../../src/forward/session.js';
import { startEchoServer } from '../helpers/net.js';
import { StreamingEcho, startForward, withTimeout } from './fixtures.js';
import type { StreamingEchoResult } from './fixtures.js';

/** StartSession calls the emulator's API served (failed ones included). */
function countStartSessions(emulator: Emulator): { count: number } {
  const counter = { count: 0 };
  emulator.on('apiCall', (op: string) => {
    if (op === 'StartSession') counter.count++;
  });
  return counter;
}

/** Connections per live session, as the forward's stats tree shows them. */
function loads(forward: Forward): number[] {
  return forward.stats.sessions.map((s) => s.connections);
}

/** Connections handed to each session (by SessionId), counted from the forward's events as they happen. */
function assignments(forward: Forward): Map<string, number> {
  const counts = new Map<string, number>();
  forward.on('connectionAssigned', (session: TunnelSession) => {
    const id = session.sessionId ?? '(none)';
    counts.set(id, (counts.get(id) ?? 0) + 1);
  });
  return counts;
}

/** `count` echo transfers of `bytes` each, all opened in the same tick. */
function burst(port: number, count: number, bytes: number): StreamingEcho[] {
  return Array.from(
    { length: count },
    () => new StreamingEcho(port, { totalBytes: bytes, windowBytes: 64 * 1024, chunkBytes: 16 * 1024 }),
  );
}

function checkIntact(
  t: { is(a: unknown, b: unknown, m?: string): void },
  results: StreamingEchoResult[],
  bytes: number,
): void {
  for (const [i, r] of results.entries()) {
    t.is(r.received, bytes, `transfer ${i} complete`);
    t.is(r.receivedSha256, r.sentSha256, `transfer ${i} intact`);
  }
}

test.serial(
  '8 simultaneous connections with sessions: 8 start 8 sessions at once, one connection each',
  async (t) => {
    t.timeout(90_000);
    const echo = await startEchoServer();
    const emulator = await startEmulator();
    const starts = countStartSessions(emulator);
    const { forward, port } = await startForward(emulator, { remotePort: echo.port, sessions: 8 });
    const assigned = assignments(forward);
    const bytes = 1024 * 1024;
    const transfers = burst(port, 8, bytes);
    try {
      // Every transfer has had bytes echoed: all eight are attached to a session.
      await withTimeout(Promise.all(transfers.map((x) => x.receivedAtLeast(1))), 30_000, 'first echoes');
      t.is(starts.count, 8, 'one StartSession per waiting connection');
      t.is(forward.stats.sessionsStarted, 8);
      t.deepEqual([...assigned.values()], [1, 1, 1, 1, 1, 1, 1, 1], 'each session was given one connection');
      t.deepEqual(loads(forward), [1, 1, 1, 1, 1, 1, 1, 1], 'the stats tree shows one connection on each');
      t.is(new Set(forward.stats.sessions.map((s) => s.id)).size, 8, 'eight distinct SessionIds');
      const startedAt = performance.now();
      const results = await withTimeout(Promise.all(transfers.map((x) => x.done)), 80_000, 'the transfers');
      const seconds = (performance.now() - startedAt) / 1_000;
      checkIntact(t, results, bytes);
      t.log(
        `8 × ${bytes / 1024} KiB echoed over 8 sessions in ${seconds.toFixed(2)} s: ${((8 * bytes) / seconds / 1e6).toFixed(2)} MB/s down in total`,
      );
    } finally {
      for (const x of transfers) x.socket.destroy();
      await forward.stop(0);
      await emulator.close();
      await echo.close();
    }
  },
);

test.serial(
  'one of the concurrent starts fails: its connections go to the sessions the other starts open',
  async (t) => {
    t.timeout(90_000);
    const echo = await startEchoServer();
    const emulator = await startEmulator();
    const starts = countStartSessions(emulator);
    // The second StartSession of the burst is denied (not retryable): that start fails, the others open.
    let seen = 0;
    emulator.on('apiCall', (op: string) => {
      if (op === 'StartSession' && ++seen === 2) {
        emulator.faults.failApi('StartSession', 'AccessDeniedException', 1, 'denied for this test');
      }
    });
    const { forward, port } = await startForward(emulator, { remotePort: echo.port, sessions: 8 });
    const assigned = assignments(forward);
    const bytes = 128 * 1024;
    const transfers = burst(port, 8, bytes);
    try {
      const results = await withTimeout(Promise.all(transfers.map((x) => x.done)), 80_000, 'the transfers');
      checkIntact(t, results, bytes);
      t.is(forward.stats.connectionsFailed, 0, 'no connection failed with the denied start');
      const spread = [...assigned.values()];
      t.is(
        spread.reduce((a, b) => a + b, 0),
        8,
        'the eight connections were spread over the sessions that opened',
      );
      t.is(assigned.size, forward.stats.sessions.length, 'each opened session carried a connection');
      t.true(starts.count >= 2, `${starts.count} StartSession calls`);
      t.is(forward.stats.sessionsStarted, starts.count);
      const live = forward.stats.sessions.length;
      t.is(live, starts.count - 1, 'every start but the denied one opened a session');
      // Once a start succeeds, starts may run concurrently again: one may replace the denied one.
      t.true(live >= 1 && live <= 8, `${live} sessions`);

      t.log(`${starts.count} StartSession calls (one denied), ${live} sessions, loads ${spread.join(',')}`);
    } finally {
      for (const x of transfers) x.socket.destroy();
      await forward.stop(0);
      await emulator.close();
      await echo.close();
    }
  },
);

test.serial(
  'after a failed start, starts run one at a time: a second burst to a down target makes one call',
  async (t) => {
    t.timeout(60_000);
    const emulator = await startEmulator({ unknownTargets: () => true });
    const starts = countStartSessions(emulator);
    const { forward, port } = await startForward(emulator, { remotePort: 1, sessions: 8 });
    try {
      const first = burst(port, 8, 1024);
      const firstOutcomes = await withTimeout(
        Promise.allSettled(first.map((x) => x.done)),
        20_000,
        'the first burst to fail',
      );
      t.true(
        firstOutcomes.every((o) => o.status === 'rejected'),
        'no session: every connection fails',
      );
      const afterFirst = starts.count;
      t.true(afterFirst >= 1 && afterFirst <= 8, `${afterFirst} StartSession calls for the first burst`);
      const second = burst(port, 8, 1024);
      const secondOutcomes = await withTimeout(
        Promise.allSettled(second.map((x) => x.done)),
        20_000,
        'the second burst to fail',
      );
      t.true(secondOutcomes.every((o) => o.status === 'rejected'));
      t.is(starts.count - afterFirst, 1, 'one start for the whole second burst, not eight');
      t.is(forward.stats.connectionsFailed, 16);
      t.log(
        `StartSession calls: ${afterFirst} for the first burst, ${starts.count - afterFirst} for the second`,
      );
    } finally {
      await forward.stop(0);
      await emulator.close();
    }
  },
);
