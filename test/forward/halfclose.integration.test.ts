/**
 * TCP half-close through a forward (forward.ts halfClose): smux v1 as the agent runs it has no half-close,
 * so a client that sends its request and shuts down its write side at once (`nc -N`, HTTP/1.0 clients)
 * used to lose the reply: our FIN made the agent close the destination before it answered. With
 * `halfCloseLingerMs` the FIN waits for the remote's end or for that much remote silence.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { defaultForward } from '../../src/config/types.js';
import { startEmulator } from '../../src/emulator/index.js';
import { startForward, withTimeout } from './fixtures.js';

/** Reply size, bytes: hundreds of 1 KiB agent messages, so the linger must outlast a long answer. */
const REPLY_BYTES = 512 * 1024;
/** How long the server "works" on a request before answering, ms (its behaviour, not a test wait). */
const SERVER_WORK_MS = 100;

/** A server that reads one line, works on it, answers `reply` (or nothing), and keeps or closes the socket. */
async function startRequestServer(
  reply: Buffer | undefined,
): Promise<{ port: number; requests: string[]; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const requests: string[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let text = '';
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (!text.includes('\n')) return;
      requests.push(text.trim());
      if (reply) setTimeout(() => socket.end(reply), SERVER_WORK_MS);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Send `request`, shut down the write side at once, and collect everything until the remote's EOF. */
function requestThenShutdown(port: number, request: string): Promise<{ body: Buffer; eofAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let sentAt = 0;
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => {
      resolve({ body: Buffer.concat(chunks), eofAfterMs: performance.now() - sentAt });
      socket.end();
    });
    socket.on('connect', () => {
      sentAt = performance.now();
      socket.end(request);
    });
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test.serial(
  'a client that shuts down its write side after the request still gets the whole reply',
  async (t) => {
    const reply = randomBytes(REPLY_BYTES);
    const server = await startRequestServer(reply);
    const emulator = await startEmulator({});
    const { forward, port } = await startForward(emulator, {
      remotePort: server.port,
      halfCloseLingerMs: defaultForward.halfCloseLingerMs,
    });
    try {
      const { body } = await withTimeout(requestThenShutdown(port, 'GET /report\n'), 30_000, 'the reply');
      t.deepEqual(server.requests, ['GET /report']);
      t.is(body.length, REPLY_BYTES);
      t.is(sha(body), sha(reply));
    } finally {
      await forward.stop(0);
      await emulator.close();
      await server.close();
    }
  },
);

test.serial(
  'without an answer, the FIN goes out once the linger passes and the client sees EOF',
  async (t) => {
    const server = await startRequestServer(undefined);
    const emulator = await startEmulator({ agentPacingMs: 0 });
    const lingerMs = 300;
    const { forward, port } = await startForward(emulator, {
      remotePort: server.port,
      halfCloseLingerMs: lingerMs,
    });
    try {
      const { body, eofAfterMs } = await withTimeout(requestThenShutdown(port, 'PING\n'), 10_000, 'EOF');
      t.log(`EOF ${Math.round(eofAfterMs)} ms after the request (linger ${lingerMs} ms)`);
      t.is(body.length, 0);
      t.true(eofAfterMs >= lingerMs, 'the FIN waited for the linger');
      t.true(eofAfterMs < lingerMs + 5_000, 'and not much longer');
      t.deepEqual(server.requests, ['PING']);
    } finally {
      await forward.stop(0);
      await emulator.close();
      await server.close();
    }
  },
);
