/**
 * Daemon lifecycle against the emulator over real sockets: one owner for every forward through reload and
 * stop (a stop during a reload drains every forward once and starts nothing), listener hand-over on
 * reload, tuning changes, the stop deadline while a session start hangs (dial or StartSession), exposure
 * warnings, reload counts, and JSON log fields.
 */
import test from 'ava';
import { mkdtempSync, readdirSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import winston from 'winston';
import type { DaemonConfig, ForwardConfig, TuningConfig } from '../src/config/types.js';
// A namespace import, so this file still loads (and its tests fail one by one) against older daemon.ts.
import * as lifecycle from '../src/daemon.js';
import { startEmulator, waitFor } from '../src/emulator/index.js';
import { createLogger } from '../src/log.js';
import type { Logger } from '../src/log.js';
import { createSsmApi } from '../src/ssm/client.js';
import type { SsmApi } from '../src/ssm/types.js';
import {
  StreamingEcho,
  connectRefused,
  credentials,
  emulatorSsm,
  forwardConfig,
  startRig,
  tuningWith,
  viaPort,
  withTimeout,
} from './forward/fixtures.js';
import { captureLog } from './helpers/log.js';
import { freePort } from './helpers/net.js';

const { Daemon, STOP_DEADLINE_SLACK_MS } = lifecycle;
type Daemon = lifecycle.Daemon;

function config(forwards: ForwardConfig[], tuning: Partial<TuningConfig> = {}): DaemonConfig {
  return {
    forwards,
    log: { level: 'debug', format: 'plain' },
    tuning: tuningWith({ drainGraceMs: 3_000, ...tuning }),
  };
}

function portOf(daemon: Daemon, name: string): number {
  const address = daemon.running.get(name)?.address;
  if (!address) throw new Error(`forward ${name} is not listening`);
  return address.port;
}

/** A TCP server that accepts and never sends a byte (a hung dial or API call). */
async function startSilentServer(): Promise<{
  port: number;
  accepted: Promise<void>;
  close(): Promise<void>;
}> {
  const sockets = new Set<net.Socket>();
  let onAccept!: () => void;
  const accepted = new Promise<void>((resolve) => (onAccept = resolve));
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    onAccept();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    accepted,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

test.serial(
  'a stop during a reload drains every forward once, starts nothing after stopping, terminates every session, empties the ledger',
  async (t) => {
    t.timeout(40_000);
    const { destination: echo, emulator, ssm, close } = await startRig({ emulator: { agentPacingMs: 0 } });
    const log = captureLog('info');
    const ledgerDir = mkdtempSync(join(tmpdir(), 'pf-ledger-'));
    const keep = forwardConfig({ name: 'keep', remotePort: echo.port, eager: true });
    const drop = forwardConfig({ name: 'drop', remotePort: echo.port });
    const daemon = new Daemon(config([keep, drop]), { logger: log.logger, ssmFor: () => ssm, ledgerDir });
    let stopBegan = false;
    let startsAfterStop = 0;
    emulator.on('apiCall', (op: string) => {
      if (stopBegan && op === 'StartSession') startsAfterStop++;
    });
    try {
      const eagerOpen = waitFor(emulator, 'handshakeComplete', undefined, 10_000);
      await daemon.start();
      await eagerOpen;
      const keepPort = portOf(daemon, 'keep');
      const dropPort = portOf(daemon, 'drop');
      const draining = new StreamingEcho(dropPort, { totalBytes: 512 * 1024, windowBytes: 16 * 1024 });
      await withTimeout(draining.receivedAtLeast(32 * 1024), 10_000, 'the draining connection to move');
      draining.pauseReading();
      const reloaded = daemon.reload(config([keep]));
      await log.waitFor('info', /draining 1 connection/, 10_000);
      stopBegan = true;
      const stopped = daemon.stop();
      // The drained connection still gets its grace: it finishes while the stop is under way.
      draining.resumeReading();
      const r = await withTimeout(draining.done, 15_000, 'the draining connection to finish');
      t.is(r.receivedSha256, r.sentSha256);
      await withTimeout(stopped, 15_000, 'stop()');
      const summary = await withTimeout(reloaded, 5_000, 'the interrupted reload');
      t.is(daemon.running.size, 0, 'nothing listens after stop');
      t.is(daemon.ownedCount, 0, 'every forward finished stopping');
      t.true(await connectRefused(keepPort));
      t.true(await connectRefused(dropPort));
      t.is(startsAfterStop, 0, 'no StartSession after "stopping"');
      const live = [...emulator.sessions.values()].filter((s) => s.state !== 'terminated');
      t.deepEqual(
        live.map((s) => s.id),
        [],
        'every session was terminated',
      );
      t.deepEqual(
        readdirSync(ledgerDir, { recursive: true }).filter((f) => String(f).endsWith('.json')),
        [],
      );
      t.is(summary?.stopped, 1, 'the reload reports the forward it removed');
    } finally {
      await daemon.stop();
      await close();
    }
  },
);

test.serial(
  'a changed forward keeps its port accepting while the old one drains (listener handed over)',
  async (t) => {
    t.timeout(40_000);
    const { destination: echo, ssm, close } = await startRig({ emulator: { agentPacingMs: 0 } });
    const log = captureLog('info');
    const port = await freePort();
    const before = forwardConfig({ name: 'db', remotePort: echo.port, localPort: port, reason: 'one' });
    const daemon = new Daemon(config([before]), { logger: log.logger, ssmFor: () => ssm });
    try {
      await daemon.start();
      const old = daemon.running.get('db');
      const long = new StreamingEcho(port, { totalBytes: 512 * 1024, windowBytes: 16 * 1024 });
      await withTimeout(long.receivedAtLeast(32 * 1024), 10_000, 'the long connection to move');
      long.pauseReading();
      const reloaded = daemon.reload(config([{ ...before, reason: 'two' }]));
      await log.waitFor('info', /draining 1 connection/, 10_000);
      t.not(daemon.running.get('db'), old, 'the changed forward was replaced');
      // During the old forward's drain, the same port serves new connections through the new forward.
      const fresh = new StreamingEcho(port, { totalBytes: 64 * 1024, windowBytes: 64 * 1024 });
      const f = await withTimeout(fresh.done, 10_000, 'a new connection during the drain');
      t.is(f.receivedSha256, f.sentSha256);
      long.resumeReading();
      const r = await withTimeout(long.done, 15_000, 'the old connection to finish');
      t.is(r.receivedSha256, r.sentSha256);
      const summary = await withTimeout(reloaded, 10_000, 'reload');
      t.like(summary, { stopped: 1, started: 1, listening: 1, failed: [] });
      t.is(daemon.running.get('db')?.stats.connectionsAccepted, 1);
    } finally {
      await daemon.stop();
      await close();
    }
  },
);

test.serial(
  'a tuning change restarts only what it affects, and the log says why when all restart',
  async (t) => {
    const emulator = await startEmulator({ agentPacingMs: 0 });
    const ssm = emulatorSsm(emulator);
    const log = captureLog('info');
    const forwards = [
      forwardConfig({ name: 'a', remotePort: 1 }),
      forwardConfig({ name: 'b', remotePort: 2 }),
    ];
    const daemon = new Daemon(config(forwards, { drainGraceMs: 2_000 }), {
      logger: log.logger,
      ssmFor: () => ssm,
    });
    try {
      await daemon.start();
      const a = daemon.running.get('a');
      const graceOnly = await daemon.reload(config(forwards, { drainGraceMs: 4_000 }));
      t.like(graceOnly, { stopped: 0, started: 0, unchanged: 2, listening: 2 });
      t.is(daemon.running.get('a'), a, 'drainGraceMs is read by stop() only: nothing restarts');
      const window = await daemon.reload(config(forwards, { drainGraceMs: 4_000, sendWindowMessages: 128 }));
      t.like(window, { stopped: 2, started: 2, unchanged: 0, listening: 2 });
      t.is(log.matching('info', /tuning\.sendWindowMessages changed: every forward restarts/).length, 1);
    } finally {
      await daemon.stop();
      await emulator.close();
    }
  },
);

/** Time Daemon.stop() takes while a session start of an eager forward hangs in `ssm`. */
async function timeStopWithHungStart(
  ssm: SsmApi,
  hung: Promise<void>,
  logger: Logger,
  graceMs: number,
): Promise<{ stopMs: number; localClosed: boolean }> {
  const forward = forwardConfig({ name: 'hung', remotePort: 1, eager: true });
  const daemon = new Daemon(config([forward], { drainGraceMs: graceMs, connectTimeoutMs: 120_000 }), {
    logger,
    ssmFor: () => ssm,
  });
  await daemon.start();
  await withTimeout(hung, 10_000, 'the session start to hang');
  // A local connection waiting for that session.
  const local = net.connect(portOf(daemon, 'hung'), '127.0.0.1');
  local.on('error', () => undefined);
  const localClosed = new Promise<boolean>((resolve) => local.once('close', () => resolve(true)));
  await new Promise<void>((resolve) => local.once('connect', () => resolve()));
  const startedAt = performance.now();
  await daemon.stop();
  const stopMs = performance.now() - startedAt;
  return { stopMs, localClosed: await withTimeout(localClosed, 5_000, 'the local connection to close') };
}

test.serial(
  'stop finishes within drainGraceMs plus the slack while the data-channel dial hangs',
  async (t) => {
    t.timeout(30_000);
    const emulator = await startEmulator({ agentPacingMs: 0 });
    const silent = await startSilentServer();
    try {
      // The StreamUrl leads to a server that accepts the TCP connection and never answers the upgrade.
      const ssm = emulatorSsm(emulator, (url) => viaPort(url, silent.port));
      const log = captureLog('info');
      const graceMs = 500;
      const { stopMs, localClosed } = await timeStopWithHungStart(ssm, silent.accepted, log.logger, graceMs);
      t.log(`stop took ${Math.round(stopMs)} ms with a hung dial (grace ${graceMs} ms)`);
      t.true(stopMs < graceMs + STOP_DEADLINE_SLACK_MS, `stop took ${stopMs} ms`);
      t.true(localClosed);
    } finally {
      await silent.close();
      await emulator.close();
    }
  },
);

test.serial('stop finishes within drainGraceMs plus the slack while StartSession hangs', async (t) => {
  t.timeout(30_000);
  const silent = await startSilentServer();
  try {
    // The API endpoint accepts the connection and never answers the request.
    const ssm = createSsmApi({
      endpoint: `http://127.0.0.1:${silent.port}`,
      region: 'us-east-1',
      credentials,
      logger: captureLog('error').logger,
      requestTimeoutMs: 120_000,
    });
    const log = captureLog('info');
    const graceMs = 500;
    const { stopMs, localClosed } = await timeStopWithHungStart(ssm, silent.accepted, log.logger, graceMs);
    t.log(`stop took ${Math.round(stopMs)} ms with a hung StartSession (grace ${graceMs} ms)`);
    t.true(stopMs < graceMs + STOP_DEADLINE_SLACK_MS, `stop took ${stopMs} ms`);
    t.true(localClosed);
  } finally {
    await silent.close();
  }
});

test.serial('a listener on a non-loopback address warns once at start and once per reload', async (t) => {
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const ssm = emulatorSsm(emulator);
  const log = captureLog('info');
  const forwards = [
    forwardConfig({ name: 'open', remotePort: 5432, bind: '0.0.0.0' }),
    forwardConfig({ name: 'local', remotePort: 22 }),
  ];
  const daemon = new Daemon(config(forwards), { logger: log.logger, ssmFor: () => ssm });
  try {
    await daemon.start();
    const exposed =
      /^port 5432 of i-0123456789abcdef0 is reachable from your network without authentication: forward open listens on 0\.0\.0\.0:\d+/;
    t.is(log.matching('warn', exposed).length, 1);
    t.is(log.matching('warn', /reachable from your network/).length, 1, 'the loopback forward does not warn');
    await daemon.reload(config(forwards));
    t.is(log.matching('warn', exposed).length, 2, 'the reload repeats the warning for what stays exposed');
  } finally {
    await daemon.stop();
    await emulator.close();
  }
});

test.serial('after a reload where one listener failed, the count says how many listen', async (t) => {
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const ssm = emulatorSsm(emulator);
  const log = captureLog('info');
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  const takenPort = (taken.address() as AddressInfo).port;
  const a = forwardConfig({ name: 'a', remotePort: 1 });
  const daemon = new Daemon(config([a]), { logger: log.logger, ssmFor: () => ssm });
  try {
    await daemon.start();
    const b = forwardConfig({ name: 'b', remotePort: 2, localPort: takenPort });
    const summary = await daemon.reload(config([a, b]));
    t.like(summary, { listening: 1, failed: ['b'], started: 0, unchanged: 1 });
    t.is(log.matching('info', /1 of 2 listening/).length, 1);
  } finally {
    await daemon.stop();
    await new Promise<void>((resolve) => taken.close(() => resolve()));
    await emulator.close();
  }
});

test.serial('JSON logs carry the forward and the session as fields', async (t) => {
  const { destination: echo, ssm, close } = await startRig({ emulator: { agentPacingMs: 0 } });
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  const logger = createLogger({
    level: 'debug',
    format: 'json',
    transports: [new winston.transports.Stream({ stream: sink })],
  });
  const daemon = new Daemon(config([forwardConfig({ name: 'db', remotePort: echo.port })]), {
    logger,
    ssmFor: () => ssm,
  });
  try {
    await daemon.start();
    const e = new StreamingEcho(portOf(daemon, 'db'), { totalBytes: 4096, windowBytes: 4096 });
    await withTimeout(e.done, 10_000, 'echo');
    const sessionId = daemon.running.get('db')?.currentSession?.sessionId;
    t.truthy(sessionId);
    const open = lines.find((l) => /open \(mux mode\)/.test(String(l['message'])));
    t.like(open, { forward: 'db', session: sessionId });
    const listening = lines.find((l) => /^listening on/.test(String(l['message'])));
    t.like(listening, { forward: 'db' });
  } finally {
    await daemon.stop();
    await close();
  }
});
