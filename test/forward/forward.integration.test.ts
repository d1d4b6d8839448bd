/**
 * End-to-end: the daemon's Forward (listener → TunnelSession → data channel) against the built-in
 * emulator over real sockets on 127.0.0.1. Checks byte integrity by SHA-256 under concurrency, in mux and
 * basic modes, the remote-host document, lazy start, idle stop and refused destinations.
 */
import test from 'ava';
import net from 'node:net';
import type { ForwardConfig, TuningConfig } from '../../src/config/types.js';
import { credentials, forwardConfig } from './fixtures.js';
import { defaultTuning } from '../../src/config/types.js';
import { startEmulator, waitFor } from '../../src/emulator/index.js';
import type { Emulator } from '../../src/emulator/index.js';
import { Forward } from '../../src/forward/forward.js';
import { silentLogger } from '../../src/log.js';
import { createSsmApi } from '../../src/ssm/client.js';
import {
  echoExchange,
  refusingPort,
  startBannerServer,
  startEchoServer,
  withTimeout,
} from '../helpers/net.js';

const tuning: TuningConfig = { ...defaultTuning };

async function startForward(
  emulator: Emulator,
  overrides: Partial<ForwardConfig>,
  tune: TuningConfig = tuning,
) {
  const forward = new Forward(forwardConfig(overrides), tune, {
    ssm: createSsmApi({
      endpoint: emulator.endpoint,
      region: 'us-east-1',
      credentials,
      logger: silentLogger,
    }),
    logger: silentLogger,
    userAgent: 'pf-daemon-test',
  });
  const address = await forward.start();
  return { forward, port: address.port };
}

test('200 concurrent connections in mux mode each echo 64 KiB intact (SHA-256)', async (t) => {
  const echo = await startEchoServer();
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const { forward, port } = await startForward(emulator, { remotePort: echo.port });
  try {
    const results = await Promise.all(
      Array.from({ length: 200 }, () => echoExchange(port, 64 * 1024, 60_000)),
    );
    for (const r of results) t.is(r.receivedSha256, r.sentSha256);
    t.is(forward.stats.sessionsStarted, 1, 'one shared session for every connection');
    t.is(forward.currentSession?.mode, 'mux');
    t.is(echo.connections, 200, 'each local connection is its own destination connection');
  } finally {
    await forward.stop(0);
    await emulator.close();
    await echo.close();
  }
});

test('basic mode (old agent): 20 sequential-by-protocol connections echo intact', async (t) => {
  const echo = await startEchoServer();
  // An agent at or below 3.0.196.0 makes the client pick basic mode; the agent decides basic from an
  // old ClientVersion, so both sides agree as they must (spec §3.3).
  const emulator = await startEmulator({ agentPacingMs: 0, agentVersion: '3.0.196.0' });
  const { forward, port } = await startForward(
    emulator,
    { remotePort: echo.port },
    { ...tuning, clientVersion: '1.1.69' },
  );
  try {
    const results = await Promise.all(
      Array.from({ length: 20 }, () => echoExchange(port, 16 * 1024, 60_000)),
    );
    for (const r of results) t.is(r.receivedSha256, r.sentSha256);
    t.is(forward.currentSession?.mode, 'basic');
    t.is(forward.stats.sessionsStarted, 1);
  } finally {
    await forward.stop(0);
    await emulator.close();
    await echo.close();
  }
});

test('remote-host document dials host:port from the agent', async (t) => {
  const echo = await startEchoServer();
  const emulator = await startEmulator({ agentPacingMs: 0, hostMap: { 'db.internal': '127.0.0.1' } });
  const { forward, port } = await startForward(emulator, { remotePort: echo.port, host: 'db.internal' });
  try {
    const r = await echoExchange(port, 10_000);
    t.is(r.receivedSha256, r.sentSha256);
    const info = [...emulator.sessions.values()][0];
    t.is(info?.document, 'AWS-StartPortForwardingSessionToRemoteHost');
    t.deepEqual(info?.parameters['host'], ['db.internal']);
  } finally {
    await forward.stop(0);
    await emulator.close();
    await echo.close();
  }
});

test('session starts lazily on the first connection, not at listen', async (t) => {
  const echo = await startEchoServer();
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const { forward, port } = await startForward(emulator, { remotePort: echo.port });
  try {
    t.is(emulator.sessions.size, 0, 'no StartSession before a connection');
    const r = await echoExchange(port, 100);
    t.is(r.receivedSha256, r.sentSha256);
    t.is(emulator.sessions.size, 1);
  } finally {
    await forward.stop(0);
    await emulator.close();
    await echo.close();
  }
});

test('idle stop terminates the session after the last connection, and the next connection starts a new one', async (t) => {
  const echo = await startEchoServer();
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const { forward, port } = await startForward(emulator, { remotePort: echo.port, idleStopMs: 200 });
  try {
    const terminated = waitFor(emulator, 'sessionTerminated', undefined, 10_000);
    await echoExchange(port, 100);
    await terminated;
    t.is(forward.currentSession, undefined);
    await echoExchange(port, 100);
    t.is(emulator.sessions.size, 2);
    t.is(forward.stats.sessionsStarted, 2);
  } finally {
    await forward.stop(0);
    await emulator.close();
    await echo.close();
  }
});

test('a refused destination closes only that connection; others go on', async (t) => {
  const echo = await startEchoServer();
  const emulator = await startEmulator({ agentPacingMs: 0 });
  // Stream ids are 3, 5, 7…: the second connection's dial fails at the agent.
  emulator.faults.agent.dialFailStreamIds = [5];
  const { forward, port } = await startForward(emulator, { remotePort: echo.port });
  try {
    const first = await echoExchange(port, 1000);
    t.is(first.receivedSha256, first.sentSha256);
    const closed = await withTimeout(
      new Promise<number>((resolve, reject) => {
        const socket = net.connect(port, '127.0.0.1');
        let got = 0;
        socket.on('data', (c: Buffer) => (got += c.length));
        socket.on('error', reject);
        socket.on('connect', () => socket.write('hello'));
        socket.on('close', () => resolve(got));
      }),
      10_000,
      'refused connection to close',
    );
    t.is(closed, 0);
    const after = await echoExchange(port, 1000);
    t.is(after.receivedSha256, after.sentSha256);
    t.is(forward.stats.sessionsStarted, 1, 'the session survives a refused stream');
    t.is(forward.stats.connectionsFailed, 1, 'the refusal is paired with the failed connection');
  } finally {
    await forward.stop(0);
    await emulator.close();
    await echo.close();
  }
});

test('server-speaks-first destinations work in mux mode', async (t) => {
  const banner = await startBannerServer('SSH-2.0-test\r\n');
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const { forward, port } = await startForward(emulator, { remotePort: banner.port });
  try {
    for (let i = 0; i < 3; i++) {
      const text = await withTimeout(
        new Promise<string>((resolve, reject) => {
          const socket = net.connect(port, '127.0.0.1');
          socket.on('error', reject);
          socket.once('data', (c: Buffer) => {
            socket.destroy();
            resolve(c.toString());
          });
        }),
        10_000,
        'banner',
      );
      t.is(text, 'SSH-2.0-test\r\n');
    }
  } finally {
    await forward.stop(0);
    await emulator.close();
    await banner.close();
  }
});

test('a StartSession error closes the local connection and is reported', async (t) => {
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const port0 = await refusingPort();
  const { forward, port } = await startForward(emulator, {
    remotePort: port0,
    target: 'i-0fffffffffffffff0',
  });
  emulator.faults.apiErrors.push({ op: 'StartSession', code: 'TargetNotConnected', count: 1 });
  try {
    await withTimeout(
      new Promise<void>((resolve) => {
        const socket = net.connect(port, '127.0.0.1');
        socket.on('error', () => resolve());
        socket.on('close', () => resolve());
      }),
      10_000,
      'connection to close',
    );
    t.is(forward.stats.connectionsFailed, 1);
  } finally {
    await forward.stop(0);
    await emulator.close();
  }
});
