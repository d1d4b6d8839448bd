/**
 * A forward: one local TCP listener, the front end of a {@link SessionKeeper} (docs/architecture.md, "The
 * forward layer"). It accepts connections, asks the keeper for a {@link Carrier} for each and pipes the
 * socket to the carrier's stream, the same way in mux and basic mode; it counts connections and bytes.
 * Starting, sharing, striping, backing off and idle-stopping sessions is the keeper's (`keeper.ts`).
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import type { ForwardConfig, TuningConfig } from '../config/types.js';
import { documentFor } from '../config/types.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { boundedWait } from './backoff.js';
import { closeListenerNow, detachListener, listenOn } from './listen.js';
import { closeAfterFlush, corkPerTick, lingerHalfClose } from './local-socket.js';
import { SessionKeeper } from './keeper.js';
import type { Carrier, KeeperDeps } from './keeper.js';
import type { TunnelSession } from './session.js';
import { frontEndBytes, hostPort } from '../stats.js';
import type { ForwardStats } from '../stats.js';

export { EAGER_RETRY_BACKOFF, SESSION_HEALTHY_AFTER_MS } from './keeper.js';

/** Why a local connection's wait for a session ends when it closes first (the abort reason, one shared object). */
const LOCAL_SOCKET_CLOSED = new Error('the local connection closed');

/** What a forward needs from outside: what its keeper needs (`KeeperDeps`, `src/forward/keeper.ts`). */
export type ForwardDeps = KeeperDeps;

/** One local connection's record, for its close line. */
interface ConnectionRecord {
  peer: string;
  /** performance.now() at accept, ms. */
  openedAt: number;
  /** Why it failed (set at most once); undefined = it ended normally. */
  failure?: string;
}

/**
 * The listener's own counters, incremented where the event already happens (never per chunk). `bytesUp`
 * and `bytesDown` hold the `bytesRead`/`bytesWritten` of local sockets that have closed; {@link Forward.stats}
 * adds the open ones.
 */
type ListenerCounters = Pick<
  ForwardStats,
  | 'connectionsAccepted'
  | 'connectionsActive'
  | 'connectionsOk'
  | 'connectionsFailed'
  | 'bytesUp'
  | 'bytesDown'
>;

/**
 * Runs one forward.
 * Events: 'listening' (AddressInfo), 'sessionGranted' (TunnelSession: StartSession returned, not open yet),
 * 'session' (TunnelSession, open), 'connectionAssigned' (TunnelSession: a local connection was given to it),
 * 'connectionClosed' (failure text | undefined: a local connection closed).
 */
export class Forward extends EventEmitter {
  private server: net.Server | undefined;
  /** The session keeper; created at start(), once the bound port (StartSession's localPortNumber) is known. */
  private keeperValue: SessionKeeper | undefined;
  private stopPromise: Promise<void> | undefined;
  /** Aborted by {@link abandon}: every wait of stop() ends at once. */
  private readonly abandoned = new AbortController();
  private readonly acceptListener = (socket: Socket): void => this.onConnection(socket);
  private readonly serverErrorListener = (err: Error): void =>
    this.log.error(`listener error: ${err.message}`);
  private readonly sockets = new Set<Socket>();
  private stopping = false;
  private listening = false;
  /** Local sockets already counted in `connectionsFailed` (so their close is not counted as ok). */
  private readonly failedSockets = new WeakSet<Socket>();
  private readonly counters: ListenerCounters = {
    connectionsAccepted: 0,
    connectionsActive: 0,
    connectionsOk: 0,
    connectionsFailed: 0,
    bytesUp: 0,
    bytesDown: 0,
  };

  constructor(
    readonly config: ForwardConfig,
    private readonly tuning: TuningConfig,
    private readonly deps: ForwardDeps,
  ) {
    super();
  }

  private get log(): Logger {
    return this.deps.logger;
  }

  /** The keeper of this forward's sessions (undefined before start()). */
  get keeper(): SessionKeeper | undefined {
    return this.keeperValue;
  }

  /** The bound address once listening. */
  get address(): AddressInfo | undefined {
    const address = this.server?.address();
    return address && typeof address === 'object' ? address : undefined;
  }

  /** The oldest live session, if any. */
  get currentSession(): TunnelSession | undefined {
    return this.keeperValue?.currentSessions[0];
  }

  /** Every live session (open or reconnecting), oldest first. */
  get currentSessions(): readonly TunnelSession[] {
    return this.keeperValue?.currentSessions ?? [];
  }

  /** Local connections `session` carries now (in basic mode: the one relayed plus those queued). */
  connectionsOn(session: TunnelSession): number {
    return this.keeperValue?.connectionsOn(session) ?? 0;
  }

  /**
   * The forward's branch of the stats tree (`src/stats.ts`), a fresh snapshot per read. Bytes are the
   * sockets' own `bytesRead`/`bytesWritten` (closed sockets summed at close, open ones read now), so the
   * data path carries no counting code of its own; sessions and their counters come from the keeper.
   */
  get stats(): ForwardStats {
    const c = this.counters;
    const { bytesUp, bytesDown } = frontEndBytes(this.sockets, c.bytesUp, c.bytesDown);
    const keeper = this.keeperValue;
    const totals = keeper?.totals ?? {
      sessionsStarted: 0,
      sessionsEnded: 0,
      reconnects: 0,
      resentMessages: 0,
    };
    const address = this.address;
    return {
      name: this.config.name,
      bind: this.config.bind,
      localPort: address?.port ?? this.config.localPort,
      listen: address ? hostPort(address.address, address.port) : null,
      target: this.config.target,
      host: this.config.host ?? 'localhost',
      remotePort: this.config.remotePort,
      document: documentFor(this.config),
      state: this.listening ? 'listening' : this.stopping ? 'stopped' : 'starting',
      error: null,
      connectionsAccepted: c.connectionsAccepted,
      connectionsActive: c.connectionsActive,
      connectionsOk: c.connectionsOk,
      connectionsFailed: c.connectionsFailed,
      ...totals,
      bytesUp,
      bytesDown,
      sessions: keeper?.stats ?? [],
    };
  }

  /** Count a local connection as failed, once. */
  private connectionFailed(socket: Socket): void {
    if (this.failedSockets.has(socket)) return;
    this.failedSockets.add(socket);
    this.counters.connectionsFailed++;
  }

  /**
   * Open the listener (and the session, when eager), or take over `adopt`, a listener already bound to this
   * forward's address by the forward this one replaces on reload, so the port never refuses connections.
   * @throws TunnelError `PF_ERR_LISTEN` naming the address and the fix.
   */
  async start(adopt?: net.Server): Promise<AddressInfo> {
    const server = adopt ?? net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
    this.server = server;
    if (!adopt) {
      try {
        await listenOn(server, this.config.localPort, this.config.bind, {
          port: 'another --local-port',
          bind: '--bind',
        });
      } catch (err) {
        this.server = undefined;
        throw err;
      }
    }
    server.on('connection', this.acceptListener);
    server.on('error', this.serverErrorListener);
    const address = this.address as AddressInfo;
    // StartSession names the bound port (localPortNumber), so the keeper is made once it is known.
    const keeper = new SessionKeeper(this.config, this.tuning, this.deps, address.port);
    for (const event of ['sessionGranted', 'session', 'connectionAssigned'] as const) {
      keeper.on(event, (session: TunnelSession) => this.emit(event, session));
    }
    this.keeperValue = keeper;
    this.listening = true;
    this.log.info(
      `listening on ${address.address}:${address.port} → ${this.config.host ?? 'localhost'}:${this.config.remotePort} via ${this.config.target}${adopt ? ' (listener taken over from the previous configuration)' : ''}`,
    );
    this.emit('listening', address);
    keeper.start();
    return address;
  }

  /**
   * Give the listener to the forward that replaces this one (reload): this forward stops accepting at once
   * and keeps draining its own connections. Undefined when it has no listener.
   */
  handOverListener(): net.Server | undefined {
    const server = this.server;
    if (!server) return undefined;
    this.server = undefined;
    return detachListener(server, this.acceptListener, this.serverErrorListener);
  }

  /**
   * Stop accepting now and free the port (a reload about to bind a colliding address); open connections
   * keep running until {@link stop}. Resolves once the listening socket is closed.
   */
  async stopAccepting(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await closeListenerNow(server, this.acceptListener);
  }

  private onConnection(socket: Socket): void {
    const keeper = this.keeperValue;
    if (this.stopping || !keeper) {
      socket.destroy();
      return;
    }
    this.counters.connectionsAccepted++;
    this.counters.connectionsActive++;
    this.sockets.add(socket);
    const conn: ConnectionRecord = {
      peer: `${socket.remoteAddress}:${socket.remotePort}`,
      openedAt: performance.now(),
    };
    // Closing the socket while it waits for a session takes it out of the keeper's queue.
    const gone = new AbortController();
    socket.setNoDelay(true);
    socket.on('error', (err) => {
      conn.failure ??= `local socket error: ${err.message}`;
    });
    socket.once('close', () => {
      // A reason of our own: abort() without one builds a DOMException and its stack on every close (issue 16).
      gone.abort(LOCAL_SOCKET_CLOSED);
      this.sockets.delete(socket);
      this.counters.connectionsActive--;
      this.counters.bytesUp += socket.bytesRead;
      this.counters.bytesDown += socket.bytesWritten;
      if (!this.failedSockets.has(socket)) this.counters.connectionsOk++;
      this.logClose(conn, socket);
      this.emit('connectionClosed', conn.failure);
    });
    keeper.acquire(gone.signal).then(
      (carrier) => this.attach(socket, carrier, conn),
      (err: unknown) => {
        if (socket.destroyed) return; // closed while waiting
        this.connectionFailed(socket);
        conn.failure ??= describeError(err);
        socket.destroy();
      },
    );
  }

  /** The one line a local connection leaves: debug when it ended normally, warn when it failed. */
  private logClose(conn: ConnectionRecord, socket: Socket): void {
    const ms = Math.round(performance.now() - conn.openedAt);
    const what = `connection from ${conn.peer} closed after ${ms} ms, ${socket.bytesRead} bytes up, ${socket.bytesWritten} bytes down`;
    if (conn.failure === undefined) this.log.debug(what);
    else if (this.keeperValue) this.keeperValue.report('warn', `${what}: ${conn.failure}`, conn.failure);
    else this.log.warn(`${what}: ${conn.failure}`);
  }

  /** Pipe `socket` ⇄ the carrier's stream (both modes alike), with the half-close and refusal rules. */
  private attach(socket: Socket, carrier: Carrier, conn: ConnectionRecord): void {
    const stream = carrier.stream;
    if (socket.destroyed) {
      stream.destroy();
      return;
    }
    if (this.log.debugEnabled) {
      this.log.debug(
        `connection from ${conn.peer} on ${carrier.label} of session ${carrier.session.sessionId}`,
      );
    }
    // Registered before pipe(): the cork is in place before pipe writes the chunk (src/forward/local-socket.ts).
    const holdWrites = corkPerTick(socket);
    stream.on('data', holdWrites);
    // pipe() gives backpressure both ways: a slow local reader pauses the stream, a full stream pauses the
    // socket. The local EOF is not passed on at once: see lingerHalfClose() in local-socket.ts.
    socket.pipe(stream, { end: false });
    stream.pipe(socket);
    socket.once('end', () => lingerHalfClose(stream, this.config.halfCloseLingerMs));
    stream.once('end', () => {
      // ConnectToPortError does not name its stream (spec §9.4): pair it with the next end of a stream
      // that never received data (pipe() has written everything the stream delivered to the socket).
      if (socket.bytesWritten === 0 && carrier.takeDestinationRefusal()) {
        this.connectionFailed(socket);
        conn.failure ??= `the agent could not reach ${this.config.host ?? 'localhost'}:${this.config.remotePort}`;
      }
      closeAfterFlush(socket, stream);
    });
    stream.once('error', (err: Error) => {
      conn.failure ??= `${carrier.label} reset: ${describeError(err)}`;
      // The session is gone: reset the local connection rather than pretend a clean end.
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

  /** Local connections open now. */
  get connectionCount(): number {
    return this.sockets.size;
  }

  /**
   * Stop accepting, let open connections finish for up to `graceMs` (a session start they wait for is
   * aborted: nothing flows through a session that is not open yet), then reset the rest and end the
   * sessions (TerminateSession). Idempotent: every call shares one stop. {@link abandon} ends every wait
   * at once.
   */
  stop(graceMs: number): Promise<void> {
    this.stopPromise ??= this.stopOnce(graceMs);
    return this.stopPromise;
  }

  /**
   * Give up waiting (the daemon's stop deadline passed): reset the connections, close the sessions without
   * waiting for them, and let a pending {@link stop} resolve now.
   */
  abandon(): void {
    this.stopping = true;
    this.abandoned.abort();
    for (const socket of this.sockets) socket.destroy();
    this.keeperValue?.abandon();
  }

  /** `promise`, or undefined once `ms` pass or the forward is abandoned, whichever comes first. */
  private async bounded<T>(promise: Promise<T>, ms = Infinity): Promise<T | undefined> {
    return boundedWait(promise, this.abandoned.signal, ms);
  }

  private async stopOnce(graceMs: number): Promise<void> {
    this.stopping = true;
    this.listening = false;
    // The keeper fails waiting connections and aborts starts now, and closes its sessions once the carriers
    // are released (the sockets below drain or are reset) or its own grace ends.
    const keeperStopped = this.keeperValue?.stop(graceMs) ?? Promise.resolve();
    const server = this.server;
    this.server = undefined;
    server?.off('connection', this.acceptListener);
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    if (this.sockets.size > 0 && graceMs > 0) {
      this.log.info(`draining ${this.sockets.size} connection(s) for up to ${graceMs} ms`);
      const drained = new Promise<void>((resolve) => {
        const check = (): void => {
          if (this.sockets.size === 0) resolve();
        };
        for (const socket of this.sockets) socket.once('close', check);
        check();
      });
      await this.bounded(drained, graceMs);
    }
    for (const socket of this.sockets) socket.destroy();
    await this.bounded(keeperStopped);
    await this.bounded(closed);
  }
}
