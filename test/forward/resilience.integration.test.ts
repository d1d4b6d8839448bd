/**
 * ResumeSession robustness end to end (spec §3.4, §7, §10.3): the data-channel WebSocket is closed with
 * 1000 "Bye", reset abruptly, or stalled (no frames, no pongs) mid-transfer; the session resumes with a fresh
 * token and StreamUrl, the same ClientId and sequence state, resends what was un-acked, and open connections
 * carry on without losing or duplicating a byte (SHA-256 per connection). When resuming is impossible the
 * session ends and its connections are reset promptly instead of hanging.
 */
import test from 'ava';
import net from 'node:net';
import { waitFor } from '../../src/emulator/index.js';
import type { TunnelSession } from '../../src/forward/session.js';
import {
  StreamingEcho,
  startForwardRig,
  startProxiedForwardRig,
  tuningWith,
  withTimeout,
} from './fixtures.js';

/** Resolve with the forward's next session. */
function nextSession(forward: NodeJS.EventEmitter): Promise<TunnelSession> {
  return withTimeout(
    new Promise<TunnelSession>((resolve) => forward.once('session', resolve)),
    10_000,
    'a session',
  );
}

/** Resolve with the ms of the session's next 'reconnected'. */
function reconnected(session: TunnelSession, ms = 10_000): Promise<number> {
  return withTimeout(
    new Promise<number>((resolve) => session.once('reconnected', resolve)),
    ms,
    'the session to reconnect',
  );
}

for (const mode of ['bye', 'abrupt'] as const) {
  test.serial(
    `WebSocket drop (${mode}) mid-transfer: resumed, same ClientId, every un-acked message resent, bytes intact`,
    async (t) => {
      const { emulator, forward, port, close } = await startForwardRig({ emulator: { agentPacingMs: 0 } });
      try {
        const sessionP = nextSession(forward);
        const transfers = Array.from(
          { length: 4 },
          () => new StreamingEcho(port, { totalBytes: 256 * 1024, windowBytes: 64 * 1024 }),
        );
        const session = await sessionP;
        const id = session.sessionId as string;
        const times: number[] = [];
        for (let drop = 0; drop < 3; drop++) {
          // Drop while data is moving: a quarter more of the echo back first.
          await withTimeout(
            Promise.all(transfers.map((e) => e.receivedAtLeast((drop + 1) * 32 * 1024))),
            20_000,
            'progress before a drop',
          );
          const resendsBefore = session.stats['channel'] as { resends: number };
          const before = resendsBefore.resends;
          const up = reconnected(session);
          // Our 'reconnected' fires once OpenDataChannel is sent; the emulator attaches the socket a moment later.
          const attached = waitFor(emulator, 'clientConnected', (sid) => sid === id, 10_000);
          emulator.dropClient(id, mode);
          times.push(
            await up.catch((err: Error) => {
              throw new Error(
                `drop ${drop}: ${err.message}; emulator state ${emulator.session(id).state}, session ${session.state}, drops ${emulator.session(id).counters.webSocketDrops}`,
              );
            }),
          );
          await attached;
          const after = (session.stats['channel'] as { resends: number }).resends;
          t.true(after >= before, 'resend counter never goes back');
        }
        const results = await withTimeout(
          Promise.all(transfers.map((e) => e.done)),
          45_000,
          'every transfer',
        );
        for (const r of results) t.is(r.receivedSha256, r.sentSha256);
        const info = emulator.session(id);
        t.is(info.counters.reconnects, 3);
        t.is(info.counters.resumes, 3, 'one ResumeSession per drop');
        t.is(new Set(info.clientIds).size, 1, 'ClientId is fixed for the session');
        t.is(new Set(info.requestIds).size, 4, 'a fresh RequestId per connect');
        t.is(session.reconnects, 3);
        t.is(forward.stats.sessionsStarted, 1, 'no new session was needed');
        t.log(`reconnect times (${mode}): ${times.join(', ')} ms; ${results.length} × 256 KiB echoed intact`);
      } finally {
        await close();
      }
    },
  );
}

test.serial(
  'a stalled WebSocket (no frames, no pongs) is detected by liveness and resumed on a new socket',
  async (t) => {
    const { forward, port, proxy, close } = await startProxiedForwardRig({
      emulator: { agentPacingMs: 0 },
      tuning: tuningWith({ pingIntervalMs: 200, livenessTimeoutMs: 1_000 }),
    });
    try {
      const sessionP = nextSession(forward);
      const transfer = new StreamingEcho(port, { totalBytes: 512 * 1024, windowBytes: 64 * 1024 });
      const session = await sessionP;
      await withTimeout(transfer.receivedAtLeast(128 * 1024), 20_000, 'progress before the stall');
      const up = reconnected(session);
      const frozenAt = performance.now();
      proxy.freeze();
      const reconnectMs = await up;
      const took = Math.round(performance.now() - frozenAt);
      t.true(took >= 1_000, `detected only after the liveness bound (${took} ms)`);
      t.true(took < 5_000, `resumed promptly after detection (${took} ms)`);
      const r = await withTimeout(transfer.done, 60_000, 'the transfer');
      t.is(r.receivedSha256, r.sentSha256);
      t.is(proxy.accepted, 2, 'a new WebSocket through the proxy');
      t.log(
        `stall: link up again ${took} ms after the freeze (liveness 1000 ms), ${reconnectMs} ms after detection`,
      );
    } finally {
      await close();
    }
  },
);

test.serial(
  'data queued while the link is down keeps its sequence numbers and goes out after the resume',
  async (t) => {
    const { forward, port, proxy, close } = await startProxiedForwardRig({
      emulator: { agentPacingMs: 0 },
      // Long enough that the client writes into a dead link for a while before it notices.
      tuning: tuningWith({ pingIntervalMs: 200, livenessTimeoutMs: 1_500 }),
    });
    try {
      const sessionP = nextSession(forward);
      const warmup = new StreamingEcho(port, { totalBytes: 64 * 1024, windowBytes: 64 * 1024 });
      const session = await sessionP;
      await withTimeout(warmup.done, 10_000, 'warm-up');
      const up = reconnected(session);
      proxy.freeze();
      // Written into the frozen link: committed with sequence numbers, then resent on the new socket.
      const during = new StreamingEcho(port, { totalBytes: 128 * 1024, windowBytes: 128 * 1024 });
      await up;
      const r = await withTimeout(during.done, 30_000, 'echo across the stall');
      t.is(r.receivedSha256, r.sentSha256);
      const channel = session.stats['channel'] as { resends: number };
      t.true(channel.resends > 0, 'un-acked messages were resent');
    } finally {
      await close();
    }
  },
);

test.serial(
  'resume budget spent: the session ends, its connections are reset (not hung), the next connection gets a new session',
  async (t) => {
    const { emulator, forward, port, close } = await startForwardRig({
      emulator: { agentPacingMs: 0 },
      tuning: tuningWith({ resumeBudgetMs: 1_500 }),
    });
    try {
      const sessionP = nextSession(forward);
      const transfer = new StreamingEcho(port, { totalBytes: 64 * 1024 * 1024, windowBytes: 256 * 1024 });
      const session = await sessionP;
      await withTimeout(transfer.receivedAtLeast(256 * 1024), 20_000, 'progress');
      // Every ResumeSession is throttled: retried with backoff until the budget runs out.
      emulator.faults.failApi('ResumeSession', 'ThrottlingException', 1_000);
      const closed = withTimeout(
        new Promise<string>((resolve) => session.once('closed', resolve)),
        10_000,
        'the session to end',
      );
      const startedAt = performance.now();
      emulator.dropClient(session.sessionId as string, 'abrupt');
      const reason = await closed;
      const took = performance.now() - startedAt;
      t.is(reason, 'give-up');
      t.true(took >= 1_400 && took < 4_000, `gave up after the budget (${Math.round(took)} ms)`);
      const err = await t.throwsAsync(withTimeout(transfer.done, 5_000, 'the reset'));
      t.regex(err?.message ?? '', /ECONNRESET|closed after/);
      t.true(transfer.socket.destroyed, 'the local connection is closed');
      emulator.faults.apiErrors = [];
      const again = new StreamingEcho(port, { totalBytes: 32 * 1024, windowBytes: 32 * 1024 });
      const r = await withTimeout(again.done, 10_000, 'a connection on a fresh session');
      t.is(r.receivedSha256, r.sentSha256);
      t.is(forward.stats.sessionsStarted, 2);
    } finally {
      await close();
    }
  },
);

test.serial(
  'ResumeSession says the session is gone: ended as resume-expired, connections closed, no TerminateSession',
  async (t) => {
    const { emulator, forward, port, close } = await startForwardRig({ emulator: { agentPacingMs: 0 } });
    try {
      const sessionP = nextSession(forward);
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => undefined);
      const session = await sessionP;
      const calls: string[] = [];
      emulator.on('apiCall', (op: string) => calls.push(op));
      emulator.faults.resumeBehavior = 'doesNotExist';
      const closed = waitFor(session, 'closed', undefined, 10_000);
      const socketClosed = withTimeout(
        new Promise<void>((resolve) => socket.once('close', () => resolve())),
        10_000,
        'the local connection to close',
      );
      emulator.dropClient(session.sessionId as string, 'bye');
      const [reason] = await closed;
      await socketClosed;
      t.is(reason, 'resume-expired');
      t.deepEqual(calls, ['ResumeSession']);
    } finally {
      await close();
    }
  },
);
