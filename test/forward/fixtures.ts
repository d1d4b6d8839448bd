/**
 * Shared pieces of the forward resilience tests: a Forward wired to an emulator, a streaming echo client
 * with an in-flight window (bounded memory, SHA-256 both ways, pausable reader), a destination echo server
 * that can stop reading, and a TCP proxy that can freeze a data-channel WebSocket (liveness tests).
 * Everything listens on 127.0.0.1 and is awaited through events with timeouts.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { ForwardConfig, TuningConfig } from '../../src/config/types.js';
import { defaultTuning } from '../../src/config/types.js';
import { startEmulator } from '../../src/emulator/index.js';
import type { Emulator, EmulatorOptions } from '../../src/emulator/index.js';
import { Forward } from '../../src/forward/forward.js';
import type { Logger } from '../../src/log.js';
import { silentLogger } from '../../src/log.js';
import type { SpillStore } from '../../src/mux/spill.js';
import { createSsmApi } from '../../src/ssm/client.js';
import type { SsmApi } from '../../src/ssm/types.js';
import type { ForwardTargets } from '../../src/targets/resolve.js';
import { withTimeout } from '../helpers/net.js';

/** A managed-node id the emulator accepts. */
export const TARGET = 'i-0123456789abcdef0';
/** Static credentials for the emulator's unsigned API. */
export const credentials = { accessKeyId: 'AKIDEMULATOR', secretAccessKey: 'emulator-secret' };

/** A forward config for tests: lazy, no idle stop, no keep-alive, FIN at once after a local EOF. */
export function forwardConfig(overrides: Partial<ForwardConfig>): ForwardConfig {
  return {
    name: 'test',
    target: TARGET,
    remotePort: 1,
    localPort: 0,
    bind: '127.0.0.1',
    eager: false,
    idleStopMs: 0,
    sessions: 1,
    keepAlive: false,
    halfCloseLingerMs: 0,
    allowInsecureEndpoint: false,
    ...overrides,
  };
}

/** Default tuning with overrides. */
export function tuningWith(overrides: Partial<TuningConfig> = {}): TuningConfig {
  return { ...defaultTuning, ...overrides };
}

/** An SSM client for the emulator; `rewriteStreamUrl` may redirect data channels (through a proxy). */
export function emulatorSsm(emulator: Emulator, rewriteStreamUrl?: (url: string) => string): SsmApi {
  const api = createSsmApi({
    endpoint: emulator.endpoint,
    region: 'us-east-1',
    credentials,
    logger: silentLogger,
  });
  if (!rewriteStreamUrl) return api;
  return {
    ...api,
    startSession: async (request) => {
      const grant = await api.startSession(request);
      return { ...grant, streamUrl: rewriteStreamUrl(grant.streamUrl) };
    },
    resumeSession: async (sessionId) => {
      const grant = await api.resumeSession(sessionId);
      return { ...grant, streamUrl: rewriteStreamUrl(grant.streamUrl) };
    },
    terminateSession: (sessionId) => api.terminateSession(sessionId),
  };
}

/** What {@link startForward} injects into the Forward instead of its defaults. */
export interface ForwardDeps {
  ssm?: SsmApi;
  logger?: Logger;
  spill?: SpillStore;
  targets?: ForwardTargets;
}

/** Start a Forward against the emulator. */
export async function startForward(
  emulator: Emulator,
  overrides: Partial<ForwardConfig>,
  tune: TuningConfig = tuningWith(),
  options: ForwardDeps = {},
): Promise<{ forward: Forward; port: number }> {
  const forward = new Forward(forwardConfig(overrides), tune, {
    ssm: options.ssm ?? emulatorSsm(emulator),
    logger: options.logger ?? silentLogger,
    userAgent: 'pf-daemon-test',
    ...(options.spill ? { spill: options.spill } : {}),
    ...(options.targets ? { targets: options.targets } : {}),
  });
  const address = await forward.start();
  return { forward, port: address.port };
}

export { withTimeout };

/** Resolve when `predicate()` holds, checking on every `event` of `emitter` (and once at once). */
export function until(
  emitter: NodeJS.EventEmitter,
  event: string,
  predicate: () => boolean,
  ms: number,
  what: string,
): Promise<void> {
  return withTimeout(
    new Promise<void>((resolve) => {
      const check = (): void => {
        if (!predicate()) return;
        emitter.off(event, check);
        resolve();
      };
      emitter.on(event, check);
      check();
    }),
    ms,
    what,
  );
}

/** A destination echo server whose reading can be stopped (slow remote) and resumed. */
export interface PausableEchoServer {
  port: number;
  connections: number;
  /** Stop reading every connection (the agent's writes back up). */
  pauseReading(): void;
  resumeReading(): void;
  close(): Promise<void>;
}

/** Start a destination echo server on 127.0.0.1 (each socket piped to itself, so echo respects backpressure). */
export async function startPausableEcho(): Promise<PausableEchoServer> {
  const sockets = new Set<net.Socket>();
  let paused = false;
  let connections = 0;
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.pipe(socket);
    if (paused) socket.pause();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    get connections() {
      return connections;
    },
    pauseReading() {
      paused = true;
      for (const socket of sockets) socket.pause();
    },
    resumeReading() {
      paused = false;
      for (const socket of sockets) socket.resume();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Options of {@link StreamingEcho}. */
export interface StreamingEchoOptions {
  /** Bytes to send (and expect back). */
  totalBytes: number;
  /** Most bytes sent and not yet echoed back; the writer waits beyond it (like an application window). */
  windowBytes: number;
  /** Write size, bytes. Default 64 KiB. */
  chunkBytes?: number;
}

/** Outcome of a {@link StreamingEcho}. */
export interface StreamingEchoResult {
  sent: number;
  received: number;
  sentSha256: string;
  receivedSha256: string;
}

/**
 * An echo client that generates random data on the fly (memory bounded by its window), hashes what it sends
 * and what comes back, and whose reader can be paused. `done` resolves when every byte came back.
 */
export class StreamingEcho {
  readonly done: Promise<StreamingEchoResult>;
  readonly socket: net.Socket;
  sent = 0;
  received = 0;
  private readonly sentHash = createHash('sha256');
  private readonly receivedHash = createHash('sha256');
  private readonly progressWaiters: { bytes: number; resolve: () => void }[] = [];

  constructor(port: number, options: StreamingEchoOptions) {
    const chunkBytes = options.chunkBytes ?? 64 * 1024;
    const block = randomBytes(1024 * 1024 + chunkBytes);
    const socket = net.connect(port, '127.0.0.1');
    this.socket = socket;
    this.done = new Promise<StreamingEchoResult>((resolve, reject) => {
      let waitingDrain = false;
      const writeMore = (): void => {
        while (
          !waitingDrain &&
          this.sent < options.totalBytes &&
          this.sent - this.received < options.windowBytes
        ) {
          const size = Math.min(chunkBytes, options.totalBytes - this.sent);
          // Vary the content with the offset so reordering or duplication cannot hash the same.
          const start = (this.sent * 7919) % (1024 * 1024);
          const piece = Buffer.from(block.subarray(start, start + size));
          if (size >= 4) piece.writeUInt32BE((this.sent / chunkBytes) >>> 0, 0);
          this.sentHash.update(piece);
          this.sent += size;
          if (!socket.write(piece)) {
            waitingDrain = true;
            socket.once('drain', () => {
              waitingDrain = false;
              writeMore();
            });
          }
        }
      };
      socket.on('error', reject);
      socket.on('close', () => {
        if (this.received < options.totalBytes)
          reject(new Error(`connection closed after ${this.received} of ${options.totalBytes} bytes back`));
      });
      socket.on('data', (chunk: Buffer) => {
        this.receivedHash.update(chunk);
        this.received += chunk.length;
        for (let i = this.progressWaiters.length - 1; i >= 0; i--) {
          const waiter = this.progressWaiters[i] as { bytes: number; resolve: () => void };
          if (this.received >= waiter.bytes) {
            this.progressWaiters.splice(i, 1);
            waiter.resolve();
          }
        }
        if (this.received >= options.totalBytes) {
          socket.end();
          resolve({
            sent: this.sent,
            received: this.received,
            sentSha256: this.sentHash.digest('hex'),
            receivedSha256: this.receivedHash.digest('hex'),
          });
          return;
        }
        writeMore();
      });
      socket.on('connect', writeMore);
    });
    this.done.catch(() => undefined);
  }

  /** Stop reading (the local reader stalls; the kernel and then the daemon buffer what arrives). */
  pauseReading(): void {
    this.socket.pause();
  }

  resumeReading(): void {
    this.socket.resume();
  }

  /** Resolves once at least `bytes` came back. */
  receivedAtLeast(bytes: number): Promise<void> {
    if (this.received >= bytes) return Promise.resolve();
    return new Promise((resolve) => this.progressWaiters.push({ bytes, resolve }));
  }
}

/** A TCP proxy in front of the emulator whose connections can be frozen (no bytes either way). */
export interface FreezableProxy {
  port: number;
  /** Stop relaying in both directions on every open connection (a stalled path: no frames, no pongs). */
  freeze(): void;
  /** Relay again (new connections are never frozen). */
  thaw(): void;
  /** Connections accepted so far. */
  readonly accepted: number;
  close(): Promise<void>;
}

/** Start a proxy from 127.0.0.1:<random> to 127.0.0.1:`targetPort`. */
export async function startFreezableProxy(targetPort: number): Promise<FreezableProxy> {
  const pairs = new Set<{ a: net.Socket; b: net.Socket; frozen: boolean }>();
  let accepted = 0;
  const server = net.createServer((a) => {
    accepted++;
    const b = net.connect(targetPort, '127.0.0.1');
    const pair = { a, b, frozen: false };
    pairs.add(pair);
    const relay = (from: net.Socket, to: net.Socket): void => {
      from.on('data', (chunk: Buffer) => {
        if (!pair.frozen) to.write(chunk);
      });
    };
    relay(a, b);
    relay(b, a);
    const end = (): void => {
      pairs.delete(pair);
      a.destroy();
      b.destroy();
    };
    for (const s of [a, b]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    get accepted() {
      return accepted;
    },
    freeze() {
      for (const pair of pairs) pair.frozen = true;
    },
    thaw() {
      for (const pair of pairs) pair.frozen = false;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const pair of pairs) {
          pair.a.destroy();
          pair.b.destroy();
        }
        server.close(() => resolve());
      }),
  };
}

/** Rewrite a StreamUrl's port (to pass the data channel through a proxy). */
export function viaPort(url: string, port: number): string {
  const parsed = new URL(url);
  parsed.port = String(port);
  return parsed.toString();
}

/** A destination server of a rig: where it listens and how to close it. */
export interface Destination {
  port: number;
  close(): Promise<void>;
}

/** Options of {@link startRig}. */
export interface RigOptions<D extends Destination> {
  /** Emulator options; default the emulator's own (the agent paced like the real one). */
  emulator?: Partial<EmulatorOptions>;
  /** Starts the destination; default {@link startPausableEcho}. */
  destination?: () => Promise<D>;
}

/** A destination and an emulator (and its SSM client), closed together. */
export interface Rig<D extends Destination> {
  destination: D;
  emulator: Emulator;
  /** An SSM client for the emulator. */
  ssm: SsmApi;
  /** Close the emulator, then the destination. */
  close(): Promise<void>;
}

/** Start a destination (an echo server unless told otherwise) and an emulator. */
export async function startRig<D extends Destination = PausableEchoServer>(
  options: RigOptions<D> = {},
): Promise<Rig<D>> {
  // The default destination is an echo server; a caller naming another D passes its own starter.
  const start = options.destination ?? (startPausableEcho as unknown as () => Promise<D>);
  const destination = await start();
  const emulator = await startEmulator(options.emulator ?? {});
  return {
    destination,
    emulator,
    ssm: emulatorSsm(emulator),
    close: async () => {
      await emulator.close();
      await destination.close();
    },
  };
}

/** Options of {@link startForwardRig}. */
export interface ForwardRigOptions<D extends Destination> extends RigOptions<D> {
  /** Forward config overrides; `remotePort` defaults to the destination's port. */
  forward?: Partial<ForwardConfig>;
  tuning?: TuningConfig;
  /**
   * Dependencies injected into the Forward (`ssm` defaults to one for the emulator), or a function of the
   * destination and emulator (a target resolver pointed at the emulator) that returns them.
   */
  deps?: ForwardDeps | ((rig: Rig<D>) => ForwardDeps | Promise<ForwardDeps>);
}

/** A destination, an emulator and a started Forward to the destination through it. */
export interface ForwardRig<D extends Destination> extends Rig<D> {
  forward: Forward;
  /** The forward's local port. */
  port: number;
  /** Stop the forward (no drain grace), then close the emulator and the destination. */
  close(): Promise<void>;
}

/** Start a destination, an emulator and a (lazy, unless told otherwise) Forward to the destination. */
export async function startForwardRig<D extends Destination = PausableEchoServer>(
  options: ForwardRigOptions<D> = {},
): Promise<ForwardRig<D>> {
  const rig = await startRig(options);
  const { forward, port } = await startForward(
    rig.emulator,
    { remotePort: rig.destination.port, ...options.forward },
    options.tuning ?? tuningWith(),
    typeof options.deps === 'function' ? await options.deps(rig) : (options.deps ?? {}),
  );
  return {
    ...rig,
    forward,
    port,
    close: async () => {
      await forward.stop(0);
      await rig.close();
    },
  };
}

/** A {@link ForwardRig} whose data channels pass through a {@link FreezableProxy}. */
export interface ProxiedForwardRig<D extends Destination> extends ForwardRig<D> {
  proxy: FreezableProxy;
  /** Thaw the proxy, stop the forward, close the proxy, the emulator and the destination. */
  close(): Promise<void>;
}

/**
 * Start a destination, an emulator, a freezable proxy in front of the emulator and a Forward whose data
 * channels (StartSession's and ResumeSession's StreamUrls) go through the proxy, for liveness tests.
 */
export async function startProxiedForwardRig<D extends Destination = PausableEchoServer>(
  options: Omit<ForwardRigOptions<D>, 'deps'> = {},
): Promise<ProxiedForwardRig<D>> {
  let proxy: FreezableProxy | undefined;
  const rig = await startForwardRig({
    ...options,
    deps: async ({ emulator }) => {
      const started = await startFreezableProxy(emulator.port);
      proxy = started;
      return { ssm: emulatorSsm(emulator, (url) => viaPort(url, started.port)) };
    },
  });
  const via = proxy as FreezableProxy;
  return {
    ...rig,
    proxy: via,
    close: async () => {
      via.thaw();
      await rig.forward.stop(0);
      await via.close();
      await rig.emulator.close();
      await rig.destination.close();
    },
  };
}

/** True when a connect to 127.0.0.1:`port` is refused (nothing listens). */
export function connectRefused(port: number): Promise<boolean> {
  return withTimeout(
    new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(false);
      });
      socket.once('error', () => resolve(true));
    }),
    5_000,
    'a connect attempt',
  );
}
