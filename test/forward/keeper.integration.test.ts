/**
 * The session keeper on its own, with no listener (`src/forward/keeper.ts`): carriers in mux and basic
 * mode through the emulator at the real agent's pace, a stop and an abort while a connection waits for a
 * start, and the idle stop after the last carrier closes. Real sockets on 127.0.0.1 only between the
 * emulated agent and the destination; the carrier's Duplex is driven directly, as a front end would.
 */
import test from 'ava';
import type { Duplex } from 'node:stream';
import { startEmulator } from '../../src/emulator/index.js';
import type { Emulator } from '../../src/emulator/index.js';
import { isPfError } from '../../src/errors.js';
import { SessionKeeper } from '../../src/forward/keeper.js';
import type { Carrier } from '../../src/forward/keeper.js';
import { silentLogger } from '../../src/log.js';
import { BASIC_STREAM_BUFFER_BYTES } from '../../src/forward/basic.js';
import { startBannerServer, startEchoServer } from '../helpers/net.js';
import { emulatorSsm, forwardConfig, tuningWith, until, withTimeout } from './fixtures.js';
import type { ForwardConfig, TuningConfig } from '../../src/config/types.js';

function keeperFor(
  emulator: Emulator,
  overrides: Partial<ForwardConfig>,
  tune: TuningConfig = tuningWith(),
): SessionKeeper {
  return new SessionKeeper(forwardConfig(overrides), tune, {
    ssm: emulatorSsm(emulator),
    logger: silentLogger,
    userAgent: 'pf-daemon-test',
  });
}

/** Write `text` to the carrier's stream and resolve with exactly that many bytes read back. */
function roundTrip(stream: Duplex, text: string, what: string): Promise<string> {
  return withTimeout(
    new Promise<string>((resolve, reject) => {
      let got = '';
      const onData = (chunk: Buffer): void => {
        got += chunk.toString('latin1');
        if (got.length < text.length) return;
        stream.off('data', onData);
        stream.off('close', onClose);
        resolve(got);
      };
      const onClose = (): void => reject(new Error(`${what} closed before its echo`));
      stream.on('data', onData);
      stream.once('close', onClose);
      stream.write(text);
    }),
    20_000,
    what,
  );
}

/** Resolve once `predicate()` holds, checked every 10 ms (for counters that emit no event). */
function condition(predicate: () => boolean, ms: number, what: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return withTimeout(
    new Promise<void>((resolve) => {
      timer = setInterval(() => {
        if (!predicate()) return;
        clearInterval(timer);
        resolve();
      }, 10);
    }),
    ms,
    what,
  ).finally(() => clearInterval(timer));
}

/** Resolves when `stream` has closed. */
function closed(stream: Duplex): Promise<void> {
  return stream.destroyed && stream.closed
    ? Promise.resolve()
    : new Promise<void>((resolve) => stream.once('close', () => resolve()));
}

test.serial(
  'mux: acquire gives a stream carrier; its bytes echo; closing it releases the load',
  async (t) => {
    t.timeout(60_000);
    const echo = await startEchoServer();
    const emulator = await startEmulator();
    const keeper = keeperFor(emulator, { remotePort: echo.port });
    try {
      t.is(keeper.load, 0);
      const acquiring = keeper.acquire();
      t.is(keeper.load, 1, 'a waiting acquire counts as load');
      const carrier = await withTimeout(acquiring, 20_000, 'the carrier');
      t.is(carrier.session.mode, 'mux');
      t.regex(carrier.label, /^stream \d+$/);
      t.is(keeper.currentSessions.length, 1);
      t.deepEqual(
        keeper.stats.map((s) => [s.mode, s.connections]),
        [['mux', 1]],
      );
      const payload = 'k'.repeat(40 * 1024);
      t.is(await roundTrip(carrier.stream, payload, 'mux echo'), payload);
      t.false(carrier.takeDestinationRefusal(), 'no refusal for a reachable destination');
      // Our FIN: the agent closes the destination and ends the stream.
      const ended = new Promise<void>((resolve) => carrier.stream.once('end', resolve));
      carrier.stream.end();
      carrier.stream.resume();
      await withTimeout(ended, 10_000, "the remote's FIN");
      carrier.stream.destroy();
      await closed(carrier.stream);
      t.is(keeper.load, 0, 'the closed carrier is released');
      t.deepEqual(
        keeper.stats.map((s) => s.connections),
        [0],
      );
    } finally {
      await keeper.stop(0);
      await emulator.close();
      await echo.close();
    }
  },
);

test.serial('basic: carriers queue on the session and are served one at a time', async (t) => {
  t.timeout(60_000);
  const echo = await startEchoServer();
  const emulator = await startEmulator({ agentVersion: '3.0.196.0' });
  const keeper = keeperFor(emulator, { remotePort: echo.port }, tuningWith({ clientVersion: '1.1.69' }));
  try {
    const first = await withTimeout(keeper.acquire(), 20_000, 'the first carrier');
    const second = await withTimeout(keeper.acquire(), 20_000, 'the second carrier');
    t.is(first.session, second.session, 'one session (sessions: 1)');
    t.is(first.session.mode, 'basic');
    t.is(first.label, 'basic connection 1');
    t.is(second.label, 'basic connection 2');
    t.deepEqual(
      keeper.stats.map((s) => [s.connections, s.basic?.served, s.basic?.queued]),
      [[2, 1, 1]],
      'both carriers count on the session; the second waits in the relay',
    );
    t.is(await roundTrip(first.stream, 'first connection', 'first echo'), 'first connection');
    // The second one's bytes wait for its turn: nothing comes back while the first is active.
    let early = '';
    second.stream.on('data', (b: Buffer) => (early += b.toString()));
    second.stream.write('second connection');
    t.is(await roundTrip(first.stream, 'still first', 'first echo again'), 'still first');
    t.is(early, '', 'the queued connection got nothing while the first was served');
    // Ending the first (DisconnectToPort) ends its readable side and serves the second.
    const firstEnded = new Promise<void>((resolve) => first.stream.once('end', resolve));
    first.stream.end();
    first.stream.resume();
    await withTimeout(firstEnded, 10_000, 'the first carrier to end');
    await withTimeout(
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (early.length < 'second connection'.length) return;
          second.stream.off('data', check);
          resolve();
        };
        second.stream.on('data', check);
        check();
      }),
      20_000,
      'the second echo',
    );
    t.is(early, 'second connection');
    await closed(first.stream);
    t.deepEqual(
      keeper.stats.map((s) => [s.connections, s.basic?.served, s.basic?.queued]),
      [[1, 2, 0]],
    );
    t.is(echo.connections, 2, 'the agent dialled the destination once per connection');
  } finally {
    await keeper.stop(0);
    await emulator.close();
    await echo.close();
  }
});

test.serial(
  'basic: a reader that does not read holds the agent back (push() false refuses), then gets every byte',
  async (t) => {
    t.timeout(60_000);
    // 512 KiB the destination sends at once, numbered so a lost, doubled or reordered piece shows.
    let banner = '';
    for (let i = 0; banner.length < 512 * 1024; i++) banner += `${String(i).padStart(8, '0')}|`;
    const server = await startBannerServer(banner);
    const emulator = await startEmulator({ agentVersion: '3.0.196.0' });
    const keeper = keeperFor(emulator, { remotePort: server.port }, tuningWith({ clientVersion: '1.1.69' }));
    try {
      const carrier = await withTimeout(keeper.acquire(), 20_000, 'the carrier');
      t.is(carrier.session.mode, 'basic');
      const refused = (): number => carrier.session.stats.channel.refusedDeliveries;
      // Nobody reads: the stream's buffer fills, push() says false, the relay refuses further Output.
      await condition(() => refused() > 0, 20_000, 'a refused delivery');
      const held = carrier.stream.readableLength;
      t.true(
        held <= BASIC_STREAM_BUFFER_BYTES + 1024,
        `${held} bytes wait in the stream (bound ${BASIC_STREAM_BUFFER_BYTES} + one message)`,
      );
      // Reading again re-offers the refused message (retryDelivery): every byte arrives, in order.
      let got = '';
      carrier.stream.on('data', (b: Buffer) => (got += b.toString('latin1')));
      await condition(() => got.length >= banner.length, 40_000, 'the whole banner');
      t.is(got.length, banner.length);
      t.true(got === banner, 'the banner arrived intact');
      t.log(`${refused()} refused deliveries; ${held} bytes held while the reader paused`);
      carrier.stream.destroy();
    } finally {
      await keeper.stop(0);
      await emulator.close();
      await server.close();
    }
  },
);

test.serial(
  'stop during acquire: the waiting acquire rejects with PF_ERR_SESSION_CLOSED; no session is left',
  async (t) => {
    t.timeout(60_000);
    const emulator = await startEmulator();
    const keeper = keeperFor(emulator, { remotePort: 1 });
    try {
      // The start is in flight (StartSession sent, not answered) when the stop begins.
      const acquiring = keeper.acquire();
      acquiring.catch(() => undefined);
      t.is(keeper.load, 1, 'the waiting acquire counts as load');
      const stopping = keeper.stop(5_000);
      const err = await t.throwsAsync(withTimeout(acquiring, 2_000, 'the acquire to reject'));
      t.true(isPfError(err, 'PF_ERR_SESSION_CLOSED'), String(err));
      await withTimeout(stopping, 10_000, 'the stop');
      t.is(keeper.load, 0);
      t.is(keeper.currentSessions.length, 0);
      // StartSession's late answer is terminated at once: the emulator holds no live session.
      await until(
        emulator,
        'sessionTerminated',
        () =>
          emulator.sessions.size === 1 &&
          [...emulator.sessions.values()].every((s) => s.state === 'terminated'),
        10_000,
        'the late session to be terminated',
      );
      const late = await t.throwsAsync(keeper.acquire());
      t.true(isPfError(late, 'PF_ERR_SESSION_CLOSED'), 'a stopped keeper hands out nothing');
    } finally {
      await keeper.stop(0);
      await emulator.close();
    }
  },
);

test.serial(
  'abort signal: the aborted acquire leaves the queue; the start goes on for the others',
  async (t) => {
    t.timeout(60_000);
    const echo = await startEchoServer();
    const emulator = await startEmulator();
    const keeper = keeperFor(emulator, { remotePort: echo.port });
    try {
      const gone = new AbortController();
      const abandoned = keeper.acquire(gone.signal);
      abandoned.catch(() => undefined);
      const kept = keeper.acquire();
      t.is(keeper.load, 2);
      gone.abort();
      const err = await t.throwsAsync(withTimeout(abandoned, 2_000, 'the aborted acquire'));
      t.true(isPfError(err, 'PF_ERR_ABORTED'), String(err));
      t.is(keeper.load, 1, 'only the kept acquire waits');
      const carrier: Carrier = await withTimeout(kept, 30_000, 'the kept carrier');
      t.is(await roundTrip(carrier.stream, 'kept', 'kept echo'), 'kept');
      t.deepEqual(
        keeper.stats.map((s) => s.connections),
        [1],
        'the aborted acquire holds no carrier',
      );
      const already = new AbortController();
      already.abort();
      const refused = await t.throwsAsync(keeper.acquire(already.signal));
      t.true(isPfError(refused, 'PF_ERR_ABORTED'), 'an already aborted signal rejects at once');
      carrier.stream.destroy();
    } finally {
      await keeper.stop(0);
      await emulator.close();
      await echo.close();
    }
  },
);

test.serial(
  'idle stop: the session stops idleStopMs after its last carrier closes, not before',
  async (t) => {
    t.timeout(60_000);
    const echo = await startEchoServer();
    const emulator = await startEmulator();
    const keeper = keeperFor(emulator, { remotePort: echo.port, idleStopMs: 800 });
    try {
      const a = await withTimeout(keeper.acquire(), 20_000, 'carrier a');
      const b = await withTimeout(keeper.acquire(), 20_000, 'carrier b');
      t.is(a.session, b.session);
      const session = a.session;
      let stoppedAt = -1;
      const stopped = new Promise<string>((resolve) =>
        session.once('closed', (reason: string) => {
          stoppedAt = performance.now();
          resolve(reason);
        }),
      );
      a.stream.destroy();
      await closed(a.stream);
      const aReleasedAt = performance.now();
      // b still holds the session: it keeps carrying for twice idleStopMs after a closed.
      let trips = 0;
      while (performance.now() - aReleasedAt < 1_600) {
        t.is(await roundTrip(b.stream, `b ${trips}`, `b echo ${trips}`), `b ${trips}`);
        trips++;
      }
      t.is(stoppedAt, -1, `not stopped while a carrier is open (${trips} round trips over 1.6 s)`);
      t.is(session.state, 'open');
      const releasedAt = performance.now();
      b.stream.destroy();
      t.is(await withTimeout(stopped, 10_000, 'the idle stop'), 'idle');
      const afterMs = Math.round(stoppedAt - releasedAt);
      t.true(afterMs >= 750, `stopped ${afterMs} ms after the last carrier closed`);
      t.log(`idle stop ${afterMs} ms after the last carrier closed (idleStopMs 800)`);
      t.is(keeper.currentSessions.length, 0);
      t.is(keeper.totals.sessionsEnded, 1);
    } finally {
      await keeper.stop(0);
      await emulator.close();
      await echo.close();
    }
  },
);
