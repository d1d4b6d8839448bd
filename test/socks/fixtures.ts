/**
 * Shared pieces of the SOCKS tests: a SocksServer wired to the emulator through real SessionKeepers, HTTP
 * destination servers with random bodies (SHA-256 known), real curl, and a raw SOCKS5 client that reads
 * the reply bytes. Everything listens on 127.0.0.1 port 0 and is awaited through events with timeouts.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import type { SocksConfig } from '../../src/config/types.js';
import { defaultSocks } from '../../src/config/types.js';
import { startEmulator } from '../../src/emulator/index.js';
import type { Emulator, EmulatorOptions } from '../../src/emulator/index.js';
import { SessionKeeper } from '../../src/forward/keeper.js';
import type { SessionSpec } from '../../src/forward/keeper.js';
import { silentLogger } from '../../src/log.js';
import type { Logger } from '../../src/log.js';
import { SocksServer } from '../../src/socks/server.js';
import { encodeGreeting, encodeRequest, encodeUserPass } from '../../src/socks/socks5.js';
import type { SocksDestination } from '../../src/socks/socks5.js';
import { TARGET, emulatorSsm, tuningWith, withTimeout } from '../forward/fixtures.js';

export { TARGET, withTimeout };

/** The curl the tests drive (a real SOCKS5 / HTTP CONNECT client). */
export const CURL = '/usr/bin/curl';

/** Host names the emulator's agent maps to 127.0.0.1 (ToRemoteHost without DNS). */
export const HOST_MAP = { 'alpha.test': '127.0.0.1', 'beta.test': '127.0.0.1' } as const;

/** An HTTP server answering every GET with one random body. */
export interface BodyServer {
  port: number;
  body: Buffer;
  sha256: string;
  /** Requests served. */
  readonly requests: number;
  close(): Promise<void>;
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Start an HTTP server on 127.0.0.1 with a random body of `bytes`. */
export async function startBodyServer(bytes: number): Promise<BodyServer> {
  const body = randomBytes(bytes);
  let requests = 0;
  const server = createServer((req, res) => {
    requests++;
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  });
  server.keepAliveTimeout = 500;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    body,
    sha256: sha256(body),
    get requests() {
      return requests;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A SOCKS listener on the emulator, with the keepers it created. */
export interface SocksRig {
  emulator: Emulator;
  server: SocksServer;
  port: number;
  keepers: SessionKeeper[];
  close(): Promise<void>;
}

/** A `socks:` entry for tests: loopback, port 0, no idle stop, FIN at once. */
export function socksConfig(overrides: Partial<SocksConfig> = {}): SocksConfig {
  return {
    name: 'socks-test',
    target: TARGET,
    bind: '127.0.0.1',
    localPort: 0,
    allow: ['*'],
    maxSessions: defaultSocks.maxSessions,
    idleStopMs: 0,
    keepAlive: false,
    halfCloseLingerMs: 0,
    allowInsecureEndpoint: false,
    ...overrides,
  };
}

/** Start an emulator (real agent pace unless overridden) and a SOCKS listener on it. */
export async function startSocksRig(
  overrides: Partial<SocksConfig> = {},
  emulatorOptions: Partial<EmulatorOptions> = {},
  logger: Logger = silentLogger,
): Promise<SocksRig> {
  const emulator = await startEmulator({ hostMap: HOST_MAP, ...emulatorOptions });
  const ssm = emulatorSsm(emulator);
  const keepers: SessionKeeper[] = [];
  const server = new SocksServer(socksConfig(overrides), {
    logger,
    keeperFor: (spec: SessionSpec) => {
      const keeper = new SessionKeeper(spec, tuningWith(), { ssm, logger, userAgent: 'pf-daemon-test' });
      keepers.push(keeper);
      return keeper;
    },
  });
  const address = await server.start();
  return {
    emulator,
    server,
    port: address.port,
    keepers,
    close: async () => {
      await server.stop(0);
      await emulator.close();
    },
  };
}

/** What curl did. */
export interface CurlResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Run curl with `args`; never rejects (the exit code is in the result). */
export function curl(args: readonly string[], timeoutMs = 30_000): Promise<CurlResult> {
  return new Promise((resolve) => {
    execFile(
      CURL,
      ['--silent', '--show-error', '--noproxy', '', '--max-time', String(timeoutMs / 1_000), ...args],
      { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024, env: { PATH: process.env['PATH'] ?? '/usr/bin' } },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr: stderr.toString() });
      },
    );
  });
}

/** What a raw SOCKS5 exchange got back. */
export interface RawReply {
  /** Every byte the server sent before closing (or before `untilBytes`). */
  bytes: Buffer;
  /** The server closed the connection. */
  closed: boolean;
  socket: net.Socket;
}

/**
 * Send `payload` to the listener and collect the answer until the server closes or `untilBytes` arrived.
 * With `end`, half-close after the payload.
 */
export function rawExchange(
  port: number,
  payload: Buffer,
  options: { untilBytes?: number; end?: boolean; timeoutMs?: number } = {},
): Promise<RawReply> {
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  let length = 0;
  const done = new Promise<RawReply>((resolve, reject) => {
    const finish = (closed: boolean): void => resolve({ bytes: Buffer.concat(chunks), closed, socket });
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      if (options.untilBytes !== undefined && length >= options.untilBytes) finish(false);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => finish(true));
    socket.on('connect', () => {
      socket.write(payload);
      if (options.end) socket.end();
    });
    socket.on('timeout', () => reject(new Error('raw exchange timed out')));
  });
  return withTimeout(done, options.timeoutMs ?? 20_000, 'the SOCKS server to answer');
}

/** Greeting (no auth or user/pass) and CONNECT for `destination`, in one write. */
export function socksConnectBytes(
  destination: SocksDestination,
  credentials?: { username: string; password: string },
): Buffer {
  return Buffer.concat([
    encodeGreeting(credentials ? [2] : [0]),
    ...(credentials ? [encodeUserPass(credentials.username, credentials.password)] : []),
    encodeRequest(destination),
  ]);
}

/** A TCP port on 127.0.0.1 nobody listens on. */
export { refusingPort } from '../helpers/net.js';
