/**
 * The built-in SSM emulator (spec §12): one HTTP server on 127.0.0.1 serving the SSM JSON API (`POST /`, see
 * `api.ts`) and the data-channel WebSockets (`/v1/data-channel/<SessionId>`, see `service.ts`), with one
 * emulated agent per session (`agent.ts`), live fault injection (`faults.ts`) and per-session observability
 * (`session.ts`).
 *
 * ```ts
 * const emulator = await startEmulator({ hostMap: { 'db.internal': '127.0.0.1' } });
 * // point @aws-sdk/client-ssm (or pf-daemon --endpoint) at emulator.endpoint
 * await emulator.close();
 * ```
 */
import { EventEmitter } from 'node:events';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError } from '../errors.js';
import { silentLogger } from '../log.js';
import type { Logger } from '../log.js';
import type { AgentDeps, AgentOptions, EmulatedAgent } from './agent.js';
import { handleApiRequest } from './api.js';
import type {
  ApiBackend,
  CustomDocument,
  ResumeOutcome,
  SessionGrantBody,
  StartSessionInput,
} from './api.js';
import { Inventory } from './inventory.js';
import type { InventoryData } from './inventory.js';
import { Faults } from './faults.js';
import type { FaultConfig } from './faults.js';
import { DataChannelGateway, streamUrlFor } from './service.js';
import { EmulatedSession, newSessionId } from './session.js';
import type { AgentDefaults, EmulatedSessionInfo } from './session.js';

export type {
  EmulatedSessionInfo,
  FrameRecord,
  SessionCounters,
  SessionEndReason,
  SessionState,
} from './session.js';
export { CHANNEL_CLOSED_OUTPUT, SESSION_TERMINATED_TEXT } from './session.js';
export { Faults, defaultFaultConfig } from './faults.js';
export { Inventory } from './inventory.js';
export type {
  InventoryContainer,
  InventoryData,
  InventoryInstance,
  InventoryTask,
  PingStatus,
} from './inventory.js';
export type { CustomDocument } from './api.js';
export type {
  AgentFaults,
  ApiErrorCode,
  ApiErrorFault,
  ApiOperation,
  DelayFault,
  Direction,
  Directional,
  DropWebSocketFault,
  FaultConfig,
  ResumeBehavior,
  SeqFault,
} from './faults.js';

/** Managed-node id pattern the emulator treats as connected by default. */
export const DEFAULT_TARGET_PATTERN = /^(i|mi)-[0-9a-f]{8,17}$/;

/** A set of targets: an explicit list or a predicate. */
export type TargetMatcher = readonly string[] | ((target: string) => boolean);

/** Builds an agent; the default loads `EmulatedAgent` from `agent.ts`. Tests may inject a fake. */
export type AgentFactory = (options: AgentOptions, deps: AgentDeps) => EmulatedAgent;

/** Emulator options. Every field has a default in {@link defaultEmulatorOptions}. */
export interface EmulatorOptions {
  /** TCP port on 127.0.0.1; 0 = any free port. Default 0. */
  port: number;
  /** AgentVersion in the HandshakeRequest (spec §6.1). Default `3.3.987.0`. */
  agentVersion: string;
  /** Post-handshake not-ready window, ms (spec §6.4). Default 50. */
  notReadyWindowMs: number;
  /** Agent Output payload size, bytes (spec §9.2). Default 1024. */
  chunkSize: number;
  /** Agent sleep after each Output message, ms (spec §9.2). Default 1. */
  agentPacingMs: number;
  /** Agent's HandshakeResponse timeout, ms (spec §6.2). Default 15000. */
  handshakeTimeoutMs: number;
  /** Service idle timeout, ms; 0 = off (spec §10.2). Default 1200000 (20 min). */
  idleTimeoutMs: number;
  /** Service maximum session duration, ms; 0 = off (spec §10.2). Default 0. */
  maxDurationMs: number;
  /** Targets StartSession accepts. Default: ids matching {@link DEFAULT_TARGET_PATTERN}. */
  knownTargets: TargetMatcher;
  /** Targets answered with TargetNotConnected even when known. Default none. */
  unknownTargets: TargetMatcher;
  /**
   * Instances (tags, ping status) and ECS tasks for DescribeInstanceInformation, ListTasks and DescribeTasks.
   * An instance listed here is connected only while `Online`; an `ecs:` target only when it names a running
   * task's container with a running ExecuteCommandAgent. Default empty.
   */
  inventory: InventoryData;
  /** Custom port-forwarding documents StartSession accepts besides the AWS ones. Default none. */
  documents: Readonly<Record<string, CustomDocument>>;
  /**
   * Destination host → address the agent dials (ToRemoteHost without DNS), e.g. `{ 'db.internal': '127.0.0.1' }`.
   * Hosts not listed are dialled as given, except `localhost`, which maps to `127.0.0.1` unless listed, so the
   * local document never depends on how `localhost` resolves. Default `{}`.
   */
  hostMap: Readonly<Record<string, string>>;
  /** User part of SessionIds (`<user>-<17 hex>`). Default `emulator`. */
  user: string;
  /** Time a new WebSocket has to send OpenDataChannel before it is closed, ms. Default 10000. */
  openTimeoutMs: number;
  /** Frames kept in each session's frame log. Default 10000. */
  maxFramesLogged: number;
  /** Most agent frames held during a `pauseFor` before further ones are discarded. Default 100000. */
  maxHeldFrames: number;
  /** Initial fault configuration (see `faults.ts`). Default: no faults, seed 1. */
  faults: Partial<FaultConfig>;
  /** Logger; the emulator logs under `emulator`. Default silent. */
  logger: Logger;
  /** Agent constructor; default the real `EmulatedAgent`. */
  agentFactory: AgentFactory | undefined;
}

/** Documented defaults of {@link EmulatorOptions}. */
export const defaultEmulatorOptions: Readonly<EmulatorOptions> = Object.freeze({
  port: 0,
  agentVersion: '3.3.987.0',
  notReadyWindowMs: 50,
  chunkSize: 1024,
  agentPacingMs: 1,
  handshakeTimeoutMs: 15_000,
  idleTimeoutMs: 20 * 60_000,
  maxDurationMs: 0,
  knownTargets: (target: string) => DEFAULT_TARGET_PATTERN.test(target),
  unknownTargets: [],
  inventory: {},
  documents: {},
  hostMap: {},
  user: 'emulator',
  openTimeoutMs: 10_000,
  maxFramesLogged: 10_000,
  maxHeldFrames: 100_000,
  faults: {},
  logger: silentLogger,
  agentFactory: undefined,
});

/**
 * Check resolved options; lists every problem with its field name.
 * @throws ConfigError `PF_ERR_CONFIG`
 */
export function verifyEmulatorOptions(options: EmulatorOptions): void {
  const problems: string[] = [];
  const intIn = (field: keyof EmulatorOptions, value: number, min: number, max: number): void => {
    if (!Number.isInteger(value) || value < min || value > max)
      problems.push(`emulator.${field}: ${value} is not an integer in ${min}..${max}`);
  };
  intIn('port', options.port, 0, 65535);
  intIn('notReadyWindowMs', options.notReadyWindowMs, 0, 3_600_000);
  intIn('chunkSize', options.chunkSize, 1, 65535);
  intIn('agentPacingMs', options.agentPacingMs, 0, 60_000);
  intIn('handshakeTimeoutMs', options.handshakeTimeoutMs, 1, 3_600_000);
  intIn('idleTimeoutMs', options.idleTimeoutMs, 0, 2 ** 31 - 1);
  intIn('maxDurationMs', options.maxDurationMs, 0, 2 ** 31 - 1);
  intIn('openTimeoutMs', options.openTimeoutMs, 1, 3_600_000);
  intIn('maxFramesLogged', options.maxFramesLogged, 0, 10_000_000);
  intIn('maxHeldFrames', options.maxHeldFrames, 0, 10_000_000);
  if (options.agentVersion.length === 0) problems.push('emulator.agentVersion: must not be empty');
  if (!/^[a-z0-9._-]+$/i.test(options.user))
    problems.push(`emulator.user: ${options.user} is not a simple name`);
  if (problems.length > 0) throw new ConfigError('PF_ERR_CONFIG', problems.join('; '));
}

function matches(matcher: TargetMatcher, target: string): boolean {
  return typeof matcher === 'function' ? matcher(target) : matcher.includes(target);
}

/**
 * Resolve after `emitter` emits `event` with arguments satisfying `predicate`; reject after `timeoutMs`.
 * Resolves with the event's arguments.
 */
export function waitFor(
  emitter: EventEmitter,
  event: string,
  predicate: ((...args: unknown[]) => boolean) | undefined = undefined,
  timeoutMs = 5000,
): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const listener = (...args: unknown[]): void => {
      if (predicate !== undefined && !predicate(...args)) return;
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve(args);
    };
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for '${event}'`));
    }, timeoutMs);
    emitter.on(event, listener);
  });
}

/**
 * A running emulator. Events (first argument is always the SessionId, except `apiCall`):
 * `sessionStarted`(id), `clientConnected`(id), `clientDisconnected`(id), `handshakeComplete`(id, mode),
 * `sessionTerminated`(id, reason), `resumed`(id), `apiCall`(operation), and `fault`(id, direction, fate) for
 * every fault the relay applied (not for plain delays).
 */
export class Emulator extends EventEmitter {
  /** `http://127.0.0.1:<port>`: use as the SSM endpoint. */
  readonly endpoint: string;
  /** Bound TCP port. */
  readonly port: number;
  /** Live, mutable faults (spec §12.2). */
  readonly faults: Faults;
  /** Live, mutable inventory of instances and ECS tasks. */
  readonly inventory: Inventory;
  /** Resolved options. */
  readonly options: Readonly<EmulatorOptions>;
  private readonly all = new Map<string, EmulatedSession>();
  private closed = false;

  /** @internal Use {@link startEmulator}. */
  constructor(
    private readonly server: Server,
    private readonly gateway: DataChannelGateway,
    options: Readonly<EmulatorOptions>,
    faults: Faults,
    private readonly agentFactory: AgentFactory,
  ) {
    super();
    this.options = options;
    this.faults = faults;
    this.inventory = new Inventory(options.inventory);
    this.backend = {
      inventory: this.inventory,
      documents: options.documents,
      isTargetConnected: (target) =>
        !matches(this.options.unknownTargets, target) &&
        (this.inventory.isConnected(target) ?? matches(this.options.knownTargets, target)),
      startSession: (input) => this.startSession(input),
      resumeSession: (id) => this.resumeSession(id),
      terminateSession: (id) => this.all.get(id)?.terminate('terminated'),
      onCall: (op) => this.emit('apiCall', op),
    };
    this.port = (server.address() as AddressInfo).port;
    this.endpoint = `http://127.0.0.1:${this.port}`;
  }

  /** Every session started on this emulator, live or ended. */
  get sessions(): ReadonlyMap<string, EmulatedSessionInfo> {
    return this.all;
  }

  /** One session, or a thrown error naming the id (for tests). */
  session(id: string): EmulatedSessionInfo {
    return this.live(id);
  }

  /** Send `pause_publication`, hold the agent's output for `ms`, then `start_publication` (spec §12.2). */
  pauseFor(sessionId: string, ms: number): void {
    this.live(sessionId).pauseFor(ms);
  }

  /** Send `pause_publication` and hold the agent's output with no `start_publication` after (spec §12.2). */
  pauseWithoutStart(sessionId: string): void {
    this.live(sessionId).pause();
  }

  /** Close a session's client socket now (`bye` = close frame 1000 "Bye", `abrupt` = no close frame). */
  dropClient(sessionId: string, mode: 'abrupt' | 'bye' = 'bye'): void {
    this.live(sessionId).dropClient(mode);
  }

  /** Make the session's agent stop consuming input (simulated 4 MiB smux stall, spec §12.2 `receiveStall`). */
  stallReceive(sessionId: string): void {
    this.live(sessionId).agent?.stallReceive();
  }

  /** Release {@link stallReceive}. */
  releaseReceiveStall(sessionId: string): void {
    this.live(sessionId).agent?.releaseReceiveStall();
  }

  /** End a session as TerminateSession does. */
  terminateSession(sessionId: string): void {
    this.live(sessionId).terminate('terminated');
  }

  /** End every session (with channel_closed to connected clients), close every socket and the server. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const session of this.all.values()) session.terminate('emulatorClosed');
    this.gateway.close();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  /** @internal The API backend. */
  readonly backend: ApiBackend;

  /** @internal Look up a session for the gateway. */
  lookup(id: string): EmulatedSession | undefined {
    return this.all.get(id);
  }

  private live(id: string): EmulatedSession {
    const session = this.all.get(id);
    if (session === undefined) throw new Error(`no emulated session ${id}`);
    return session;
  }

  private grant(session: EmulatedSession): SessionGrantBody {
    return {
      SessionId: session.id,
      TokenValue: session.token,
      StreamUrl: streamUrlFor(this.port, session.id, session.cellNumber),
    };
  }

  private startSession(input: StartSessionInput): SessionGrantBody {
    const o = this.options;
    const id = newSessionId(o.user);
    const logger = o.logger.child('emulator').child(`session:${id}`);
    const agentDefaults: AgentDefaults = {
      agentVersion: o.agentVersion,
      chunkSize: o.chunkSize,
      pacingMs: o.agentPacingMs,
      notReadyWindowMs: o.notReadyWindowMs,
      handshakeTimeoutMs: o.handshakeTimeoutMs,
      handshakeDelayMs: 0,
      skipHandshakeComplete: false,
      requestKmsAction: false,
      sessionType: 'Port',
      dialFailStreamIds: [],
      dialFailCount: 0,
      dialDelayMs: 0,
      injectMessages: [],
    };
    const session = new EmulatedSession(id, input, {
      faults: this.faults,
      logger,
      now: () => Date.now(),
      createAgent: this.agentFactory,
      agentDefaults,
      resolveHost: (host) => o.hostMap[host] ?? (host === 'localhost' || host === '' ? '127.0.0.1' : host),
      idleTimeoutMs: o.idleTimeoutMs,
      maxDurationMs: o.maxDurationMs,
      maxFramesLogged: o.maxFramesLogged,
      maxHeldFrames: o.maxHeldFrames,
      emit: (event, ...args) => this.emit(event, ...args),
    });
    this.all.set(id, session);
    logger.debug('session started', { target: input.target, document: input.documentName });
    this.emit('sessionStarted', id);
    return this.grant(session);
  }

  private resumeSession(id: string): ResumeOutcome {
    const session = this.all.get(id);
    const behavior = this.faults.resumeBehavior;
    if (session === undefined || behavior === 'doesNotExist') return { kind: 'unknown' };
    if (session.state === 'terminated' || behavior === 'noToken') return { kind: 'ended' };
    session.resume();
    this.emit('resumed', id);
    return { kind: 'granted', grant: this.grant(session) };
  }
}

async function loadAgentFactory(): Promise<AgentFactory> {
  const mod = await import('./agent.js');
  return (options, deps) => new mod.EmulatedAgent(options, deps);
}

/** Start an emulator on 127.0.0.1. Options not given take {@link defaultEmulatorOptions}. */
export async function startEmulator(options: Partial<EmulatorOptions> = {}): Promise<Emulator> {
  const defined = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  const resolved: EmulatorOptions = Object.freeze({ ...defaultEmulatorOptions, ...defined });
  verifyEmulatorOptions(resolved);
  const agentFactory = resolved.agentFactory ?? (await loadAgentFactory());
  const faults = new Faults(resolved.faults);
  const logger = resolved.logger.child('emulator');
  // The server needs the emulator and the emulator needs the bound server: break the cycle with a holder.
  const ref: { emulator?: Emulator } = {};
  const gateway = new DataChannelGateway({
    lookup: (id) => ref.emulator?.lookup(id),
    faults,
    openTimeoutMs: resolved.openTimeoutMs,
    logger,
  });
  const server = createServer((req, res) => {
    if (ref.emulator === undefined) {
      res.writeHead(503).end();
      return;
    }
    void handleApiRequest(req, res, ref.emulator.backend, faults, logger.child('api'));
  });
  server.on('upgrade', (req, socket, head) => gateway.handleUpgrade(req, socket, head));
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(resolved.port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const emulator = new Emulator(server, gateway, resolved, faults, agentFactory);
  ref.emulator = emulator;
  logger.info('SSM emulator listening', { endpoint: emulator.endpoint });
  return emulator;
}
