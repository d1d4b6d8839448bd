/**
 * Pieces of the stalled-reader tests (issue 10 item 1) and the memory soak: a destination that floods or
 * echoes depending on the first byte a connection sends, a client that asks for a flood and stops reading,
 * an echo pinger that measures round trips, and a logger that keeps warn lines. All on 127.0.0.1, awaited
 * through events with timeouts.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { LogMeta, Logger } from '../../src/log.js';
import { withTimeout } from '../helpers/net.js';

/** First byte a connection sends to ask the {@link FloodOrEchoServer} for a flood. */
export const FLOOD = 0x46; // 'F'
/** First byte a connection sends to ask the {@link FloodOrEchoServer} for an echo. */
export const ECHO = 0x45; // 'E'

/** One flooded connection as the destination saw it. */
export interface FloodRecord {
  /** Bytes written so far. */
  written: number;
  /** Resolves with the SHA-256 of everything written once the flood ended and the socket was ended. */
  readonly done: Promise<{ bytes: number; sha256: string }>;
  /** Stop flooding after the current write; then end the socket. */
  stop(): void;
}

/**
 * A destination: first byte `F` ⇒ flood (`floodBytes` or until stopped) with non-repeating bytes; `E` ⇒ echo
 * of what follows; anything else ⇒ echo of everything.
 */
export interface FloodOrEchoServer {
  port: number;
  /** Floods in the order their connections arrived. */
  readonly floods: FloodRecord[];
  /** Resolves with the next flood's record once it starts. */
  nextFlood(): Promise<FloodRecord>;
  close(): Promise<void>;
}

/** Start a {@link FloodOrEchoServer}; `floodBytes` = Infinity floods until `stop()`. */
export async function startFloodOrEcho(floodBytes = Number.POSITIVE_INFINITY): Promise<FloodOrEchoServer> {
  const sockets = new Set<net.Socket>();
  const floods: FloodRecord[] = [];
  const waiters: ((record: FloodRecord) => void)[] = [];
  // 1 MiB of random bytes read at a moving offset, each 64 KiB piece stamped with its index: never periodic.
  const block = randomBytes(2 * 1024 * 1024);
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.once('data', (first: Buffer) => {
      if (first[0] !== FLOOD) {
        // `E` asks for an echo explicitly; any other first byte is echoed too (a plain echo client).
        const rest = first[0] === ECHO ? first.subarray(1) : first;
        if (rest.length > 0) socket.write(rest);
        socket.pipe(socket);
        return;
      }
      socket.pause();
      const hash = createHash('sha256');
      let stopped = false;
      let index = 0;
      let resolveDone!: (value: { bytes: number; sha256: string }) => void;
      const record: FloodRecord = {
        written: 0,
        done: new Promise((resolve) => (resolveDone = resolve)),
        stop: () => {
          stopped = true;
        },
      };
      let finished = false;
      const finish = (): void => {
        if (finished) return;
        finished = true;
        socket.end();
        resolveDone({ bytes: record.written, sha256: hash.digest('hex') });
      };
      // The far side may go away mid-flood (a reset connection): then the flood is over too.
      socket.once('close', finish);
      const writeMore = (): void => {
        for (;;) {
          if (stopped || record.written >= floodBytes || socket.destroyed) {
            finish();
            return;
          }
          const size = Math.min(64 * 1024, floodBytes - record.written);
          const start = (index * 7919) % (1024 * 1024);
          const piece = Buffer.from(block.subarray(start, start + size));
          if (size >= 4) piece.writeUInt32BE(index >>> 0, 0);
          index++;
          hash.update(piece);
          record.written += size;
          if (!socket.write(piece)) {
            socket.once('drain', writeMore);
            return;
          }
        }
      };
      floods.push(record);
      waiters.shift()?.(record);
      writeMore();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    floods,
    nextFlood: () =>
      withTimeout(new Promise<FloodRecord>((resolve) => waiters.push(resolve)), 10_000, 'a flood to start'),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A client that asks for a flood and does not read until {@link StalledReader.read} is called. */
export class StalledReader {
  readonly socket: net.Socket;
  received = 0;
  private readonly hash = createHash('sha256');
  /** Resolves with what was read once the destination's end arrived; rejects on an error or early close. */
  readonly done: Promise<{ bytes: number; sha256: string }>;
  private closedWith: Error | undefined;

  constructor(port: number) {
    const socket = net.connect(port, '127.0.0.1');
    this.socket = socket;
    socket.pause();
    socket.on('connect', () => socket.write(Buffer.from([FLOOD])));
    socket.on('data', (chunk: Buffer) => {
      this.hash.update(chunk);
      this.received += chunk.length;
    });
    this.done = new Promise((resolve, reject) => {
      socket.once('error', (err) => {
        this.closedWith = err;
        reject(err);
      });
      socket.once('end', () => resolve({ bytes: this.received, sha256: this.hash.digest('hex') }));
      socket.once('close', () => reject(this.closedWith ?? new Error(`closed after ${this.received} bytes`)));
    });
    this.done.catch(() => undefined);
  }

  /** The local port of this client (how the daemon's log names the connection). */
  get localPort(): number {
    return this.socket.localPort ?? -1;
  }

  /** Start reading (and keep reading). */
  read(): void {
    this.socket.resume();
  }
}

/** Echo round trips back to back on one connection; records each RTT. */
export class EchoPinger {
  readonly socket: net.Socket;
  readonly rtts: number[] = [];
  private running = true;
  private readonly finished: Promise<void>;
  /** Errors seen (a reset, a mismatch). */
  readonly errors: Error[] = [];

  constructor(port: number, pingBytes = 64) {
    const socket = net.connect(port, '127.0.0.1');
    this.socket = socket;
    socket.setNoDelay(true);
    this.finished = new Promise<void>((resolve) => {
      socket.on('error', (err) => {
        this.errors.push(err);
        resolve();
      });
      socket.on('close', () => resolve());
      socket.on('connect', () => {
        socket.write(Buffer.from([ECHO]));
        let payload = randomBytes(pingBytes);
        let got: Buffer[] = [];
        let gotBytes = 0;
        let sentAt = performance.now();
        const ping = (): void => {
          if (!this.running) {
            socket.end();
            resolve();
            return;
          }
          payload = randomBytes(pingBytes);
          got = [];
          gotBytes = 0;
          sentAt = performance.now();
          socket.write(payload);
        };
        socket.on('data', (chunk: Buffer) => {
          got.push(chunk);
          gotBytes += chunk.length;
          if (gotBytes < pingBytes) return;
          this.rtts.push(performance.now() - sentAt);
          if (!Buffer.concat(got).equals(payload)) this.errors.push(new Error('echo mismatch'));
          ping();
        });
        ping();
      });
    });
  }

  /** Longest round trip so far, ms; Infinity when one is still outstanding for longer. */
  get maxRttMs(): number {
    return Math.max(0, ...this.rtts);
  }

  /** Resolves once at least `count` round trips completed. */
  async roundTrips(count: number, ms: number): Promise<void> {
    await withTimeout(
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (this.rtts.length >= count) resolve();
          else this.socket.once('data', () => setImmediate(check));
        };
        check();
      }),
      ms,
      `${count} echo round trips`,
    );
  }

  /** Stop after the round trip in flight; resolves when the connection is closed. */
  async stop(): Promise<void> {
    this.running = false;
    await withTimeout(this.finished, 10_000, 'the echo pinger to stop');
  }
}

/**
 * Measures, while running, the longest time the pinger had a round trip outstanding (a frozen connection
 * shows up here even if its reply never comes).
 */
export function watchStalls(pinger: EchoPinger, intervalMs = 100): { stop(): number } {
  let last = pinger.rtts.length;
  let since = performance.now();
  let worst = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    if (pinger.rtts.length !== last) {
      last = pinger.rtts.length;
      since = now;
    }
    worst = Math.max(worst, now - since);
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      return worst;
    },
  };
}

/** A logger that keeps every warn line (with its namespace) and drops the rest. */
export function warnRecorder(): { logger: Logger; warnings: string[] } {
  const warnings: string[] = [];
  const make = (namespace: string): Logger => ({
    error: () => undefined,
    warn: (message: string, meta?: LogMeta) =>
      warnings.push(`${namespace}: ${message}${meta ? ` ${JSON.stringify(meta)}` : ''}`),
    info: () => undefined,
    debug: () => undefined,
    debugEnabled: false,
    child: (name: string) => make(namespace ? `${namespace}:${name}` : name),
  });
  return { logger: make('forward'), warnings };
}
