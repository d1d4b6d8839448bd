/**
 * The destination servers of the benchmark, run as their own process (`node dist/bench/servers.js`) so
 * their CPU is not charged to the daemon or to the measuring client. Starts an echo server, an upload sink
 * and a download source on 127.0.0.1 (protocols in `wire.ts`), prints one line
 * `servers {"echo":<port>,"sink":<port>,"source":<port>}` on stdout, and exits on SIGTERM/SIGINT or when
 * its stdin closes (so it never outlives the benchmark, even when that one is killed).
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import { LENGTH_HEADER_BYTES, PatternGenerator, decodeLength } from './wire.js';

/** The line prefix the benchmark waits for on this process's stdout. */
export const SERVERS_READY_PREFIX = 'servers ';

/** Ports the servers listen on (127.0.0.1). */
export interface ServerPorts {
  /** Echo server. */
  echo: number;
  /** Upload sink: length header, N bytes → SHA-256. */
  sink: number;
  /** Download source: length header → N pattern bytes + SHA-256. */
  source: number;
}

/** Listen backlog, connections: the 1000-connection step opens its sockets at once. */
const LISTEN_BACKLOG = 4096;

/**
 * Collects the 8-byte length header from the front of a byte stream that may split or coalesce it.
 * @returns the header and any bytes after it once complete, else undefined (bytes kept)
 */
class HeaderReader {
  private readonly parts: Buffer[] = [];
  private have = 0;

  feed(chunk: Buffer): { header: Buffer; rest: Buffer } | undefined {
    this.parts.push(chunk);
    this.have += chunk.length;
    if (this.have < LENGTH_HEADER_BYTES) return undefined;
    const all = this.parts.length === 1 ? chunk : Buffer.concat(this.parts);
    return { header: all.subarray(0, LENGTH_HEADER_BYTES), rest: all.subarray(LENGTH_HEADER_BYTES) };
  }
}

function echo(socket: Socket): void {
  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  socket.pipe(socket);
}

function sink(socket: Socket): void {
  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  const headerReader = new HeaderReader();
  const hash = createHash('sha256');
  let remaining = -1;
  socket.on('data', (chunk: Buffer) => {
    let body = chunk;
    if (remaining < 0) {
      const got = headerReader.feed(chunk);
      if (!got) return;
      try {
        remaining = decodeLength(got.header);
      } catch {
        socket.destroy();
        return;
      }
      body = got.rest;
    }
    if (body.length > remaining) {
      // More than announced: the client is broken; do not answer a digest that would look valid.
      socket.destroy();
      return;
    }
    hash.update(body);
    remaining -= body.length;
    if (remaining === 0) {
      remaining = Number.NaN;
      socket.end(hash.digest());
    }
  });
}

async function sendPattern(socket: Socket, length: number): Promise<void> {
  const generator = new PatternGenerator();
  const hash = createHash('sha256');
  let left = length;
  while (left > 0 && !socket.destroyed) {
    const chunk = generator.next();
    const piece = left < chunk.length ? chunk.subarray(0, left) : chunk;
    left -= piece.length;
    hash.update(piece);
    if (!socket.write(piece)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          socket.off('drain', done);
          socket.off('close', done);
          resolve();
        };
        socket.on('drain', done);
        socket.on('close', done);
      });
    }
  }
  if (!socket.destroyed) socket.end(hash.digest());
}

function source(socket: Socket): void {
  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  const headerReader = new HeaderReader();
  const onData = (chunk: Buffer): void => {
    const got = headerReader.feed(chunk);
    if (!got) return;
    socket.off('data', onData);
    let length: number;
    try {
      length = decodeLength(got.header);
    } catch {
      socket.destroy();
      return;
    }
    if (got.rest.length > 0) {
      socket.destroy();
      return;
    }
    // Anything the client sends later is ignored, but it must be read so the socket does not stall.
    socket.resume();
    void sendPattern(socket, length);
  };
  socket.on('data', onData);
}

function listen(handler: (socket: Socket) => void): Promise<net.Server> {
  const server = net.createServer({ noDelay: true }, handler);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: 0, host: '127.0.0.1', backlog: LISTEN_BACKLOG }, () => resolve(server));
  });
}

/** Start the three servers; resolves to their ports and a function closing them. */
export async function startServers(): Promise<{ ports: ServerPorts; close: () => void }> {
  const servers = await Promise.all([listen(echo), listen(sink), listen(source)]);
  const [echoServer, sinkServer, sourceServer] = servers as [net.Server, net.Server, net.Server];
  const port = (server: net.Server): number => (server.address() as AddressInfo).port;
  return {
    ports: { echo: port(echoServer), sink: port(sinkServer), source: port(sourceServer) },
    close: () => servers.forEach((server) => server.close()),
  };
}

async function main(): Promise<void> {
  const { ports } = await startServers();
  process.stdout.write(`${SERVERS_READY_PREFIX}${JSON.stringify(ports)}\n`);
  const exit = (): never => process.exit(0);
  process.on('SIGTERM', exit);
  process.on('SIGINT', exit);
  process.stdin.on('end', exit);
  process.stdin.on('close', exit);
  process.stdin.resume();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`servers: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
