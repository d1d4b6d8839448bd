/**
 * The `socks` bench step (issue 15): first byte through the daemon's SOCKS5 listener (`-D`), through an
 * emulator paced like the real agent, as separate processes.
 *
 * - cold: a destination the listener has never seen (a new host name each sample, mapped to 127.0.0.1 by
 *   the emulator's `--host-map`): StartSession, WebSocket, handshake, the stream, and the first-connection
 *   wait for a ConnectToPortError (src/socks/server.ts `CONFIRM_GRACE_MS` after the SYN's ack) are all in it;
 * - warm: a destination whose session is open and which has confirmed a connection already;
 * - direct: the same echo server without any proxy, for the added cost.
 *
 * Each sample is one connection: greeting → method reply → CONNECT → reply → one byte → its echo, timed
 * from the connect to the echo, the way a SOCKS client waits for each reply.
 */
import net from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { LOOPBACK, SocketScope, firstByte } from './clients.js';
import { Child } from './processes.js';
import { CLI_PATH } from './stack.js';

/** Managed node id of the socks entry; the emulator accepts any well-formed id. */
const TARGET = 'i-0be9c0ffee0000015';
/** Time a child has to start, ms. */
const START_TIMEOUT_MS = 30_000;
/** How often the listener is probed while the daemon starts, ms. */
const LISTEN_POLL_MS = 100;
/** Untimed connections to the warm destination before its samples. */
const WARM_UP_CONNECTIONS = 3;
/** Longest one sample may take, ms. */
const SAMPLE_TIMEOUT_MS = 30_000;

/** Figures of the step, ms each. */
export interface SocksFirstByte {
  coldMs: number[];
  /** Cold, to a server that speaks first: its first byte ends the confirmation wait. */
  coldServerFirstMs: number[];
  warmMs: number[];
  directMs: number[];
}

/**
 * An echo server in this process (the tunnel's processes are the ones measured); with `banner`, it first
 * sends 0x2a on accept, like a server-speaks-first protocol (SSH, SMTP, MySQL).
 */
async function startEcho(banner = false): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    if (banner) socket.write(Buffer.of(0x2a));
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** True when something listens on `port` (our bind fails); never connects, so nothing starts early. */
function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'EADDRINUSE'));
    probe.listen(port, LOOPBACK, () => probe.close(() => resolve(false)));
  });
}

/**
 * One timed SOCKS5 connection to `host:port` via the listener on `proxyPort`.
 * @returns ms from connect to the echoed byte
 */
export function socksFirstByte(
  scope: SocketScope,
  proxyPort: number,
  host: string,
  port: number,
  serverFirst = false,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const socket = scope.track(net.connect({ port: proxyPort, host: LOOPBACK, noDelay: true }));
    const timer = setTimeout(() => socket.destroy(new Error('timed out')), SAMPLE_TIMEOUT_MS);
    let stage: 'method' | 'reply' | 'echo' = 'method';
    let buffered = Buffer.alloc(0);
    const fail = (why: string): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(`socks first byte to ${host}:${port}: ${why}`));
    };
    socket.once('error', (err) => fail(err.message));
    socket.once('close', () => fail('connection closed early'));
    socket.once('connect', () => socket.write(Buffer.of(0x05, 0x01, 0x00)));
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (stage === 'method' && buffered.length >= 2) {
        if (buffered[1] !== 0x00) return fail(`method reply ${buffered.subarray(0, 2).toString('hex')}`);
        buffered = buffered.subarray(2);
        stage = 'reply';
        const name = Buffer.from(host);
        const request = Buffer.concat([
          Buffer.of(0x05, 0x01, 0x00, 0x03, name.length),
          name,
          Buffer.alloc(2),
        ]);
        request.writeUInt16BE(port, request.length - 2);
        socket.write(request);
      }
      if (stage === 'reply' && buffered.length >= 10) {
        if (buffered[1] !== 0x00) return fail(`CONNECT reply 0x${(buffered[1] ?? 0).toString(16)}`);
        buffered = buffered.subarray(10);
        stage = 'echo';
        if (!serverFirst) socket.write(Buffer.of(0x2a));
      }
      if (stage === 'echo' && buffered.length >= 1) {
        const ms = performance.now() - start;
        clearTimeout(timer);
        socket.removeAllListeners('close');
        socket.destroy();
        if (buffered[0] === 0x2a) resolve(ms);
        else reject(new Error('echoed a different byte'));
      }
    });
  });
}

/** Environment of the children: fake credentials, no AWS settings of the caller. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) {
    if (key.startsWith('AWS_') || key === 'PF_DAEMON_CONFIG' || key === 'NOTIFY_SOCKET') delete env[key];
  }
  return { ...env, AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y', AWS_REGION: 'us-east-1' };
}

/**
 * Start a paced emulator and a daemon with one `-D` listener, take `coldSamples` cold and `warmSamples`
 * warm first-byte samples (and as many direct ones), and stop both.
 */
export async function measureSocksFirstByte(options: {
  coldSamples: number;
  warmSamples: number;
}): Promise<SocksFirstByte> {
  const env = childEnv();
  const echo = await startEcho();
  const banner = await startEcho(true);
  const scope = new SocketScope();
  const names = Array.from({ length: options.coldSamples }, (_, i) => `cold-${i}.bench`);
  const bannerNames = names.map((name) => `banner-${name}`);
  const hostMap = [...names, ...bannerNames, 'warm.bench'].flatMap((name) => [
    '--host-map',
    `${name}=${LOOPBACK}`,
  ]);
  const emulator = new Child(
    'socks emulator',
    process.execPath,
    [CLI_PATH, 'emulator', '--port', '0', '--log-level', 'warn', ...hostMap],
    env,
  );
  let daemon: Child | undefined;
  try {
    const endpoint =
      (await emulator.waitForLine(/endpoint (http:\/\/127\.0\.0\.1:\d+)/, START_TIMEOUT_MS))[1] ?? '';
    const port = await freePort();
    daemon = new Child(
      'socks daemon',
      process.execPath,
      [
        CLI_PATH,
        '-D',
        `${port}@${TARGET}`,
        '--endpoint',
        endpoint,
        '--log-level',
        'warn',
        '--log-format',
        'plain',
      ],
      env,
    );
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!(await portInUse(port))) {
      if (daemon.hasExited || Date.now() > deadline)
        throw new Error(`socks daemon did not listen:\n${daemon.recentOutput()}`);
      await delay(LISTEN_POLL_MS);
    }
    const coldMs: number[] = [];
    for (const name of names) coldMs.push(await socksFirstByte(scope, port, name, echo.port));
    const coldServerFirstMs: number[] = [];
    for (const name of bannerNames)
      coldServerFirstMs.push(await socksFirstByte(scope, port, name, banner.port, true));
    for (let i = 0; i < WARM_UP_CONNECTIONS; i++) await socksFirstByte(scope, port, 'warm.bench', echo.port);
    const warmMs: number[] = [];
    const directMs: number[] = [];
    for (let i = 0; i < options.warmSamples; i++) {
      warmMs.push(await socksFirstByte(scope, port, 'warm.bench', echo.port));
      directMs.push(await firstByte(scope, echo.port));
    }
    return { coldMs, coldServerFirstMs, warmMs, directMs };
  } finally {
    scope.destroyAll();
    await daemon?.stop();
    await emulator.stop();
    await echo.close();
    await banner.close();
  }
}

/** Median of `values`, ms. */
export function medianMs(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** The step's lines for the report (stderr), since the shared table lists the issue-7/16 rows only. */
export function describeSocksFirstByte(r: SocksFirstByte): string {
  const span = (v: readonly number[]): string =>
    `median ${medianMs(v).toFixed(1)} ms (min ${Math.min(...v).toFixed(1)}, max ${Math.max(...v).toFixed(1)}, n=${v.length})`;
  return [
    `socks first byte, cold destination (StartSession + handshake + confirm wait): ${span(r.coldMs)}`,
    `socks first byte, cold destination, server speaks first (no confirm wait): ${span(r.coldServerFirstMs)}`,
    `socks first byte, warm destination: ${span(r.warmMs)}`,
    `direct first byte (same echo server): ${span(r.directMs)}`,
  ].join('\n');
}
