/**
 * Striping (issue 12, item 2): a forward with `sessions: N` spreads its local connections across up to N
 * SSM sessions. Against the emulator at the real agent's pace (1 KiB messages 1 ms apart), real sockets on
 * 127.0.0.1: distribution, lazy growth, independent failure of one session, basic mode (one connection per
 * session at a time) and the validation of `sessions` in the config and on the command line.
 */
import test from 'ava';
import net from 'node:net';
import { main } from '../../src/cli.js';
import type { MainIo } from '../../src/cli.js';
import { verifyConfig } from '../../src/config/verify.js';
import { startEmulator } from '../../src/emulator/index.js';
import type { Emulator } from '../../src/emulator/index.js';
import type { Forward } from '../../src/forward/forward.js';
import { silentLogger } from '../../src/log.js';
import { startEchoServer } from '../helpers/net.js';
import { StreamingEcho, TARGET, startForward, tuningWith, until, withTimeout } from './fixtures.js';

/** Sessions the emulator holds that have not ended. */
function liveAtEmulator(emulator: Emulator): number {
  let live = 0;
  for (const session of emulator.sessions.values()) if (session.state !== 'terminated') live++;
  return live;
}

/** Connections per session id as the forward's stats tree shows them. */
function loads(forward: Forward): Map<string, number> {
  const map = new Map<string, number>();
  for (const session of forward.stats.sessions) map.set(session.id ?? '(none)', session.connections);
  return map;
}

/** An open connection that has done one echo round trip (so it is attached to a session). */
interface OpenConnection {
  socket: net.Socket;
  /** Send `text` and resolve with the echo of exactly that many bytes. */
  roundTrip(text: string): Promise<string>;
  /** Resolves when the socket has closed; `hadError` true for a reset. */
  closed: Promise<boolean>;
}

async function openConnection(port: number, what: string): Promise<OpenConnection> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  const closed = new Promise<boolean>((resolve) => socket.once('close', resolve));
  let pending = '';
  const roundTrip = (text: string): Promise<string> =>
    withTimeout(
      new Promise<string>((resolve, reject) => {
        const onData = (chunk: Buffer): void => {
          pending += chunk.toString('latin1');
          if (pending.length < text.length) return;
          socket.off('data', onData);
          socket.off('close', onClose);
          const got = pending;
          pending = '';
          resolve(got);
        };
        const onClose = (): void => reject(new Error(`${what} closed before its echo`));
        socket.on('data', onData);
        socket.once('close', onClose);
        socket.write(text);
      }),
      20_000,
      `${what} echo`,
    );
  await withTimeout(new Promise<void>((resolve) => socket.once('connect', resolve)), 5_000, what);
  const connection = { socket, roundTrip, closed };
  const echoed = await roundTrip(`hello from ${what}`);
  if (echoed !== `hello from ${what}`) throw new Error(`${what}: wrong echo ${echoed}`);
  return connection;
}

test.serial('N=3, six connections one after another: three sessions with two connections each', async (t) => {
  t.timeout(60_000);
  const echo = await startEchoServer();
  const emulator = await startEmulator();
  const { forward, port } = await startForward(emulator, { remotePort: echo.port, sessions: 3 });
  const connections: OpenConnection[] = [];
  try {
    for (let i = 0; i < 6; i++) connections.push(await openConnection(port, `connection ${i}`));
    t.is(liveAtEmulator(emulator), 3, 'the emulator holds three sessions');
    t.is(forward.stats.sessionsStarted, 3);
    t.is(forward.stats.sessions.length, 3, 'the stats tree lists every session');
    t.deepEqual([...loads(forward).values()], [2, 2, 2], 'two connections on each session');
    t.is(new Set(forward.stats.sessions.map((s) => s.id)).size, 3, 'three distinct SessionIds');
    // Every connection still carries data, all at once, byte for byte.
    const payload = 'x'.repeat(16 * 1024);
    const echoes = await Promise.all(connections.map((c) => c.roundTrip(payload)));
    for (const got of echoes) t.is(got, payload);
    t.is(echo.connections, 6, 'the agents dialled the destination once per connection');
  } finally {
    for (const c of connections) c.socket.destroy();
    await forward.stop(0);
    await emulator.close();
    await echo.close();
  }
});

test.serial(
  'lazy growth: one connection is one session; a second concurrent one starts the second',
  async (t) => {
    t.timeout(60_000);
    const echo = await startEchoServer();
    const emulator = await startEmulator();
    const { forward, port } = await startForward(emulator, { remotePort: echo.port, sessions: 4 });
    const open: OpenConnection[] = [];
    try {
      t.is(emulator.sessions.size, 0, 'nothing starts before a connection');
      // Connections one at a time (each closed before the next) reuse the one session.
      for (let i = 0; i < 3; i++) {
        const c = await openConnection(port, `sequential ${i}`);
        t.is(await c.roundTrip('again'), 'again');
        c.socket.end();
        await withTimeout(c.closed, 5_000, 'close');
        await until(
          forward,
          'connectionClosed',
          () => forward.connectionCount === 0,
          5_000,
          'closed at forward',
        );
      }
      t.is(emulator.sessions.size, 1, 'sequential connections share one session');
      open.push(await openConnection(port, 'first'));
      t.is(emulator.sessions.size, 1, 'one open connection: still one session');
      open.push(await openConnection(port, 'second'));
      t.is(emulator.sessions.size, 2, 'a second concurrent connection starts a second session');
      t.deepEqual([...loads(forward).values()], [1, 1]);
      t.is(forward.stats.sessionsStarted, 2);
    } finally {
      for (const c of open) c.socket.destroy();
      await forward.stop(0);
      await emulator.close();
      await echo.close();
    }
  },
);

test.serial(
  'one session terminated: its connections reset, the others finish intact, new connections go to the healthy one',
  async (t) => {
    t.timeout(90_000);
    const echo = await startEchoServer();
    const emulator = await startEmulator();
    const { forward, port } = await startForward(emulator, { remotePort: echo.port, sessions: 2 });
    const transfers: { echo: StreamingEcho; session: string }[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const before = loads(forward);
        const transfer = new StreamingEcho(port, { totalBytes: 2 * 1024 * 1024, windowBytes: 64 * 1024 });
        await withTimeout(transfer.receivedAtLeast(1), 20_000, `transfer ${i} first bytes`);
        const after = loads(forward);
        const session = [...after.keys()].find((id) => (after.get(id) ?? 0) > (before.get(id) ?? 0));
        t.truthy(session, `transfer ${i} is counted on a session`);
        transfers.push({ echo: transfer, session: session as string });
      }
      const ids = [...new Set(transfers.map((x) => x.session))];
      t.is(ids.length, 2, 'the four transfers ride two sessions');
      const [victim, healthy] = ids as [string, string];
      t.is(transfers.filter((x) => x.session === victim).length, 2);
      const victimSession = forward.currentSessions.find((s) => s.sessionId === victim);
      const closed = new Promise<string>((resolve) => victimSession?.once('closed', resolve));
      emulator.terminateSession(victim);
      t.is(await withTimeout(closed, 10_000, 'the terminated session to close'), 'channel-closed');
      for (const x of transfers) {
        if (x.session === victim) {
          await t.throwsAsync(withTimeout(x.echo.done, 10_000, 'the victim transfer to fail'));
        } else {
          const result = await withTimeout(x.echo.done, 60_000, 'a healthy transfer');
          t.is(result.received, 2 * 1024 * 1024);
          t.is(result.receivedSha256, result.sentSha256, 'the healthy transfer is intact');
        }
      }
      t.deepEqual(
        forward.stats.sessions.map((s) => s.id),
        [healthy],
        'only the healthy session is left',
      );
      await until(forward, 'connectionClosed', () => forward.connectionCount === 0, 10_000, 'all closed');
      // A new connection goes to the healthy session (it carries none now), no new start.
      const next = await openConnection(port, 'after the loss');
      t.deepEqual([...loads(forward)], [[healthy, 1]]);
      t.is(forward.stats.sessionsStarted, 2, 'no session was started for it');
      next.socket.destroy();
    } finally {
      for (const x of transfers) x.echo.socket.destroy();
      await forward.stop(0);
      await emulator.close();
      await echo.close();
    }
  },
);

test.serial('basic mode (old agent): N=3 sessions serve three connections at once', async (t) => {
  t.timeout(60_000);
  const echo = await startEchoServer();
  const emulator = await startEmulator({ agentVersion: '3.0.196.0' });
  const { forward, port } = await startForward(
    emulator,
    { remotePort: echo.port, sessions: 3 },
    tuningWith({ clientVersion: '1.1.69' }),
  );
  const open: OpenConnection[] = [];
  try {
    // Each round trip completes while the earlier connections are still open: a basic session carries one
    // connection at a time, so this needs three sessions.
    for (let i = 0; i < 3; i++) open.push(await openConnection(port, `basic ${i}`));
    t.true(
      forward.currentSessions.every((s) => s.mode === 'basic'),
      'every session is in basic mode',
    );
    t.is(liveAtEmulator(emulator), 3);
    t.deepEqual([...loads(forward).values()], [1, 1, 1]);
    const echoes = await Promise.all(open.map((c, i) => c.roundTrip(`still here ${i}`)));
    t.deepEqual(echoes, ['still here 0', 'still here 1', 'still here 2']);
    // A fourth waits behind one of them (no fourth session) and is served once that one closes.
    const fourth = net.connect(port, '127.0.0.1');
    fourth.on('error', () => undefined);
    const fourthEcho = new Promise<string>((resolve) =>
      fourth.once('data', (b: Buffer) => resolve(b.toString())),
    );
    fourth.write('fourth');
    await until(
      forward,
      'connectionAssigned',
      () => forward.stats.sessions.some((s) => s.connections === 2),
      5_000,
      'assigned',
    );
    t.is(forward.stats.sessionsStarted, 3, 'no fourth session');
    const queuedOn = forward.stats.sessions.findIndex((s) => s.connections === 2);
    t.true(queuedOn >= 0, 'the fourth is queued on one session');
    (open[queuedOn] as OpenConnection).socket.end();
    t.is(await withTimeout(fourthEcho, 20_000, 'the fourth echo'), 'fourth');
    fourth.destroy();
  } finally {
    for (const c of open) c.socket.destroy();
    await forward.stop(0);
    await emulator.close();
    await echo.close();
  }
});

test.serial('idle stop per session: a session without connections stops, the busy one stays', async (t) => {
  t.timeout(60_000);
  const echo = await startEchoServer();
  const emulator = await startEmulator();
  const { forward, port } = await startForward(emulator, {
    remotePort: echo.port,
    sessions: 2,
    idleStopMs: 1_000,
  });
  const open: OpenConnection[] = [];
  try {
    open.push(await openConnection(port, 'busy'));
    open.push(await openConnection(port, 'leaving'));
    const [busy, leaving] = forward.currentSessions;
    t.truthy(leaving, 'two sessions');
    const stopped = new Promise<string>((resolve) => leaving?.once('closed', resolve));
    const startedAt = performance.now();
    (open[1] as OpenConnection).socket.end();
    t.is(await withTimeout(stopped, 10_000, 'the idle session to stop'), 'idle');
    const afterMs = Math.round(performance.now() - startedAt);
    t.true(afterMs >= 900, `stopped ${afterMs} ms after its last connection closed`);
    t.log(`the idle session stopped ${afterMs} ms after its last connection closed (idleStopMs 1000)`);
    t.deepEqual(
      forward.currentSessions.map((s) => s.sessionId),
      [busy?.sessionId],
      'the busy session stays',
    );
    t.is(busy?.state, 'open');
    t.is(await (open[0] as OpenConnection).roundTrip('still busy'), 'still busy');
  } finally {
    for (const c of open) c.socket.destroy();
    await forward.stop(0);
    await emulator.close();
    await echo.close();
  }
});

test('config: sessions must be an integer 1-16; the default is 1', (t) => {
  const base = { target: TARGET, remotePort: 5432 };
  t.is(verifyConfig({ forwards: [base] }).forwards[0]?.sessions, 1);
  t.is(verifyConfig({ forwards: [{ ...base, sessions: 16 }] }).forwards[0]?.sessions, 16);
  t.is(verifyConfig({ defaults: { sessions: 4 }, forwards: [base] }).forwards[0]?.sessions, 4);
  for (const bad of [0, 17, 'x', 2.5]) {
    const err = t.throws(() => verifyConfig({ forwards: [{ ...base, sessions: bad }] }));
    t.regex(err?.message ?? '', /forwards\[0\]\.sessions.* must be an integer 1-16/);
    t.is((err as { code?: string } | undefined)?.code, 'PF_ERR_CONFIG');
  }
});

/** Run main() with captured output. */
async function cli(argv: string[]): Promise<{ exit: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: MainIo = {
    stdout: { write: (text: string) => (out += text) },
    stderr: { write: (text: string) => (err += text) },
    env: { HOME: '/nonexistent-pf-home' },
    logger: silentLogger,
  };
  const exit = await main(argv, io);
  return { exit, out, err };
}

test('flag: --sessions N sets defaults.sessions; 0, 17 and x are refused with one clear line', async (t) => {
  const ok = await cli(['check-config', '--target', TARGET, '--port', '5432', '--sessions', '4']);
  t.is(ok.exit, 0, ok.err);
  t.true(ok.out.includes('striped across up to 4 sessions'), ok.out);
  for (const [value, message] of [
    ['0', /defaults\.sessions: must be an integer 1-16.*from --sessions/],
    ['17', /defaults\.sessions: must be an integer 1-16.*from --sessions/],
    ['x', /--sessions must be a number, e\.g\. --sessions 4/],
  ] as const) {
    const bad = await cli(['--target', TARGET, '--port', '5432', '--sessions', value]);
    t.is(bad.exit, 2, `--sessions ${value}`);
    t.is(bad.err.split('\n').length, 2, bad.err);
    t.regex(bad.err, message);
  }
});
