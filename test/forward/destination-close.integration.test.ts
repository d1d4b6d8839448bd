/**
 * The destination closes while the local client is still uploading (issue 10 item 6): after the agent's FIN
 * and the flush of what the destination sent, the daemon closes the local socket completely, so the
 * uploader sees the connection end within a bound instead of blocking forever, every byte the destination
 * sent arrives, and the forward's idle stop happens. Emulator with its faithful pacing (1 KiB, 1 ms).
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { startEmulator } from '../../src/emulator/index.js';
import { startForward, until, withTimeout } from './fixtures.js';

/** What the destination reads before it answers and closes, bytes. */
const READ_BEFORE_CLOSE_BYTES = 16 * 1024;
/** The destination's answer, bytes. */
const RESPONSE_BYTES = 256 * 1024;

/** A destination that reads a little, answers, closes its write side and then only discards input. */
async function startReadLittleThenClose(response: Buffer): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let read = 0;
    let answered = false;
    socket.on('data', (chunk: Buffer) => {
      read += chunk.length;
      if (answered || read < READ_BEFORE_CLOSE_BYTES) return;
      answered = true;
      socket.end(response);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

test.serial(
  'destination closes mid-upload: the uploader sees the close, gets every byte sent, and the forward idle-stops',
  async (t) => {
    t.timeout(60_000);
    const response = randomBytes(RESPONSE_BYTES);
    const destination = await startReadLittleThenClose(response);
    const emulator = await startEmulator({});
    const { forward, port } = await startForward(emulator, { remotePort: destination.port, idleStopMs: 300 });
    try {
      const upload = randomBytes(64 * 1024);
      const outcome = await withTimeout(
        new Promise<{ received: Buffer; uploaded: number; how: string }>((resolve) => {
          const socket = net.connect(port, '127.0.0.1');
          const chunks: Buffer[] = [];
          let uploaded = 0;
          let how = 'close';
          // Upload without end, as fast as the socket takes it, until the connection goes away.
          const writeMore = (): void => {
            while (!socket.destroyed && socket.write(upload)) uploaded += upload.length;
          };
          socket.on('connect', writeMore);
          socket.on('drain', () => {
            uploaded += upload.length;
            writeMore();
          });
          socket.on('data', (chunk: Buffer) => chunks.push(chunk));
          socket.on('end', () => (how = 'end'));
          socket.on('error', (err: NodeJS.ErrnoException) => (how = err.code ?? err.message));
          socket.on('close', () => resolve({ received: Buffer.concat(chunks), uploaded, how }));
        }),
        20_000,
        'the uploading client to see its connection close',
      );
      t.log(`client uploaded ${outcome.uploaded} bytes, connection ended by ${outcome.how}`);
      t.true(outcome.uploaded > READ_BEFORE_CLOSE_BYTES, 'the client was still uploading');
      t.is(outcome.received.length, RESPONSE_BYTES, 'every byte the destination sent arrived');
      t.is(
        createHash('sha256').update(outcome.received).digest('hex'),
        createHash('sha256').update(response).digest('hex'),
      );
      const sessionId = [...emulator.sessions.keys()][0] ?? '';
      await until(
        emulator,
        'sessionTerminated',
        () => emulator.session(sessionId).state === 'terminated',
        10_000,
        'the idle stop to terminate the session',
      );
      t.is(forward.connectionCount, 0, 'no local socket is held');
      t.is(forward.currentSession, undefined, 'the idle stop ended the session');
    } finally {
      await forward.stop(0);
      await emulator.close();
      await destination.close();
    }
  },
);
