/**
 * Secrets never reach the logs: a full session (start, traffic, WebSocket drop + ResumeSession, stop)
 * at debug level in every output format, with the real logger, must not print any TokenValue, the
 * secret key, or a StreamUrl query string.
 */
import test from 'ava';
import { Writable } from 'node:stream';
import winston from 'winston';
import { defaultTuning } from '../../src/config/types.js';
import { startEmulator, waitFor } from '../../src/emulator/index.js';
import { Forward } from '../../src/forward/forward.js';
import { createLogger } from '../../src/log.js';
import type { LogFormat } from '../../src/log.js';
import { createSsmApi } from '../../src/ssm/client.js';
import type { SessionGrant, SsmApi } from '../../src/ssm/types.js';
import { echoExchange, startEchoServer } from '../helpers/net.js';

const SECRET_KEY = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';

for (const format of ['plain', 'json', 'text'] as LogFormat[]) {
  test(`no token, secret key or StreamUrl query in ${format} logs across start, resume and stop`, async (t) => {
    let output = '';
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        output += chunk.toString();
        callback();
      },
    });
    const logger = createLogger({
      level: 'debug',
      format,
      isTTY: true,
      transports: [new winston.transports.Stream({ stream: sink })],
    });
    const echo = await startEchoServer();
    const emulator = await startEmulator({ agentPacingMs: 0 });
    const grants: SessionGrant[] = [];
    const real = createSsmApi({
      endpoint: emulator.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: SECRET_KEY },
      logger,
    });
    const ssm: SsmApi = {
      startSession: async (request) => {
        const grant = await real.startSession(request);
        grants.push(grant);
        return grant;
      },
      resumeSession: async (id) => {
        const grant = await real.resumeSession(id);
        grants.push(grant);
        return grant;
      },
      terminateSession: (id) => real.terminateSession(id),
    };
    const forward = new Forward(
      {
        name: 'redaction',
        target: 'i-0123456789abcdef0',
        remotePort: echo.port,
        localPort: 0,
        bind: '127.0.0.1',
        eager: false,
        idleStopMs: 0,
        sessions: 1,
        keepAlive: false,
        halfCloseLingerMs: 0,
        allowInsecureEndpoint: false,
      },
      defaultTuning,
      { ssm, logger: logger.child('forward:redaction'), userAgent: 'pf-daemon-test' },
    );
    const { port } = await forward.start();
    try {
      await echoExchange(port, 4096);
      const session = forward.currentSession;
      if (!session?.sessionId) return t.fail('no session');
      const resumed = waitFor(emulator, 'resumed', undefined, 10_000);
      emulator.dropClient(session.sessionId, 'abrupt');
      await resumed;
      const after = await echoExchange(port, 4096);
      t.is(after.receivedSha256, after.sentSha256);
    } finally {
      await forward.stop(0);
      await emulator.close();
      await echo.close();
    }
    t.true(grants.length >= 2, 'StartSession and at least one ResumeSession happened');
    t.true(output.includes('resumed'), 'the resume was logged');
    t.true(output.includes('/v1/data-channel/'), 'the StreamUrl path is logged, so its query would be too');
    for (const grant of grants) {
      t.false(output.includes(grant.tokenValue), 'TokenValue leaked');
      const query = new URL(grant.streamUrl).search.slice(1);
      t.false(output.includes(query), 'StreamUrl query leaked');
    }
    t.false(output.includes(SECRET_KEY), 'secret key leaked');
    t.false(output.includes('cell-number='), 'StreamUrl query parameter leaked');
  });
}
