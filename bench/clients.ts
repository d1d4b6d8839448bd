/**
 * The measuring clients: each one opens TCP connections to a port on 127.0.0.1 (a server directly, or a
 * daemon listener that tunnels to it), moves bytes, verifies every one of them and returns timings.
 * Sockets are registered in a {@link SocketScope} so a step that times out can be torn down.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { DIGEST_BYTES, encodeLength } from './wire.js';

/** Loopback only: the benchmark never sends traffic anywhere else. */
export const LOOPBACK = '127.0.0.1';
/** Largest single `write()` of the bulk clients, bytes (our choice: big enough to keep the socket busy). */
const WRITE_SLICE_BYTES = 1024 * 1024;

/** Sockets of one step; {@link destroyAll} ends them when the step fails or times out. */
export class SocketScope {
  private readonly sockets = new Set<Socket>();

  /** Register a socket (it leaves the scope when it closes). */
  track(socket: Socket): Socket {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    return socket;
  }

  /** Destroy every socket still open. */
  destroyAll(): void {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }
}

/** Open a connection with Nagle off; resolves once connected. */
export function connect(scope: SocketScope, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = scope.track(net.connect({ port, host: LOOPBACK, noDelay: true }));
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

/** Resolves on the socket's next `'drain'`, or rejects if it closes first. */
function drained(socket: Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', closed);
      resolve();
    };
    const closed = (): void => {
      socket.off('drain', done);
      reject(new Error('connection closed while writing'));
    };
    socket.on('drain', done);
    socket.once('close', closed);
  });
}

/** Write a buffer in slices, honouring backpressure. */
async function writeAll(socket: Socket, bytes: Buffer): Promise<void> {
  for (let offset = 0; offset < bytes.length; offset += WRITE_SLICE_BYTES) {
    if (!socket.write(bytes.subarray(offset, offset + WRITE_SLICE_BYTES))) await drained(socket);
  }
}

/**
 * Mark a promise's rejection as handled: it still rejects for whoever awaits it, but losing a
 * `Promise.race` later does not become an unhandled rejection.
 */
function handled<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

/** Rejects when the socket errors or closes before `settled()` says the exchange is complete. */
function failOnClose(socket: Socket, what: string, settled: () => boolean): Promise<never> {
  return handled(
    new Promise((_resolve, reject) => {
      socket.once('error', (err) => reject(new Error(`${what}: ${err.message}`)));
      socket.once('close', () => {
        if (!settled()) reject(new Error(`${what}: connection closed early`));
      });
    }),
  );
}

/** Result of one bulk transfer. */
export interface TransferResult {
  /** Payload bytes moved (headers and digests excluded). */
  bytes: number;
  /** From the first byte written to the last byte received, s. */
  seconds: number;
}

/**
 * Upload `data` to a sink and check the SHA-256 it answers.
 * @param expectedDigest - SHA-256 of `data`, computed before the clock starts
 * @throws Error when the digest differs or the connection fails
 */
export async function upload(
  scope: SocketScope,
  port: number,
  data: Buffer,
  expectedDigest: Buffer,
): Promise<TransferResult> {
  const socket = await connect(scope, port);
  let done = false;
  const reply = new Promise<Buffer>((resolve) => {
    const parts: Buffer[] = [];
    let have = 0;
    socket.on('data', (chunk: Buffer) => {
      parts.push(chunk);
      have += chunk.length;
      if (have >= DIGEST_BYTES) {
        done = true;
        resolve(Buffer.concat(parts));
      }
    });
  });
  const failure = failOnClose(socket, `upload to ${port}`, () => done);
  const start = performance.now();
  socket.write(encodeLength(data.length));
  const digest = await Promise.race([handled(writeAll(socket, data).then(() => reply)), failure]);
  const seconds = (performance.now() - start) / 1000;
  socket.destroy();
  if (digest.length !== DIGEST_BYTES || !digest.equals(expectedDigest)) {
    throw new Error(`upload to ${port}: SHA-256 mismatch (sink got different bytes)`);
  }
  return { bytes: data.length, seconds };
}

/**
 * Download `length` bytes from a source; checks them against the source's trailing SHA-256 and the
 * expected one.
 * @param expectedDigest - SHA-256 of the first `length` pattern bytes
 */
export async function download(
  scope: SocketScope,
  port: number,
  length: number,
  expectedDigest: Buffer,
): Promise<TransferResult> {
  const socket = await connect(scope, port);
  const hash = createHash('sha256');
  const trailer: Buffer[] = [];
  let received = 0;
  let done = false;
  const complete = new Promise<void>((resolve) => {
    socket.on('data', (chunk: Buffer) => {
      const bodyLeft = length - received;
      if (bodyLeft > 0) hash.update(bodyLeft >= chunk.length ? chunk : chunk.subarray(0, bodyLeft));
      if (chunk.length > bodyLeft) trailer.push(bodyLeft > 0 ? chunk.subarray(bodyLeft) : chunk);
      received += chunk.length;
      if (received >= length + DIGEST_BYTES) {
        done = true;
        resolve();
      }
    });
  });
  const failure = failOnClose(socket, `download from ${port}`, () => done);
  const start = performance.now();
  socket.write(encodeLength(length));
  await Promise.race([complete, failure]);
  const seconds = (performance.now() - start) / 1000;
  socket.destroy();
  const sent = Buffer.concat(trailer);
  const got = hash.digest();
  if (received !== length + DIGEST_BYTES) {
    throw new Error(`download from ${port}: ${received - length - DIGEST_BYTES} bytes more than asked`);
  }
  if (!sent.equals(got)) throw new Error(`download from ${port}: bytes differ from the source's SHA-256`);
  if (!got.equals(expectedDigest)) throw new Error(`download from ${port}: bytes differ from the pattern`);
  return { bytes: length, seconds };
}

/** Checks an echo byte for byte as it arrives, against the bytes that were sent. */
class EchoCheck {
  private got = 0;

  constructor(private readonly expected: Buffer) {}

  /** Bytes verified so far. */
  get offset(): number {
    return this.got;
  }

  /**
   * Take the next chunk of the echo.
   * @returns `complete` once every expected byte is back (then ready for the next round), `partial` while
   *   more is due, `mismatch` when a byte differs or more came back than was sent
   */
  feed(chunk: Buffer): 'partial' | 'complete' | 'mismatch' {
    const end = this.got + chunk.length;
    if (end > this.expected.length || !chunk.equals(this.expected.subarray(this.got, end))) return 'mismatch';
    if (end < this.expected.length) {
      this.got = end;
      return 'partial';
    }
    this.got = 0;
    return 'complete';
  }
}

/** How {@link echoRounds} stamps, times and ends its rounds. */
interface Rounds {
  /** Write round `round`'s marker into the message before it is sent. */
  stamp(message: Buffer, round: number): void;
  /** One round trip completed after `us` µs, at `now` (performance.now(), ms); false ends the loop. */
  completed(us: number, now: number): boolean;
}

/**
 * Round trips on one connection through an echo server: write `message` (stamped per round), wait for all
 * of it to come back byte for byte, repeat while `rounds.completed()` says so.
 * @throws Error naming `what` and the round on a mismatch, an error or an early close
 */
async function echoRounds(socket: Socket, message: Buffer, what: string, rounds: Rounds): Promise<void> {
  const check = new EchoCheck(message);
  let round = 0;
  let sentAt = 0;
  let done = false;
  const complete = handled(
    new Promise<void>((resolve, reject) => {
      const send = (): void => {
        rounds.stamp(message, round);
        sentAt = performance.now();
        socket.write(message);
      };
      socket.on('data', (chunk: Buffer) => {
        const state = check.feed(chunk);
        if (state === 'mismatch') {
          reject(new Error(`${what}: round ${round} echoed different bytes`));
          return;
        }
        if (state === 'partial') return;
        const now = performance.now();
        round++;
        if (rounds.completed((now - sentAt) * 1000, now)) {
          send();
        } else {
          done = true;
          resolve();
        }
      });
      send();
    }),
  );
  await Promise.race([complete, failOnClose(socket, what, () => done)]);
}

/**
 * Ping-pong through an echo server: send `size` bytes, wait for them to come back, repeat.
 * @returns one round-trip time per round, µs
 */
export async function pingPong(
  scope: SocketScope,
  port: number,
  rounds: number,
  size: number,
): Promise<Float64Array> {
  const socket = await connect(scope, port);
  const times = new Float64Array(rounds);
  let round = 0;
  await echoRounds(socket, Buffer.alloc(size), `ping-pong via ${port}`, {
    stamp: (message, n) => message.writeUInt32BE(n, 0),
    completed: (us) => {
      times[round] = us;
      return ++round < rounds;
    },
  });
  socket.destroy();
  return times;
}

/**
 * Time to first byte of a new connection: from `connect()` until a 1-byte message written on connect comes
 * back from the echo server.
 * @returns ms
 */
export function firstByte(scope: SocketScope, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const socket = scope.track(net.connect({ port, host: LOOPBACK, noDelay: true }));
    socket.once('error', (err) => reject(new Error(`first byte via ${port}: ${err.message}`)));
    socket.once('close', () => reject(new Error(`first byte via ${port}: connection closed early`)));
    socket.once('connect', () => socket.write(Buffer.of(0x2a)));
    socket.once('data', (chunk: Buffer) => {
      const ms = performance.now() - start;
      socket.destroy();
      if (chunk[0] === 0x2a) resolve(ms);
      else reject(new Error(`first byte via ${port}: echoed a different byte`));
    });
  });
}

/** Result of {@link requestReply}. */
export interface RequestReplyResult {
  /** Completed request → reply round trips, summed over connections. */
  operations: number;
  /** From the first request written to the last reply verified, s. */
  seconds: number;
  /** One round-trip time per completed operation, µs. */
  latenciesUs: Float64Array;
}

/**
 * `connections` connections at once to an echo server, each a loop of `size`-byte request → `size`-byte
 * reply (byte-for-byte checked) until `durationMs` has passed: many small messages on many streams.
 */
export async function requestReply(
  scope: SocketScope,
  port: number,
  connections: number,
  durationMs: number,
  size: number,
): Promise<RequestReplyResult> {
  const sockets = await Promise.all(Array.from({ length: connections }, () => connect(scope, port)));
  const latencies: number[] = [];
  const start = performance.now();
  const deadline = start + durationMs;
  const one = (socket: Socket, index: number): Promise<void> => {
    const message = Buffer.alloc(size);
    message.writeUInt32BE(index, 0);
    return echoRounds(socket, message, `request/reply ${index} via ${port}`, {
      stamp: (m, round) => m.writeUInt32BE(round, 4),
      completed: (us, now) => {
        latencies.push(us);
        return now < deadline;
      },
    });
  };
  await Promise.all(sockets.map(one));
  const seconds = (performance.now() - start) / 1000;
  for (const socket of sockets) socket.destroy();
  return { operations: latencies.length, seconds, latenciesUs: Float64Array.from(latencies) };
}

/**
 * `count` sequential connections to an echo server, each: connect, write `size` bytes, read them back,
 * close at once (destroy, as a client done with its reply does), wait for the close. An `end()` here would
 * wait out the tunnel's half-close linger (`halfCloseLingerMs`, README "TCP half-close"): the destination
 * never sees our EOF, so it never closes first. Measures what a new connection costs on an open session.
 * @returns per connection: ms from `connect()` until the echo is verified, and until the socket closed
 */
export async function connectExchange(
  scope: SocketScope,
  port: number,
  count: number,
  size: number,
): Promise<{ exchangeMs: Float64Array; closedMs: Float64Array }> {
  const exchangeMs = new Float64Array(count);
  const closedMs = new Float64Array(count);
  const message = Buffer.alloc(size, 0x5a);
  for (let i = 0; i < count; i++) {
    message.writeUInt32BE(i, 0);
    await new Promise<void>((resolve, reject) => {
      const start = performance.now();
      const socket = scope.track(net.connect({ port, host: LOOPBACK, noDelay: true }));
      const check = new EchoCheck(message);
      let verified = false;
      socket.once('error', (err) => reject(new Error(`connect ${i} via ${port}: ${err.message}`)));
      socket.once('connect', () => socket.write(message));
      socket.on('data', (chunk: Buffer) => {
        const state = check.feed(chunk);
        if (state === 'mismatch') {
          reject(new Error(`connect ${i} via ${port}: echoed different bytes`));
          socket.destroy();
          return;
        }
        if (state === 'partial') return;
        exchangeMs[i] = performance.now() - start;
        verified = true;
        socket.destroy();
      });
      socket.once('close', () => {
        if (!verified) {
          reject(new Error(`connect ${i} via ${port}: connection closed early`));
          return;
        }
        closedMs[i] = performance.now() - start;
        resolve();
      });
    });
  }
  return { exchangeMs, closedMs };
}

/** Result of {@link concurrentEcho}. */
export interface ConcurrentResult {
  /** From the first connect to the last verified byte, s. */
  seconds: number;
  /** Bytes verified, summed over connections and both directions. */
  bytesBothWays: number;
}

/**
 * Open `connections` connections to an echo server at once; each writes `bytesEach` bytes (a distinct
 * slice of `pattern`) and checks they all come back.
 */
export async function concurrentEcho(
  scope: SocketScope,
  port: number,
  connections: number,
  bytesEach: number,
  pattern: Buffer,
): Promise<ConcurrentResult> {
  const slices = Math.max(1, Math.floor(pattern.length / bytesEach));
  const start = performance.now();
  const one = async (index: number): Promise<void> => {
    const socket = await connect(scope, port);
    const offset = (index % slices) * bytesEach;
    const sent = pattern.subarray(offset, offset + bytesEach);
    const check = new EchoCheck(sent);
    let done = false;
    const complete = handled(
      new Promise<void>((resolve, reject) => {
        socket.on('data', (chunk: Buffer) => {
          const state = check.feed(chunk);
          if (state === 'mismatch') {
            reject(
              new Error(`connection ${index} via ${port}: echoed different bytes at offset ${check.offset}`),
            );
          } else if (state === 'complete') {
            done = true;
            resolve();
          }
        });
      }),
    );
    socket.write(sent);
    await Promise.race([complete, failOnClose(socket, `connection ${index} via ${port}`, () => done)]);
    socket.destroy();
  };
  const results = await Promise.allSettled(Array.from({ length: connections }, (_, i) => one(i)));
  const seconds = (performance.now() - start) / 1000;
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length > 0) {
    const first: unknown = failed[0]?.reason;
    throw new Error(
      `${failed.length} of ${connections} connections failed; first: ${first instanceof Error ? first.message : String(first)}`,
    );
  }
  return { seconds, bytesBothWays: 2 * connections * bytesEach };
}

/** Percentile of an unsorted sample (nearest rank), same unit as the sample. */
export function percentile(sample: Float64Array, p: number): number {
  const sorted = Float64Array.from(sample).sort();
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] ?? Number.NaN;
}
