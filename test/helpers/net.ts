/**
 * Real-socket helpers for integration tests: destination servers on 127.0.0.1 and a client that sends
 * random bytes and verifies the echo by SHA-256. Everything waits on events with timeouts, never on sleeps.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';

/** A TCP server on 127.0.0.1 that tracks its sockets so close() is prompt. */
export interface TestServer {
  port: number;
  server: net.Server;
  connections: number;
  close(): Promise<void>;
}

async function listen(
  server: net.Server,
  sockets: Set<net.Socket>,
  counter: { connections: number },
): Promise<TestServer> {
  server.on('connection', (socket) => {
    counter.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    server,
    get connections() {
      return counter.connections;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Echo server: every byte comes back. */
export function startEchoServer(): Promise<TestServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.pipe(socket);
  });
  return listen(server, sockets, { connections: 0 });
}

/** Server that speaks first: sends `banner` on connect, then echoes. */
export function startBannerServer(banner: string): Promise<TestServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    socket.write(banner);
    socket.pipe(socket);
  });
  return listen(server, sockets, { connections: 0 });
}

/** A port on 127.0.0.1 that refuses connections (listened once, then closed). */
export async function refusingPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A port that was free a moment ago (for listeners that need a fixed port): the same as a refusing one. */
export const freePort = refusingPort;

/** Reject after `ms` with a message naming what was awaited. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Result of one echo exchange. */
export interface EchoResult {
  sent: number;
  received: number;
  sentSha256: string;
  receivedSha256: string;
}

/**
 * Connect to 127.0.0.1:`port`, write `size` random bytes in random-sized pieces, read until the same number
 * of bytes came back, then end. Resolves with both SHA-256 digests.
 */
export function echoExchange(port: number, size: number, timeoutMs = 30_000): Promise<EchoResult> {
  const data = randomBytes(size);
  const sentSha256 = createHash('sha256').update(data).digest('hex');
  const exchange = new Promise<EchoResult>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const hash = createHash('sha256');
    let received = 0;
    socket.on('error', reject);
    socket.on('close', () => {
      if (received < size) reject(new Error(`connection closed after ${received} of ${size} bytes`));
    });
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      received += chunk.length;
      if (received >= size) {
        socket.end();
        resolve({ sent: size, received, sentSha256, receivedSha256: hash.digest('hex') });
      }
    });
    socket.on('connect', () => {
      let offset = 0;
      const writeMore = (): void => {
        while (offset < size) {
          const piece = Math.min(size - offset, 1 + Math.floor(Math.random() * 16384));
          const ok = socket.write(data.subarray(offset, offset + piece));
          offset += piece;
          if (!ok) {
            socket.once('drain', writeMore);
            return;
          }
        }
      };
      writeMore();
    });
  });
  return withTimeout(exchange, timeoutMs, `echo of ${size} bytes via port ${port}`);
}
