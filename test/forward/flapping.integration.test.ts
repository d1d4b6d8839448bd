/**
 * A flapping data channel (issue 10 item 3, spec §10.3): the service accepts the WebSocket and OpenDataChannel
 * and closes it at once (how a rejected token looks), always or letting every Nth connect work briefly. A
 * connect counts as a resume only after proof of life, and the backoff and the resume budget survive the
 * flaps, so ResumeSession is called a few times per second at first and less and less after; when the budget
 * is spent the local connections get an error; a genuine recovery later still works.
 *
 * Faithful agent (1 KiB messages 1 ms apart, head-only resend every 100 ms). The flap lasts 30 s of wall
 * time: that duration is the scenario, not a synchronisation.
 */
import test from 'ava';
import net from 'node:net';
import type { Emulator } from '../../src/emulator/index.js';
import type { TunnelSession } from '../../src/forward/session.js';
import { StreamingEcho, startForwardRig, tuningWith, withTimeout } from './fixtures.js';

const FLAP_MS = 30_000;

/** Count the ResumeSession calls the emulator serves, with their times. */
function countResumes(emulator: Emulator): { times: number[] } {
  const counter = { times: [] as number[] };
  emulator.on('apiCall', (op: string) => {
    if (op === 'ResumeSession') counter.times.push(performance.now());
  });
  return counter;
}

/** Resolves after `ms` (the length of a scenario phase, never used to wait for a condition). */
function phase(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Calls per second in consecutive windows of `windowMs` from `from`. */
function ratePerWindow(times: number[], from: number, windowMs: number, windows: number): number[] {
  const counts = new Array<number>(windows).fill(0);
  for (const at of times) {
    const index = Math.floor((at - from) / windowMs);
    if (index >= 0 && index < windows) counts[index] = (counts[index] as number) + 1;
  }
  return counts;
}

test.serial(
  'accept-then-close on every connect for 30 s: ResumeSession backs off, waiting connections get an error when the budget is spent, a later start works',
  async (t) => {
    t.timeout(90_000);
    const { emulator, forward, port, close } = await startForwardRig({
      tuning: tuningWith({ resumeBudgetMs: FLAP_MS }),
    });
    const resumes = countResumes(emulator);
    try {
      const sessionP = new Promise<TunnelSession>((resolve) => forward.once('session', resolve));
      const first = new StreamingEcho(port, { totalBytes: 64 * 1024, windowBytes: 64 * 1024 });
      const session = await withTimeout(sessionP, 10_000, 'the session');
      const r = await withTimeout(first.done, 20_000, 'a first echo');
      t.is(r.receivedSha256, r.sentSha256);
      const closed = withTimeout(
        new Promise<string>((resolve) => session.once('closed', (reason: string) => resolve(reason))),
        FLAP_MS + 15_000,
        'the session to give up',
      );
      emulator.faults.acceptThenClose = { mode: 'bye' };
      const flapAt = performance.now();
      emulator.dropClient(session.sessionId as string, 'bye');
      // A local connection made during the flap: attached to the reconnecting session, it must not hang.
      const waiting = net.connect(port, '127.0.0.1');
      const waitingError = new Promise<number>((resolve) => {
        waiting.on('error', () => undefined);
        waiting.once('close', () => resolve(performance.now()));
      });
      waiting.write(Buffer.alloc(4096, 1));
      t.is(await closed, 'give-up');
      const gaveUpAt = performance.now();
      const endedAt = await withTimeout(waitingError, 5_000, 'the waiting connection to be reset');
      const calls = resumes.times.filter((at) => at >= flapAt && at <= gaveUpAt).length;
      const perWindow = ratePerWindow(resumes.times, flapAt, 5_000, 6);
      t.log(
        `accept-then-close always: ${calls} ResumeSession calls in ${Math.round((gaveUpAt - flapAt) / 1000)} s ` +
          `(per 5 s: ${perWindow.join(', ')}); waiting connection reset ${Math.round(endedAt - flapAt)} ms after the flap began`,
      );
      t.true(calls >= 3, 'it did try to resume');
      t.true(calls <= 30, `at most one call per second on average (got ${calls})`);
      t.true((perWindow[0] as number) <= 12, 'a few calls per second at first');
      t.true(
        (perWindow[3] as number) + (perWindow[4] as number) + (perWindow[5] as number) <= 8,
        'backed off by the second half',
      );
      t.is(session.reconnects, 0, 'no accepted-then-closed connect counted as a resume');
      t.true(endedAt - flapAt <= FLAP_MS + 5_000, 'reset when the budget was spent, not hung');
      // Genuine recovery: the service accepts again; the next connection gets a fresh session.
      emulator.faults.acceptThenClose = undefined;
      const again = new StreamingEcho(port, { totalBytes: 64 * 1024, windowBytes: 64 * 1024 });
      const r2 = await withTimeout(again.done, 20_000, 'an echo on a fresh session');
      t.is(r2.receivedSha256, r2.sentSha256);
      t.is(forward.stats.sessionsStarted, 2);
    } finally {
      await close();
    }
  },
);

test.serial(
  'every 4th connect works for 1 s, for 30 s: ResumeSession bounded and backing off; a transfer across the flap completes intact once the link recovers',
  async (t) => {
    t.timeout(100_000);
    const { emulator, forward, port, close } = await startForwardRig({
      tuning: tuningWith({ resumeBudgetMs: 60_000 }),
    });
    const resumes = countResumes(emulator);
    try {
      const sessionP = new Promise<TunnelSession>((resolve) => forward.once('session', resolve));
      // An application-windowed echo that is under way when the flapping starts and must survive it.
      const transfer = new StreamingEcho(port, { totalBytes: 2 * 1024 * 1024, windowBytes: 128 * 1024 });
      const session = await withTimeout(sessionP, 10_000, 'the session');
      await withTimeout(transfer.receivedAtLeast(128 * 1024), 20_000, 'progress before the flap');
      const reconnectTimes: number[] = [];
      session.on('reconnected', (ms: number) => reconnectTimes.push(ms));
      emulator.faults.acceptThenClose = { mode: 'bye', passEvery: 4 };
      emulator.faults.dropWebSocket = { everyMs: 1_000, mode: 'bye' };
      const flapAt = performance.now();
      emulator.dropClient(session.sessionId as string, 'bye');
      await phase(FLAP_MS);
      const calls = resumes.times.filter((at) => at >= flapAt).length;
      const perWindow = ratePerWindow(resumes.times, flapAt, 5_000, 6);
      const brief = session.reconnects;
      // The link recovers for good.
      emulator.faults.acceptThenClose = undefined;
      emulator.faults.dropWebSocket = undefined;
      const r = await withTimeout(transfer.done, 45_000, 'the transfer to finish after the recovery');
      t.is(r.receivedSha256, r.sentSha256, 'every byte across 30 s of flapping, in order');
      // A drop the emulator armed on the last link before the recovery may still fire: the session must end
      // up open again on its own, not stay reconnecting.
      if (session.state !== 'open') {
        await withTimeout(
          new Promise<void>((resolve) => {
            const onState = (state: string): void => {
              if (state !== 'open') return;
              session.off('state', onState);
              resolve();
            };
            session.on('state', onState);
          }),
          15_000,
          'the session open again after the recovery',
        );
      }
      t.is(session.state, 'open');
      t.is(forward.stats.sessionsStarted, 1, 'the same session throughout');
      t.log(
        `every 4th connect for 1 s: ${calls} ResumeSession calls in 30 s (per 5 s: ${perWindow.join(', ')}), ` +
          `${brief} brief resumes; 2 MiB echoed intact after the recovery`,
      );
      t.true(brief >= 1, 'the connects that worked were used');
      t.true(calls <= 40, `bounded (got ${calls})`);
      t.true(
        (perWindow[3] as number) + (perWindow[4] as number) + (perWindow[5] as number) <
          (perWindow[0] as number) + (perWindow[1] as number) + (perWindow[2] as number) + 3,
        'not faster in the second half than in the first',
      );
    } finally {
      await close();
    }
  },
);
