/**
 * Sessions that are dead although their WebSocket is up must fail and be replaced, never stay `open`
 * (issue 10 items 1 and 8, spec §7.3, §8), end to end with the emulator's faithful agent:
 * - a message the agent no longer has (every copy lost, as after its 100 000-message buffer overflowed) while
 *   later ones keep arriving ⇒ the receive side sees the gap outlive the give-up ⇒ the session fails
 *   (`give-up`, `PF_ERR_RECEIVE_WEDGED`) and the next connection gets a new session;
 * - a `pause_publication` that is never lifted counts toward the give-up ⇒ the session fails
 *   (`give-up`, `PF_ERR_WINDOW_STALLED`) and is replaced.
 * On c359da3 both sessions stayed `open` for ever.
 */
import test from 'ava';
import { startEmulator } from '../../src/emulator/index.js';
import { isPfError } from '../../src/errors.js';
import type { SessionEndReason, TunnelSession } from '../../src/forward/session.js';
import { startForward, tuningWith, withTimeout } from './fixtures.js';
import { EchoPinger, StalledReader, startFloodOrEcho } from './stall.helpers.js';

const GIVE_UP_MS = 3_000;
/** Slack over the give-up for the 50 ms tick, the agent's resend scan and a loaded CI machine, ms. */
const SLACK_MS = 2_000;

function closedOf(
  session: TunnelSession,
): Promise<{ reason: SessionEndReason; error: Error | undefined; at: number }> {
  return new Promise((resolve) =>
    session.once('closed', (reason: SessionEndReason, error: Error | undefined) =>
      resolve({ reason, error, at: performance.now() }),
    ),
  );
}

test.serial(
  'a message lost for good while later ones flow: the session fails within the give-up and the next connection gets a new one',
  async (t) => {
    t.timeout(60_000);
    const destination = await startFloodOrEcho();
    // Faithful pacing and head-only resend; seq 300 (≈ 300 KiB into the download) is lost on every copy.
    const emulator = await startEmulator({
      agentPacingMs: 1,
      faults: { loseForever: [{ seq: 300, direction: 'toClient' }] },
    });
    const { forward, port } = await startForward(
      emulator,
      { remotePort: destination.port },
      tuningWith({ giveUpMs: GIVE_UP_MS }),
    );
    try {
      const sessionP = withTimeout(
        new Promise<TunnelSession>((resolve) => forward.once('session', resolve)),
        10_000,
        'a session',
      );
      let firstLossAt = 0;
      emulator.on('fault', (_id: string, direction: string, fate: string) => {
        if (direction === 'toClient' && fate === 'dropped' && firstLossAt === 0)
          firstLossAt = performance.now();
      });
      const reader = new StalledReader(port);
      reader.read();
      const session = await sessionP;
      const closed = await withTimeout(
        closedOf(session),
        GIVE_UP_MS + SLACK_MS + 10_000,
        'the wedged session to fail',
      );
      const tookMs = closed.at - firstLossAt;
      t.log(
        `wedged session failed ${tookMs.toFixed(0)} ms after the loss (give-up ${GIVE_UP_MS} ms): ${closed.error?.message}`,
      );
      t.true(firstLossAt > 0, 'the message was really lost');
      t.is(closed.reason, 'give-up');
      t.true(isPfError(closed.error, 'PF_ERR_RECEIVE_WEDGED'));
      t.true(
        tookMs >= GIVE_UP_MS - 100 && tookMs <= GIVE_UP_MS + SLACK_MS,
        `failed after ${tookMs.toFixed(0)} ms`,
      );
      t.not(session.state, 'open');
      const lost = emulator.session(session.sessionId as string).counters.droppedByFault.toClient;
      t.true(lost >= 2, `every copy of the head was lost (${lost} copies)`);
      // The local connection of the dead session does not hang either: it is reset.
      await withTimeout(
        reader.done.then(
          () => 'ended',
          () => 'reset',
        ),
        10_000,
        'the old connection to end',
      );
      // The next connection gets a new session that works.
      emulator.faults.loseForever = [];
      const pinger = new EchoPinger(port);
      await pinger.roundTrips(10, 20_000);
      await pinger.stop();
      t.deepEqual(pinger.errors, []);
      t.is(forward.stats.sessionsStarted, 2);
      t.not(forward.currentSession, session);
      t.is(forward.currentSession?.state, 'open');
    } finally {
      await forward.stop(0);
      await emulator.close();
      await destination.close();
    }
  },
);

test.serial(
  'a pause that is never lifted counts toward the give-up: the session fails and the next connection gets a new one',
  async (t) => {
    t.timeout(60_000);
    const destination = await startFloodOrEcho();
    const emulator = await startEmulator({ agentPacingMs: 1 });
    const { forward, port } = await startForward(
      emulator,
      { remotePort: destination.port },
      tuningWith({ giveUpMs: GIVE_UP_MS }),
    );
    try {
      const sessionP = withTimeout(
        new Promise<TunnelSession>((resolve) => forward.once('session', resolve)),
        10_000,
        'a session',
      );
      const pinger = new EchoPinger(port);
      const session = await sessionP;
      await pinger.roundTrips(10, 20_000);
      const closedP = closedOf(session);
      const pausedAt = performance.now();
      emulator.pauseWithoutStart(session.sessionId as string);
      const closed = await withTimeout(closedP, GIVE_UP_MS + SLACK_MS + 10_000, 'the paused session to fail');
      const tookMs = closed.at - pausedAt;
      t.log(
        `paused session failed after ${tookMs.toFixed(0)} ms (give-up ${GIVE_UP_MS} ms): ${closed.error?.message}`,
      );
      t.is(closed.reason, 'give-up');
      t.true(isPfError(closed.error, 'PF_ERR_WINDOW_STALLED'));
      t.true(
        tookMs >= GIVE_UP_MS - 100 && tookMs <= GIVE_UP_MS + SLACK_MS,
        `failed after ${tookMs.toFixed(0)} ms`,
      );
      await pinger.stop().catch(() => undefined);
      const fresh = new EchoPinger(port);
      await fresh.roundTrips(10, 20_000);
      await fresh.stop();
      t.deepEqual(fresh.errors, []);
      t.is(forward.stats.sessionsStarted, 2);
      t.is(forward.currentSession?.state, 'open');
    } finally {
      await forward.stop(0);
      await emulator.close();
      await destination.close();
    }
  },
);
