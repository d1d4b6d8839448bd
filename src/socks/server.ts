/**
 * The dynamic-forwarding front end (issue 15): one local listener that speaks SOCKS5 (RFC 1928/1929) and
 * HTTP CONNECT on the same port, told apart by the first byte (0x05 is SOCKS5; an HTTP method starts with a
 * letter). Each CONNECT asks a session keeper (src/forward/keeper.ts) for a stream to `host:port` via the
 * target: one keeper, so one SSM session, per distinct destination, shared by later connections to it and
 * stopped after `idleStopMs` without connections. `maxSessions` bounds the distinct destinations held at
 * once; past it a destination with no connection is dropped to make room, else the reply says so.
 *
 * When the reply says "succeeded": the agent sends no positive "connected" signal in smux mode, only a
 * ConnectToPortError flag and a FIN when its dial fails (forward.ts pairs them the same way). The agent dials
 * when it consumes the message carrying our SYN, and acks that message as it consumes it (spec §6.4, §9.4).
 * So the first connection to a destination waits for that ack ({@link SocksCarrier.opened}) plus
 * {@link CONFIRM_GRACE_MS} for the refusal, at most {@link CONFIRM_WAIT_MS} after the stream opens in all:
 * data from the destination, or the wait passing without a FIN, means connected (success); a FIN without
 * data with a ConnectToPortError means refused (0x05 / 502). Once a destination has confirmed a connection, later ones
 * are answered success as soon as the stream opens (no wait on the warm path); a refusal there closes the
 * client after its success reply (as `ssh -D` always does) and makes the next connection wait again.
 *
 * Codecs live in `socks5.ts` and `http-connect.ts`; the allow list in `allow.ts`. This module owns the I/O.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { SocksConfig } from '../config/types.js';
import type { SessionSpec } from '../forward/keeper.js';
import { boundedWait } from '../forward/backoff.js';
import { closeListenerNow, detachListener, listenOn } from '../forward/listen.js';
import { closeAfterFlush, lingerHalfClose } from '../forward/local-socket.js';
import { documentFor } from '../config/types.js';
import { describeError } from '../errors.js';
import { RepeatFilter } from '../log.js';
import type { Logger } from '../log.js';
import type { SessionStats, SocksDestinationStats, SocksStats } from '../stats.js';
import { frontEndBytes, hostPort } from '../stats.js';
import { canonicalHost, isLoopbackHost } from '../targets/destination.js';
import { AllowList } from './allow.js';
import { HttpConnectParser, httpResponse } from './http-connect.js';
import { Reply, SOCKS_VERSION, Socks5Handshake, describeReply, encodeReply } from './socks5.js';
import type { SocksCredentials, SocksDestination } from './socks5.js';

/** Longest a client may take from accept to a complete request (greeting, auth, CONNECT), ms (our default). */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * Longest a CONNECT waits for a stream (StartSession, WebSocket, handshake of a new destination's session),
 * ms (our default): above the 15 s WebSocket connect timeout plus StartSession retries, below what clients
 * such as curl give up at by default. Past it: 0x06 TTL expired / 504.
 */
export const CONNECT_TIMEOUT_MS = 45_000;
/**
 * Longest the first connection to a destination waits for the truth before the reply says success, ms (our
 * default), counted from the stream's open: the bound on the ack of the SYN's message plus
 * {@link CONFIRM_GRACE_MS}. The first stream of a new session is usually sent inside the agent's
 * post-handshake not-ready window, where it neither acks nor consumes (spec §6.4); the not-ready probe
 * (src/datachannel/reliable.ts) resends it until the agent takes it. 1 s covers a resend at the RTO cap
 * (src/datachannel/rtt.ts) should the probe's copies all be lost.
 */
export const CONFIRM_WAIT_MS = 1_000;

/**
 * After the agent acked the message carrying the first connection's SYN, how long to wait for its
 * ConnectToPortError before the reply says success, ms (our default). The agent dials as it consumes the SYN
 * and acks that message at the same time; a refused port (RST) fails its dial within a millisecond or two
 * on the instance and the flag then takes one more message over the same path as the ack, so 120 ms leaves
 * room for scheduling and a paced link several times over. A dial to an unreachable address (no RST) takes
 * the agent's connect timeout, tens of seconds: the old fixed 1 s never caught that either; such a client
 * sees success, then the close (as with `ssh -D`).
 */
export const CONFIRM_GRACE_MS = 120;

/** A stream to the destination, as the keeper hands it out (the part of src/forward/keeper.ts `Carrier` used here). */
export interface SocksCarrier {
  /** write = to the destination, read = from it, end() = FIN, 'end' = remote FIN; destroy to reset. */
  readonly stream: Duplex;
  /** After 'end' without data: true once if the agent sent ConnectToPortError. */
  takeDestinationRefusal(): boolean;
  /** Resolves once the agent consumed the message carrying this connection's open; rejects if it closed first. */
  opened(): Promise<void>;
}

/** What this front end needs of a session keeper (src/forward/keeper.ts `SessionKeeper` satisfies it). */
export interface DestinationKeeper {
  /** A carrier once a session can carry it; rejects with a PfError (StartSession, dial, handshake). */
  acquire(signal?: AbortSignal): Promise<SocksCarrier>;
  /** The keeper's live sessions. */
  readonly stats: SessionStats[];
  /** Stop its sessions, letting open carriers finish for up to `graceMs`. */
  stop(graceMs: number): Promise<void>;
  /** Stop at once without waiting. */
  abandon(): void;
}

/** Builds the keeper of one destination. */
export type KeeperFactory = (spec: SessionSpec) => DestinationKeeper;

/** What a SOCKS front end needs from outside. */
export interface SocksServerDeps {
  logger: Logger;
  keeperFor: KeeperFactory;
  /** Failures already reported (shared by the daemon): a repeat is logged at debug. */
  repeats?: RepeatFilter;
}

/** One destination and the keeper that carries connections to it. */
interface Destination {
  key: string;
  host: string;
  port: number;
  spec: SessionSpec;
  keeper: DestinationKeeper;
  connections: Set<Socket>;
  connectionsTotal: number;
  /** A connection through it was confirmed (data or the wait passed): later ones are answered at once. */
  confirmed: boolean;
  idleTimer: NodeJS.Timeout | undefined;
  lastUsedMs: number;
}

/** Counters of one listener, plain increments. */
interface SocksCounters {
  connectionsAccepted: number;
  connectionsActive: number;
  connectionsFailed: number;
  handshakeFailures: number;
  notAllowed: number;
  limitReached: number;
  refused: number;
  closedBytesUp: number;
  closedBytesDown: number;
}

/** The protocol a client spoke, and how to answer it. */
type Dialect = 'socks5' | 'http';

/** Why a CONNECT failed, mapped onto each dialect's reply. */
type Failure = 'general' | 'not-allowed' | 'refused' | 'unreachable' | 'timeout' | 'limit';

const SOCKS_REPLY: Record<Failure, Reply> = {
  general: Reply.GeneralFailure,
  'not-allowed': Reply.NotAllowed,
  refused: Reply.ConnectionRefused,
  unreachable: Reply.HostUnreachable,
  timeout: Reply.TtlExpired,
  limit: Reply.GeneralFailure,
};
const HTTP_STATUS: Record<Failure, number> = {
  general: 502,
  'not-allowed': 403,
  refused: 502,
  unreachable: 502,
  timeout: 504,
  limit: 503,
};

/**
 * One SOCKS5/HTTP CONNECT listener.
 * Events: 'listening' (AddressInfo), 'destination' (key: a new destination keeper was created),
 * 'connectionClosed' (failure text | undefined).
 */
export class SocksServer extends EventEmitter {
  private server: net.Server | undefined;
  private readonly destinations = new Map<string, Destination>();
  private readonly sockets = new Set<Socket>();
  private readonly allow: AllowList;
  private readonly credentials: SocksCredentials | undefined;
  private readonly repeats: RepeatFilter;
  private readonly abandoned = new AbortController();
  private stopping = false;
  private listening = false;
  private stopPromise: Promise<void> | undefined;
  private readonly counters: SocksCounters = {
    connectionsAccepted: 0,
    connectionsActive: 0,
    connectionsFailed: 0,
    handshakeFailures: 0,
    notAllowed: 0,
    limitReached: 0,
    refused: 0,
    closedBytesUp: 0,
    closedBytesDown: 0,
  };

  constructor(
    readonly config: SocksConfig,
    private readonly deps: SocksServerDeps,
  ) {
    super();
    this.allow = AllowList.parse(config.allow);
    this.credentials =
      config.username !== undefined && config.password !== undefined
        ? { username: config.username, password: config.password }
        : undefined;
    this.repeats = deps.repeats ?? new RepeatFilter();
  }

  private get log(): Logger {
    return this.deps.logger;
  }

  /** The bound address once listening. */
  get address(): AddressInfo | undefined {
    const address = this.server?.address();
    return address && typeof address === 'object' ? address : undefined;
  }

  /** Destinations with a keeper now. */
  get destinationCount(): number {
    return this.destinations.size;
  }

  /** This listener's branch of the stats tree (`src/stats.ts`). */
  get stats(): SocksStats {
    const c = this.counters;
    const { bytesUp, bytesDown } = frontEndBytes(this.sockets, c.closedBytesUp, c.closedBytesDown);
    const destinations: SocksDestinationStats[] = [...this.destinations.values()].map((d) => ({
      host: d.host,
      port: d.port,
      document: documentFor(d.spec),
      connectionsActive: d.connections.size,
      connectionsTotal: d.connectionsTotal,
      sessions: d.keeper.stats,
    }));
    const address = this.address;
    return {
      name: this.config.name,
      bind: this.config.bind,
      localPort: address?.port ?? this.config.localPort,
      listen: address ? hostPort(address.address, address.port) : null,
      target: this.config.target,
      state: this.listening ? 'listening' : this.stopping ? 'stopped' : 'starting',
      error: null,
      auth: this.credentials ? 'username' : 'none',
      maxSessions: this.config.maxSessions,
      connectionsAccepted: c.connectionsAccepted,
      connectionsActive: c.connectionsActive,
      connectionsFailed: c.connectionsFailed,
      handshakeFailures: c.handshakeFailures,
      notAllowed: c.notAllowed,
      limitReached: c.limitReached,
      refused: c.refused,
      bytesUp,
      bytesDown,
      destinations,
    };
  }

  private readonly acceptListener = (socket: Socket): void => this.onConnection(socket);
  private readonly serverErrorListener = (err: Error): void =>
    this.log.error(`listener error: ${err.message}`);

  /**
   * Open the listener, or take over `adopt`, a listener already bound to this entry's address by the server
   * this one replaces on reload, so the port never refuses connections.
   * @throws TunnelError `PF_ERR_LISTEN` naming the address and the fix.
   */
  async start(adopt?: net.Server): Promise<AddressInfo> {
    const server = adopt ?? net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
    if (!adopt) {
      await listenOn(server, this.config.localPort, this.config.bind, {
        port: 'another port (-D PORT)',
        bind: 'bind',
      });
    }
    this.server = server;
    server.on('connection', this.acceptListener);
    server.on('error', this.serverErrorListener);
    this.listening = true;
    const address = this.address as AddressInfo;
    this.log.info(
      `SOCKS5/HTTP CONNECT on ${hostPort(address.address, address.port)} → allowed host:port via ${this.config.target} (${this.credentials ? 'username/password' : 'no auth'}, up to ${this.config.maxSessions} destinations)${adopt ? ' (listener taken over from the previous configuration)' : ''}`,
    );
    if (!isLoopbackHost(this.config.bind)) {
      this.log.warn(
        `SOCKS listener ${this.config.name} on ${hostPort(address.address, address.port)} is reachable from your network (allow ${this.config.allow.join(' ')}; username/password required); bind 127.0.0.1 unless that is intended`,
      );
    }
    this.emit('listening', address);
    return address;
  }

  private report(text: string, key = text): void {
    if (this.repeats.first(key)) this.log.warn(text);
    else this.log.debug(`${text} (repeated)`);
  }

  private onConnection(socket: Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    this.counters.connectionsAccepted++;
    this.counters.connectionsActive++;
    this.sockets.add(socket);
    socket.setNoDelay(true);
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    let failure: string | undefined;
    socket.on('error', (err) => {
      failure ??= `client socket error: ${err.message}`;
    });
    socket.once('close', () => {
      this.sockets.delete(socket);
      this.counters.connectionsActive--;
      this.counters.closedBytesUp += socket.bytesRead;
      this.counters.closedBytesDown += socket.bytesWritten;
      if (failure !== undefined) this.log.debug(`connection from ${peer} closed: ${failure}`);
      this.emit('connectionClosed', failure);
    });
    const fail = (why: string): void => {
      failure ??= why;
    };
    void this.handshake(socket, fail).catch((err: unknown) => {
      // Never expected: each step handles its own errors. One connection, never the process.
      fail(`internal error: ${describeError(err)}`);
      socket.destroy();
    });
  }

  /** Read the request with a bound on time and bytes, then connect it. */
  private async handshake(socket: Socket, fail: (why: string) => void): Promise<void> {
    const timer = setTimeout(() => {
      this.counters.handshakeFailures++;
      fail(`no complete request within ${HANDSHAKE_TIMEOUT_MS} ms [PF_ERR_SOCKS_HANDSHAKE]`);
      socket.destroy();
    }, HANDSHAKE_TIMEOUT_MS);
    timer.unref();
    let socks: Socks5Handshake | undefined;
    let http: HttpConnectParser | undefined;
    const request = await new Promise<
      { dialect: Dialect; destination: SocksDestination; rest: Buffer } | undefined
    >((resolve) => {
      const finish = (
        value: { dialect: Dialect; destination: SocksDestination; rest: Buffer } | undefined,
      ): void => {
        socket.off('data', onData);
        socket.off('close', onClose);
        socket.off('end', onEnd);
        socket.pause();
        clearTimeout(timer);
        resolve(value);
      };
      const refuse = (reply: Buffer | undefined, message: string): void => {
        this.counters.handshakeFailures++;
        this.counters.connectionsFailed++;
        fail(`${message} [PF_ERR_SOCKS_HANDSHAKE]`);
        finish(undefined);
        if (reply && reply.length > 0) socket.end(reply);
        else socket.end();
        // The client gets a FIN after the reply; destroy once it is flushed, or at once if it does not read.
        socket.once('finish', () => socket.destroy());
        setTimeout(() => socket.destroy(), 1_000).unref();
      };
      const onData = (chunk: Buffer): void => {
        if (!socks && !http) {
          if (chunk[0] === SOCKS_VERSION) socks = new Socks5Handshake(this.credentials);
          else if (/^[A-Za-z]/.test(String.fromCharCode(chunk[0] ?? 0)))
            http = new HttpConnectParser(this.credentials);
          else {
            refuse(
              undefined,
              `first byte 0x${(chunk[0] ?? 0).toString(16)} is neither SOCKS5 (0x05) nor an HTTP method`,
            );
            return;
          }
        }
        if (socks) {
          const step = socks.feed(chunk);
          if (step.fail) return refuse(step.fail.reply, `SOCKS5: ${step.fail.message}`);
          if (step.write) socket.write(step.write);
          if (step.request)
            finish({ dialect: 'socks5', destination: step.request, rest: step.rest ?? Buffer.alloc(0) });
          return;
        }
        const result = http?.feed(chunk);
        if (!result) return;
        if ('refuse' in result) return refuse(result.refuse.response, `HTTP: ${result.refuse.message}`);
        finish({ dialect: 'http', destination: result.request.destination, rest: result.request.rest });
      };
      const onClose = (): void => {
        fail('client closed during the handshake');
        finish(undefined);
      };
      // EOF before a complete request: nothing more can come (allowHalfOpen would keep the socket open).
      const onEnd = (): void => {
        this.counters.handshakeFailures++;
        this.counters.connectionsFailed++;
        fail('client sent EOF before a complete request [PF_ERR_SOCKS_HANDSHAKE]');
        finish(undefined);
        socket.destroy();
      };
      socket.on('data', onData);
      socket.once('close', onClose);
      socket.once('end', onEnd);
      socket.resume();
    });
    if (!request || socket.destroyed) return;
    await this.connect(socket, request.dialect, request.destination, request.rest, fail);
  }

  /** Answer a failed CONNECT in the client's dialect, then close. */
  private refuseConnect(socket: Socket, dialect: Dialect, failure: Failure, text: string): void {
    this.counters.connectionsFailed++;
    if (socket.destroyed) return;
    const reply =
      dialect === 'socks5' ? encodeReply(SOCKS_REPLY[failure]) : httpResponse(HTTP_STATUS[failure], text);
    socket.end(reply);
    socket.once('finish', () => socket.destroy());
    setTimeout(() => socket.destroy(), 1_000).unref();
  }

  private async connect(
    socket: Socket,
    dialect: Dialect,
    destination: SocksDestination,
    rest: Buffer,
    fail: (why: string) => void,
  ): Promise<void> {
    const where = hostPort(destination.host, destination.port);
    if (!this.allow.allows(destination.host, destination.port)) {
      this.counters.notAllowed++;
      const text = `${where} is not in the allow list of ${this.config.name}`;
      fail(`${text} [PF_ERR_SOCKS_NOT_ALLOWED]`);
      this.report(
        `${dialect === 'socks5' ? 'SOCKS5' : 'HTTP'} CONNECT ${text}: ${describeReply(Reply.NotAllowed)} [PF_ERR_SOCKS_NOT_ALLOWED]`,
      );
      this.refuseConnect(socket, dialect, 'not-allowed', text);
      return;
    }
    const target = this.destinationFor(destination);
    if (!target) {
      this.counters.limitReached++;
      const text = `maxSessions (${this.config.maxSessions}) is reached: ${this.config.maxSessions} destinations have open connections; ${where} must wait until one closes (raise maxSessions for more)`;
      fail(`${text} [PF_ERR_SOCKS_LIMIT]`);
      this.report(`CONNECT ${where}: ${text} [PF_ERR_SOCKS_LIMIT]`, 'maxSessions');
      this.refuseConnect(socket, dialect, 'limit', text);
      return;
    }
    this.attach(target, socket);
    const abort = new AbortController();
    const onClose = (): void => abort.abort();
    socket.once('close', onClose);
    const onAbandon = (): void => abort.abort();
    this.abandoned.signal.addEventListener('abort', onAbandon, { once: true });
    const timer = setTimeout(() => abort.abort(), CONNECT_TIMEOUT_MS);
    timer.unref();
    let carrier: SocksCarrier;
    try {
      carrier = await target.keeper.acquire(abort.signal);
    } catch (err) {
      const timedOut = !socket.destroyed && abort.signal.aborted && !this.abandoned.signal.aborted;
      const text = timedOut
        ? `no stream to ${where} within ${CONNECT_TIMEOUT_MS} ms`
        : `no session for ${where}: ${describeError(err)}`;
      fail(text);
      if (!socket.destroyed) {
        this.report(`CONNECT ${where} via ${this.config.target}: ${text}`, describeError(err));
        this.refuseConnect(socket, dialect, timedOut ? 'timeout' : 'general', text);
      }
      return;
    } finally {
      clearTimeout(timer);
      socket.off('close', onClose);
      this.abandoned.signal.removeEventListener('abort', onAbandon);
    }
    if (socket.destroyed) {
      carrier.stream.destroy();
      return;
    }
    if (rest.length > 0) carrier.stream.write(rest);
    this.confirm(target, socket, dialect, carrier, fail);
  }

  /**
   * Reply success once the destination is known to be connected (see the module comment), then relay.
   * Data arriving during the wait is held (one chunk at most: the stream is paused on the first) and
   * written after the reply.
   */
  private confirm(
    target: Destination,
    socket: Socket,
    dialect: Dialect,
    carrier: SocksCarrier,
    fail: (why: string) => void,
  ): void {
    const stream = carrier.stream;
    const where = hostPort(target.host, target.port);
    const success = (): Buffer => (dialect === 'socks5' ? encodeReply(Reply.Succeeded) : httpResponse(200));
    if (target.confirmed) {
      socket.write(success());
      this.relay(target, socket, carrier, fail);
      return;
    }
    let settled = false;
    let grace: NodeJS.Timeout | undefined;
    const cleanup = (): void => {
      settled = true;
      clearTimeout(timer);
      clearTimeout(grace);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      socket.off('close', onClientClose);
    };
    const onData = (chunk: Buffer): void => {
      if (settled) return;
      cleanup();
      stream.pause();
      target.confirmed = true;
      socket.write(success());
      socket.write(chunk);
      this.relay(target, socket, carrier, fail);
    };
    const onEnd = (): void => {
      if (settled) return;
      cleanup();
      if (carrier.takeDestinationRefusal()) {
        this.counters.refused++;
        const text = `the agent could not connect to ${where} (ConnectToPortError): connection refused or unreachable from ${this.config.target}`;
        fail(text);
        this.report(`CONNECT ${where}: ${text}: ${describeReply(Reply.ConnectionRefused)}`);
        this.refuseConnect(socket, dialect, 'refused', text);
        return;
      }
      // Accepted and closed at once, with nothing to say: a success, then the close.
      target.confirmed = true;
      socket.end(success());
    };
    const onError = (err: Error): void => {
      if (settled) return;
      cleanup();
      const text = `stream to ${where} failed: ${describeError(err)}`;
      fail(text);
      this.refuseConnect(socket, dialect, 'general', text);
    };
    const onClientClose = (): void => {
      if (settled) return;
      cleanup();
      stream.destroy();
    };
    // No FIN within the wait: connected. Nothing is paired with a FIN after this (see relay()).
    const onConnected = (): void => {
      if (settled) return;
      cleanup();
      target.confirmed = true;
      socket.write(success());
      this.relay(target, socket, carrier, fail);
    };
    const timer = setTimeout(onConnected, CONFIRM_WAIT_MS);
    carrier.opened().then(
      () => {
        if (!settled) grace = setTimeout(onConnected, CONFIRM_GRACE_MS);
      },
      // The stream closed first: its 'end' or 'error' above answers the client.
      () => undefined,
    );
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('error', onError);
    socket.once('close', onClientClose);
  }

  /**
   * Pipe both ways with backpressure (pipe pauses the source while the other side is full) and the
   * half-close rules of forward.ts: the client's EOF reaches the agent as a FIN only after the destination
   * ends or `halfCloseLingerMs` of silence (smux v1 has no half-close, spec §9.4).
   */
  private relay(
    target: Destination,
    socket: Socket,
    carrier: SocksCarrier,
    fail: (why: string) => void,
  ): void {
    const stream = carrier.stream;
    const where = hostPort(target.host, target.port);
    // bytesWritten counts queued writes too: nothing added past the reply means no byte came from the agent.
    const writtenBefore = socket.bytesWritten;
    socket.pipe(stream, { end: false });
    stream.pipe(socket);
    socket.once('end', () => lingerHalfClose(stream, this.config.halfCloseLingerMs));
    stream.once('end', () => {
      if (socket.bytesWritten === writtenBefore && carrier.takeDestinationRefusal()) {
        // Answered success already (a confirmed destination): the next connection waits for the truth again.
        target.confirmed = false;
        this.counters.refused++;
        fail(`the agent could not connect to ${where} (ConnectToPortError)`);
      }
      closeAfterFlush(socket, stream);
    });
    stream.once('error', (err: Error) => {
      fail(`stream to ${where} reset: ${describeError(err)}`);
      if (!socket.destroyed) socket.resetAndDestroy();
    });
    stream.once('close', () => {
      if (!socket.destroyed && !socket.writableEnded) socket.end();
    });
    socket.once('close', () => {
      if (!stream.destroyed) stream.destroy();
    });
    // A stream the session's send budget holds says so in writableNeedDrain; pipe() then left the socket
    // paused, and resumes it on the stream's 'drain' (src/mux/send-budget.ts).
    if (!stream.writableNeedDrain) socket.resume();
  }

  /**
   * The destination record for `host:port`, creating its keeper when new. At `maxSessions` destinations,
   * the one idle longest (no connection) is stopped to make room; undefined when every one is busy.
   */
  private destinationFor(destination: SocksDestination): Destination | undefined {
    const canon = canonicalHost(destination.host);
    const host = canon.kind === 'name' ? canon.name : canon.address;
    const key = hostPort(host, destination.port);
    const existing = this.destinations.get(key);
    if (existing) return existing;
    if (this.destinations.size >= this.config.maxSessions) {
      let idlest: Destination | undefined;
      for (const d of this.destinations.values()) {
        if (d.connections.size === 0 && (!idlest || d.lastUsedMs < idlest.lastUsedMs)) idlest = d;
      }
      if (!idlest) return undefined;
      this.log.debug(
        `maxSessions (${this.config.maxSessions}) reached: stopping idle destination ${idlest.key}`,
      );
      this.drop(idlest);
    }
    const spec: SessionSpec = {
      name: `${this.config.name}→${key}`,
      target: this.config.target,
      remotePort: destination.port,
      eager: false,
      // This front end stops a destination's keeper when it is idle (see scheduleIdleStop).
      idleStopMs: 0,
      sessions: 1,
      keepAlive: this.config.keepAlive,
      allowInsecureEndpoint: this.config.allowInsecureEndpoint,
    };
    // Loopback destinations go through the plain document (documentFor in src/config/types.ts).
    if (!isLoopbackHost(host)) spec.host = host;
    for (const k of ['pick', 'region', 'profile', 'endpoint', 'ecsEndpoint', 'reason'] as const) {
      const value = this.config[k];
      if (value !== undefined) (spec as Record<string, unknown>)[k] = value;
    }
    const created: Destination = {
      key,
      host,
      port: destination.port,
      spec,
      keeper: this.deps.keeperFor(spec),
      connections: new Set(),
      connectionsTotal: 0,
      confirmed: false,
      idleTimer: undefined,
      lastUsedMs: performance.now(),
    };
    this.destinations.set(key, created);
    this.log.debug(`new destination ${key} (${documentFor(spec)})`);
    this.emit('destination', key);
    return created;
  }

  /** Count `socket` on `target` until it closes; the last close arms the idle stop. */
  private attach(target: Destination, socket: Socket): void {
    clearTimeout(target.idleTimer);
    target.idleTimer = undefined;
    target.connections.add(socket);
    target.connectionsTotal++;
    target.lastUsedMs = performance.now();
    socket.once('close', () => {
      target.connections.delete(socket);
      target.lastUsedMs = performance.now();
      if (target.connections.size === 0) this.scheduleIdleStop(target);
    });
  }

  private scheduleIdleStop(target: Destination): void {
    if (this.stopping || this.config.idleStopMs <= 0 || this.destinations.get(target.key) !== target) return;
    target.idleTimer = setTimeout(() => {
      if (target.connections.size > 0) return;
      this.log.debug(
        `no connections to ${target.key} for ${this.config.idleStopMs} ms; stopping its session`,
      );
      this.drop(target);
    }, this.config.idleStopMs);
    target.idleTimer.unref();
  }

  /** Forget a destination and stop its keeper (it has no connections). */
  private drop(target: Destination): void {
    clearTimeout(target.idleTimer);
    this.destinations.delete(target.key);
    target.keeper
      .stop(0)
      .catch((err: unknown) => this.log.debug(`stopping ${target.key}: ${describeError(err)}`));
  }

  /**
   * Give the listener to the server that replaces this one (reload): this one stops accepting at once and
   * keeps draining its own connections. Undefined when it has no listener.
   */
  handOverListener(): net.Server | undefined {
    const server = this.server;
    if (!server) return undefined;
    this.server = undefined;
    this.listening = false;
    return detachListener(server, this.acceptListener, this.serverErrorListener);
  }

  /**
   * Stop accepting now and free the port (a reload about to bind it again); open connections keep running
   * until {@link stop}.
   */
  async stopAccepting(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    this.listening = false;
    await closeListenerNow(server, this.acceptListener);
  }

  /**
   * Stop accepting, let open connections finish for up to `graceMs`, then reset the rest and stop every
   * destination's keeper. Idempotent.
   */
  stop(graceMs: number): Promise<void> {
    this.stopPromise ??= this.stopOnce(graceMs);
    return this.stopPromise;
  }

  /** Give up waiting: reset connections and abandon every keeper. */
  abandon(): void {
    this.stopping = true;
    this.abandoned.abort();
    for (const socket of this.sockets) socket.destroy();
    for (const d of this.destinations.values()) d.keeper.abandon();
  }

  private async stopOnce(graceMs: number): Promise<void> {
    this.stopping = true;
    this.listening = false;
    const server = this.server;
    this.server = undefined;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    for (const d of this.destinations.values()) clearTimeout(d.idleTimer);
    if (this.sockets.size > 0 && graceMs > 0) {
      this.log.info(`draining ${this.sockets.size} connection(s) for up to ${graceMs} ms`);
      await this.bounded(
        new Promise<void>((resolve) => {
          const check = (): void => {
            if (this.sockets.size === 0) resolve();
          };
          for (const socket of this.sockets) socket.once('close', check);
          check();
        }),
        graceMs,
      );
    }
    for (const socket of this.sockets) socket.destroy();
    const keepers = [...this.destinations.values()].map((d) => d.keeper);
    this.destinations.clear();
    await this.bounded(Promise.all(keepers.map((k) => k.stop(0).catch(() => undefined))));
    await this.bounded(closed);
  }

  /** `promise`, or undefined once `ms` pass or the listener is abandoned. */
  private async bounded<T>(promise: Promise<T>, ms = Infinity): Promise<T | undefined> {
    return boundedWait(promise, this.abandoned.signal, ms);
  }
}
