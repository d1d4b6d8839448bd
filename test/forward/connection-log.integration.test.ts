/**
 * What a forward writes about its connections and sessions: one debug line per local connection on close
 * (peer, bytes each way, duration), one warn line instead when it failed, no "session ended" line before
 * the error that ended it, and no "closed by the service" for a session we closed ourselves.
 */
import test from 'ava';
import net from 'node:net';
import { startEmulator } from '../../src/emulator/index.js';
import { captureLog } from '../helpers/log.js';
import { StreamingEcho, startForward, startPausableEcho, withTimeout } from './fixtures.js';

const CLOSE_LINE = /^connection from 127\.0\.0\.1:\d+ closed after \d+ ms, (\d+) bytes up, (\d+) bytes down/;

test.serial('each local connection leaves one debug line on close; a failed one one warn line', async (t) => {
  const echo = await startPausableEcho();
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const log = captureLog('debug');
  const { forward, port } = await startForward(emulator, { remotePort: echo.port }, undefined, {
    logger: log.logger,
  });
  try {
    const e = new StreamingEcho(port, { totalBytes: 3000, windowBytes: 3000, chunkBytes: 1000 });
    await withTimeout(e.done, 10_000, 'echo');
    const line = await log.waitFor('debug', CLOSE_LINE, 5_000);
    t.deepEqual(CLOSE_LINE.exec(line.message)?.slice(1), ['3000', '3000']);
    t.is(log.matching(undefined, CLOSE_LINE).length, 1);
    // Stopping the forward ends the session we opened: no "closed by the service" for our own close.
    await forward.stop(0);
    t.is(log.matching(undefined, /closed by the service/).length, 0);
  } finally {
    await forward.stop(0);
    await emulator.close();
    await echo.close();
  }
});

test.serial(
  'a connection whose session cannot start: one warn line, no "session ended" before it',
  async (t) => {
    const emulator = await startEmulator({ agentPacingMs: 0, unknownTargets: () => true });
    const log = captureLog('debug');
    const { forward, port } = await startForward(emulator, { remotePort: 1 }, undefined, {
      logger: log.logger,
    });
    try {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => undefined);
      await withTimeout(
        new Promise((resolve) => socket.once('close', resolve)),
        10_000,
        'the connection to close',
      );
      const line = await log.waitFor('warn', CLOSE_LINE, 5_000);
      t.regex(line.message, /0 bytes up, 0 bytes down: target i-\S+ is not connected to SSM/);
      t.is(log.matching(undefined, CLOSE_LINE).length, 1, 'one line for the connection');
      t.is(
        log.matching(undefined, /session \S* ?ended/).length,
        0,
        'no "session ended" for a start that failed',
      );
    } finally {
      await forward.stop(0);
      await emulator.close();
    }
  },
);
