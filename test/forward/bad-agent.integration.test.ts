/**
 * A misbehaving agent (issue 10 items 2 and 9) against a real Forward over the emulator, with the agent's
 * faithful pacing (1 KiB Output messages 1 ms apart): a malformed Flag is dropped and counted while the
 * download goes on; a HandshakeComplete that is not JSON fails that session only; a second
 * HandshakeRequest/Complete after open is dropped and the open stream carries on. The process survives
 * each (on the old code each one threw out of the `ws` handler and ended the test process), and so does a
 * bug inside session code reached from the network: it fails that session with a typed error.
 */
import test from 'ava';
import { PayloadType } from '../../src/datachannel/constants.js';
import {
  encodeHandshakeComplete,
  encodeHandshakeRequest,
  sessionTypeAction,
} from '../../src/datachannel/payloads.js';
import type { Logger, LogMeta } from '../../src/log.js';
import { isPfError } from '../../src/errors.js';
import { TunnelSession } from '../../src/forward/session.js';
import {
  StreamingEcho,
  forwardConfig,
  startForwardRig,
  startRig,
  tuningWith,
  until,
  withTimeout,
} from './fixtures.js';
import net from 'node:net';

/** Records every log line (text and level); children share the record. */
class RecordingLogger implements Logger {
  constructor(readonly lines: { level: string; text: string }[] = []) {}
  readonly debugEnabled = false;
  error(m: string, _meta?: LogMeta): void {
    this.lines.push({ level: 'error', text: m });
  }
  warn(m: string, _meta?: LogMeta): void {
    this.lines.push({ level: 'warn', text: m });
  }
  info(m: string, _meta?: LogMeta): void {
    this.lines.push({ level: 'info', text: m });
  }
  debug(): void {
    // Not recorded: the tests are about what an operator sees.
  }
  child(): Logger {
    return this;
  }
  count(level: string, pattern: RegExp): number {
    return this.lines.filter((l) => l.level === level && pattern.test(l.text)).length;
  }
}

test.serial(
  'malformed Flags from the agent are dropped and counted; the download completes intact',
  async (t) => {
    t.timeout(60_000);
    const logger = new RecordingLogger();
    const { emulator, forward, port, close } = await startForwardRig({ deps: { logger } });
    // Three bad Flags of 3, 5 and 0 bytes in the middle of a 2 MiB echo.
    emulator.faults.agent.injectMessages = [
      { afterOutputs: 200, payloadType: PayloadType.Flag, payload: Buffer.from([0, 0, 3]) },
      { afterOutputs: 600, payloadType: PayloadType.Flag, payload: Buffer.from([0, 0, 0, 3, 0]) },
      { afterOutputs: 1000, payloadType: PayloadType.Flag, payload: Buffer.alloc(0) },
    ];
    try {
      const client = new StreamingEcho(port, { totalBytes: 2 * 1024 * 1024, windowBytes: 256 * 1024 });
      const result = await withTimeout(client.done, 40_000, '2 MiB echo');
      t.is(result.receivedSha256, result.sentSha256);
      const session = forward.currentSession;
      const input = session?.stats['input'] as { malformedFlags: number };
      t.is(input.malformedFlags, 3, 'each malformed Flag counted');
      t.is(session?.state, 'open', 'the session carries on');
      t.is(forward.stats.sessionsStarted, 1);
      t.is(logger.count('warn', /malformed Flag/), 1, 'logged once, not once per message');
    } finally {
      await close();
    }
  },
);

test.serial(
  'a HandshakeComplete that is not JSON fails that session only; the forward serves the next one',
  async (t) => {
    t.timeout(60_000);
    const logger = new RecordingLogger();
    const { emulator, forward, port, close } = await startForwardRig({ deps: { logger } });
    emulator.faults.agent.handshakeCompletePayload = Buffer.from('{"HandshakeTimeToComplete": nope');
    try {
      const closed = await withTimeout(
        new Promise<boolean>((resolve) => {
          const socket = net.connect(port, '127.0.0.1');
          socket.on('error', () => undefined);
          socket.on('close', () => resolve(true));
        }),
        20_000,
        'the local connection to be closed',
      );
      t.true(closed);
      t.is(forward.stats.connectionsFailed, 1);
      t.true(
        logger.lines.some(
          (l) => l.level === 'error' && /malformed HandshakeComplete.*\[PF_ERR_HANDSHAKE\]/.test(l.text),
        ),
        'the failure names the malformed HandshakeComplete and its code',
      );
      const first = [...emulator.sessions.values()][0];
      await until(
        emulator,
        'sessionTerminated',
        () => first?.state === 'terminated',
        10_000,
        'TerminateSession',
      );
      // The agent behaves again: the next connection gets a new session and works.
      delete emulator.faults.agent.handshakeCompletePayload;
      const client = new StreamingEcho(port, { totalBytes: 64 * 1024, windowBytes: 64 * 1024 });
      const result = await withTimeout(client.done, 30_000, 'echo on the next session');
      t.is(result.receivedSha256, result.sentSha256);
      t.is(forward.stats.sessionsStarted, 2);
    } finally {
      await close();
    }
  },
);

test.serial(
  'a second HandshakeRequest and HandshakeComplete after open are dropped; the open stream carries on',
  async (t) => {
    t.timeout(60_000);
    const logger = new RecordingLogger();
    const {
      destination: echo,
      emulator,
      forward,
      port,
      close,
    } = await startForwardRig({ tuning: tuningWith({ handshakeTimeoutMs: 1000 }), deps: { logger } });
    const request = encodeHandshakeRequest({
      agentVersion: '3.3.987.0',
      requestedClientActions: [
        sessionTypeAction({
          sessionType: 'Port',
          properties: { portNumber: String(echo.port), type: 'LocalPortForwarding', localPortNumber: '0' },
        }),
      ],
    });
    // The request early, the complete well after the (shortened) handshake timeout: the old code re-armed
    // that timer on the second request and failed the session, or replaced the smux session on the complete.
    emulator.faults.agent.injectMessages = [
      { afterOutputs: 100, payloadType: PayloadType.HandshakeRequest, payload: request },
      {
        afterOutputs: 2500,
        payloadType: PayloadType.HandshakeComplete,
        payload: encodeHandshakeComplete({ handshakeTimeToComplete: 1, customerMessage: 'again' }),
      },
    ];
    try {
      const client = new StreamingEcho(port, { totalBytes: 3 * 1024 * 1024, windowBytes: 256 * 1024 });
      const result = await withTimeout(client.done, 40_000, '3 MiB echo across the second handshake');
      t.is(result.receivedSha256, result.sentSha256);
      const session = forward.currentSession;
      t.is((session?.stats['input'] as { lateHandshakes: number }).lateHandshakes, 2);
      t.is(session?.state, 'open');
      t.is(forward.stats.sessionsStarted, 1);
      t.is(logger.count('info', /agent message: again/), 0, 'the second HandshakeComplete was not acted on');
    } finally {
      await close();
    }
  },
);

test.serial(
  'an exception inside session code fails that session with PF_ERR_SESSION_INTERNAL, never the process',
  async (t) => {
    t.timeout(30_000);
    const { destination: echo, emulator, ssm, close } = await startRig();
    emulator.faults.agent.handshakeCompletePayload = encodeHandshakeComplete({
      handshakeTimeToComplete: 1,
      customerMessage: 'welcome',
    });
    const session = new TunnelSession(forwardConfig({ remotePort: echo.port }), tuningWith(), 0, {
      ssm,
      logger: new RecordingLogger(),
      userAgent: 'pf-daemon-test',
    });
    // A bug reached from the network: a listener that throws while the HandshakeComplete is handled.
    session.on('customerMessage', () => {
      throw new Error('a bug in a listener');
    });
    try {
      const err = await t.throwsAsync(session.start());
      t.true(isPfError(err, 'PF_ERR_SESSION_INTERNAL'), `typed error, got ${String(err)}`);
      t.is(session.state, 'closed');
      t.is(session.reason, 'protocol-error');
      t.is((session.stats['input'] as { internalErrors: number }).internalErrors, 1);
      const id = session.sessionId ?? '';
      await until(
        emulator,
        'sessionTerminated',
        () => emulator.session(id).state === 'terminated',
        10_000,
        'terminate',
      );
    } finally {
      await session.close();
      await close();
    }
  },
);
