/**
 * A forward: one local TCP listener whose accepted connections travel through up to `sessions` SSM
 * sessions (spec §9; striping, issue 12). A session starts lazily on the first connection (or eagerly), is
 * shared by later ones, is terminated after an idle period with no connections, and is replaced
 * transparently when it ends. A new connection goes to the open session with the fewest connections;
 * another session starts only when every one already carries a connection, one start at a time.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ForwardConfig, TuningConfig } from '../config/types.js';
import { documentFor } from '../config/types.js';
import { TunnelError, describeError, isPfError } from '../errors.js';
import { RepeatFilter, withLateField } from '../log.js';
import type { Logger } from '../log.js';
import type { SsmApi } from '../ssm/types.js';
import type { ForwardTargets } from '../targets/resolve.js';
import { SpillStore } from '../mux/spill.js';
import { API_BACKOFF, backoffDelayMs, delay } from './backoff.js';
import type { BackoffPolicy } from './backoff.js';
import { corkPerTick } from './local-socket.js';
import { TunnelSession } from './session.js';
import type { SessionEndReason } from './session.js';
import { formatDuration, hostPort } from '../stats.js';
import type { ForwardStats } from '../stats.js';

/**
 * A session that ends (other than by us) sooner than this after opening counts as a failed start for the
 * restart backoff, so a target that keeps ending sessions is not hammered with StartSession, ms (our default).
 */
export const SESSION_HEALTHY_AFTER_MS = 10_000;

/**
 * Retries of an eager forward's session start when nobody is waiting for it: 1 s, ×2, capped at 60 s
 * (our default). Gentler than {@link API_BACKOFF}, which paces starts a local connection waits for: a
 * target that is down is not asked every few seconds for hours.
 */
export const EAGER_RETRY_BACKOFF: BackoffPolicy = { initialMs: 1_000, maxMs: 60_000, factor: 2 };

/** What a forward needs from outside. */
export interface ForwardDeps {
  ssm: SsmApi;
  logger: Logger;
  userAgent: string;
  /** Resolves the forward's target at each session start; absent: the target is used as it is. */
  targets?: ForwardTargets;
  /**
   * Spill store for slow local readers, shared daemon-wide (the daemon passes one to every forward). Unset =
   * a store of this forward's own under `os.tmpdir()` with `tuning.spillLimitBytes`.
   */
  spill?: SpillStore;
  /**
   * Failures already reported (shared across forwards by the daemon, which also feeds it the start-up
   * checks): a repeat is logged at debug. Default: one filter per forward.
   */
  repeats?: RepeatFilter;
}

/** One local connection's record, for its close line. */
interface ConnectionRecord {
  peer: string;
  /** performance.now() at accept, ms. */
  openedAt: number;
  /** Why it failed (set at most once); undefined = it ended normally. */
  failure?: string;
}

/** Plain counters of one forward, incremented where the event already happens (never per chunk). */
interface ForwardCounters {
  connectionsAccepted: number;
  connectionsActive: number;
  connectionsOk: number;
  connectionsFailed: number;
  sessionsStarted: number;
  sessionsEnded: number;
  /** Reconnects of sessions that have ended (live ones are added from their own counter). */
  endedReconnects: number;
  /** Resends of sessions that have ended. */
  endedResentMessages: number;
  /** `bytesRead` of local sockets that have closed, bytes. */
  closedBytesUp: number;
  /** `bytesWritten` of local sockets that have closed, bytes. */
  closedBytesDown: number;
}

/**
 * Runs one forward.
 * Events: 'listening' (AddressInfo), 'sessionGranted' (TunnelSession: StartSession returned, not open yet),
 * 'session' (TunnelSession, open), 'connectionAssigned' (TunnelSession: a local connection was given to it),
 * 'connectionClosed' (failure text | undefined: a local connection closed).
 */
export class Forward extends EventEmitter {
  private server: net.Server | undefined;
  /** Live sessions (open or reconnecting), at most `config.sessions`, oldest first. */
  private readonly sessions: TunnelSession[] = [];
  /**
   * The session each local socket rides; `null` while it waits for the start in flight. The per-session load
   * is counted from this map when needed, never kept in step by hand.
   */
  private readonly carriers = new Map<Socket, TunnelSession | null>();
  /** Idle-stop timers of sessions that carry no connection. */
  private readonly idleTimers = new Map<TunnelSession, NodeJS.Timeout>();
  /** The one session start in flight (no storm of starts: later connections wait for it or use an open one). */
  private sessionStarting: Promise<TunnelSession> | undefined;
  /** The session whose start() is in flight, so a stop can close it. */
  private startingSession: TunnelSession | undefined;
  /** Eager and not fallen back to lazy after the service closed an idle session. */
  private eagerActive: boolean;
  private stopPromise: Promise<void> | undefined;
  /** Aborted by {@link abandon}: every wait of stop() ends at once. */
  private readonly abandoned = new AbortController();
  private readonly repeats: RepeatFilter;
  private readonly acceptListener = (socket: Socket): void => this.onConnection(socket);
  private readonly serverErrorListener = (err: Error): void =>
    this.log.error(`listener error: ${err.message}`);
  private readonly sockets = new Set<Socket>();
  private consecutiveFailures = 0;
  private notBeforeMs = 0;
  private stopping = false;
  private readonly stopSignal = new AbortController();
  private boundPort = 0;
  private readonly spill: SpillStore;
  private listening = false;
  /** Local sockets already counted in `connectionsFailed` (so their close is not counted as ok). */
  private readonly failedSockets = new WeakSet<Socket>();
  private readonly counters: ForwardCounters = {
    connectionsAccepted: 0,
    connectionsActive: 0,
    connectionsOk: 0,
    connectionsFailed: 0,
    sessionsStarted: 0,
    sessionsEnded: 0,
    endedReconnects: 0,
    endedResentMessages: 0,
    closedBytesUp: 0,
    closedBytesDown: 0,
  };

  constructor(
    readonly config: ForwardConfig,
    private readonly tuning: TuningConfig,
    private readonly deps: ForwardDeps,
  ) {
    super();
    this.spill = deps.spill ?? new SpillStore({ directory: os.tmpdir(), limitBytes: tuning.spillLimitBytes });
    this.eagerActive = config.eager;
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

  /** The oldest live session, if any. */
  get currentSession(): TunnelSession | undefined {
    return this.sessions[0];
  }

  /** Every live session (open or reconnecting), oldest first. */
  get currentSessions(): readonly TunnelSession[] {
    return [...this.sessions];
  }

  /** Local connections `session` carries now (in basic mode: the one relayed plus those queued). */
  connectionsOn(session: TunnelSession): number {
    let count = 0;
    for (const carrier of this.carriers.values()) if (carrier === session) count++;
    return count;
  }

  /**
   * The forward's branch of the stats tree (`src/stats.ts`), a fresh snapshot per read. Bytes are the
   * sockets' own `bytesRead`/`bytesWritten` (closed sockets summed at close, open ones read now), so the
   * data path carries no counting code of its own.
   */
  get stats(): ForwardStats {
    const c = this.counters;
    let bytesUp = c.closedBytesUp;
    let bytesDown = c.closedBytesDown;
    for (const socket of this.sockets) {
      bytesUp += socket.bytesRead;
      bytesDown += socket.bytesWritten;
    }
    const sessions = this.sessions.map((session) => ({
      ...session.stats,
      connections: this.connectionsOn(session),
    }));
    let reconnects = c.endedReconnects;
    let resentMessages = c.endedResentMessages;
    for (const session of sessions) {
      reconnects += session.reconnects;
      resentMessages += session.resentMessages;
    }
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
      sessionsStarted: c.sessionsStarted,
      sessionsEnded: c.sessionsEnded,
      reconnects,
      resentMessages,
      bytesUp,
      bytesDown,
      sessions,
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
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err: NodeJS.ErrnoException) => {
          const where = `${this.config.bind}:${this.config.localPort}`;
          const hint =
            err.code === 'EADDRINUSE'
              ? 'another process holds it; choose another --local-port or stop that process'
              : err.code === 'EACCES'
                ? 'ports below 1024 need privileges; choose a port >= 1024'
                : err.code === 'EADDRNOTAVAIL'
                  ? 'that address is not on this machine; check --bind'
                  : err.message;
          this.server = undefined;
          reject(new TunnelError('PF_ERR_LISTEN', `cannot listen on ${where}: ${hint}`, { cause: err }));
        });
        server.listen(this.config.localPort, this.config.bind, () => resolve());
      });
    }
    server.on('connection', this.acceptListener);
    server.on('error', this.serverErrorListener);
    const address = this.address as AddressInfo;
    this.boundPort = address.port;
    this.listening = true;
    this.log.info(
      `listening on ${address.address}:${address.port} → ${this.config.host ?? 'localhost'}:${this.config.remotePort} via ${this.config.target}${adopt ? ' (listener taken over from the previous configuration)' : ''}`,
    );
    this.emit('listening', address);
    if (this.config.eager) this.startEager();
    return address;
  }

  /**
   * Give the listener to the forward that replaces this one (reload): this forward stops accepting at once
   * and keeps draining its own connections. Undefined when it has no listener.
   */
  handOverListener(): net.Server | undefined {
    const server = this.server;
    if (!server) return undefined;
    server.off('connection', this.acceptListener);
    server.off('error', this.serverErrorListener);
    this.server = undefined;
    return server;
  }

  /**
   * Stop accepting now and free the port (a reload about to bind a colliding address); open connections
   * keep running until {@link stop}. Resolves once the listening socket is closed.
   */
  async stopAccepting(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.off('connection', this.acceptListener);
    // close() drops the listening handle now; its callback waits for connections, so wait one turn instead.
    server.close();
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** Report a failure at `level`, or at debug when the same text was reported already. */
  private report(level: 'warn' | 'error', text: string, key = text): void {
    if (this.repeats.first(key)) this.log[level](text);
    else this.log.debug(`${text} (repeated)`);
  }

  /**
   * Start the session of an eager forward; a failed start is retried with {@link EAGER_RETRY_BACKOFF}
   * until it succeeds, the forward stops, or a local connection takes over.
   */
  private startEager(): void {
    if (!this.eagerActive || this.stopping) return;
    this.ensureSession().catch((err: unknown) => {
      if (this.stopping) return;
      const retryMs = backoffDelayMs(EAGER_RETRY_BACKOFF, Math.max(0, this.consecutiveFailures - 1));
      this.notBeforeMs = Math.max(this.notBeforeMs, Date.now() + retryMs);
      this.report(
        'warn',
        `eager session start failed: ${describeError(err)}; retrying with backoff`,
        describeError(err),
      );
      this.startEager();
    });
  }

  private onConnection(socket: Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    this.counters.connectionsAccepted++;
    this.counters.connectionsActive++;
    this.sockets.add(socket);
    if (this.config.eager && !this.eagerActive) {
      this.eagerActive = true;
      this.log.info('local connection: eager again (a session stays open from now on)');
    }
    const conn: ConnectionRecord = {
      peer: `${socket.remoteAddress}:${socket.remotePort}`,
      openedAt: performance.now(),
    };
    socket.setNoDelay(true);
    socket.on('error', (err) => {
      conn.failure ??= `local socket error: ${err.message}`;
    });
    socket.once('close', () => {
      this.sockets.delete(socket);
      const carrier = this.carriers.get(socket);
      this.carriers.delete(socket);
      this.counters.connectionsActive--;
      this.counters.closedBytesUp += socket.bytesRead;
      this.counters.closedBytesDown += socket.bytesWritten;
      if (!this.failedSockets.has(socket)) this.counters.connectionsOk++;
      this.logClose(conn, socket);
      if (carrier) this.scheduleIdleStop(carrier);
      this.emit('connectionClosed', conn.failure);
    });
    this.carriers.set(socket, null);
    this.sessionFor().then(
      (session) => {
        if (!this.carriers.has(socket)) return; // closed while waiting
        this.carriers.set(socket, session);
        this.cancelIdleStop(session);
        this.emit('connectionAssigned', session);
        this.attach(socket, session, conn);
      },
      (err: unknown) => {
        this.carriers.delete(socket);
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
    else this.report('warn', `${what}: ${conn.failure}`, conn.failure);
  }

  private attach(socket: Socket, session: TunnelSession, conn: ConnectionRecord): void {
    if (socket.destroyed) return;
    if (session.mode === 'basic') {
      this.log.debug(`connection from ${conn.peer} queued on session ${session.sessionId} (basic mode)`);
      session.basicRelay?.attach(socket);
      return;
    }
    let stream: Duplex;
    try {
      stream = session.openStream();
    } catch (err) {
      this.connectionFailed(socket);
      conn.failure ??= describeError(err);
      socket.destroy();
      return;
    }
    const id = (stream as Duplex & { id?: number }).id;
    if (this.log.debugEnabled) this.log.debug(`connection from ${conn.peer} on stream ${id}`);
    // Registered before pipe(): the cork is in place before pipe writes the chunk (src/forward/local-socket.ts).
    const holdWrites = corkPerTick(socket);
    stream.on('data', holdWrites);
    // pipe() gives backpressure both ways: a slow local reader pauses the stream, a full stream pauses the
    // socket. The local EOF is not passed on at once: see halfClose().
    socket.pipe(stream, { end: false });
    stream.pipe(socket);
    socket.once('end', () => this.halfClose(stream));
    stream.once('end', () => {
      // ConnectToPortError does not name its stream (spec §9.4): pair it with the next FIN of a stream
      // that never received data (pipe() has written everything the stream delivered to the socket).
      if (socket.bytesWritten === 0 && session.takeDestinationRefusal()) {
        this.connectionFailed(socket);
        conn.failure ??= `the agent could not reach ${this.config.host ?? 'localhost'}:${this.config.remotePort}`;
      }
      closeAfterFlush(socket, stream);
    });
    stream.once('error', (err: Error) => {
      conn.failure ??= `stream ${id} reset: ${describeError(err)}`;
      // The session is gone: reset the local connection rather than pretend a clean end.
      if (!socket.destroyed) socket.resetAndDestroy();
    });
    stream.once('close', () => {
      if (!socket.destroyed && !socket.writableEnded) socket.end();
    });
    socket.once('close', () => {
      if (!stream.destroyed) stream.destroy();
    });
    socket.resume();
  }

  /**
   * The local side sent EOF. smux v1 has no half-close (spec §9.4): our FIN makes the agent close the
   * destination completely, losing a reply it has not sent yet. So the FIN waits until the remote ends the
   * stream, or `halfCloseLingerMs` pass without a byte from the remote (each chunk restarts the wait).
   */
  private halfClose(stream: Duplex): void {
    const lingerMs = this.config.halfCloseLingerMs;
    if (lingerMs <= 0 || stream.readableEnded || stream.destroyed) {
      stream.end();
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      clearTimeout(timer);
      stream.off('data', restart);
      stream.off('end', finish);
      stream.off('close', finish);
      if (!stream.destroyed && !stream.writableEnded) stream.end();
    };
    const restart = (): void => {
      clearTimeout(timer);
      timer = setTimeout(finish, lingerMs);
    };
    stream.on('data', restart);
    stream.once('end', finish);
    stream.once('close', finish);
    restart();
  }

  /**
   * The session for a new local connection: the open session with the fewest connections; a new one
   * (lazily, with backoff after repeated failures) when every session already carries a connection and fewer
   * than `config.sessions` exist. While a start is in flight, the connection waits for it unless an open
   * session carries fewer connections than the ones already waiting for it.
   */
  private sessionFor(): Promise<TunnelSession> {
    const open = this.sessions.filter((s) => s.state === 'open');
    // A reconnecting session still keeps its streams; it takes new ones only when nothing is open.
    const candidates = open.length > 0 ? open : this.sessions;
    let best: TunnelSession | undefined;
    let bestLoad = Infinity;
    for (const session of candidates) {
      const load = this.connectionsOn(session);
      if (load < bestLoad) [best, bestLoad] = [session, load];
    }
    if (this.sessionStarting) {
      let waiting = 0;
      for (const carrier of this.carriers.values()) if (carrier === null) waiting++;
      // `waiting` counts this connection too (it is already in the map).
      if (best && bestLoad < waiting - 1) return Promise.resolve(best);
      return this.sessionStarting;
    }
    if (best && (bestLoad === 0 || this.sessions.length >= this.config.sessions)) {
      return Promise.resolve(best);
    }
    return this.ensureStart();
  }

  /** A live session, starting one if none exists (eager forwards). */
  private ensureSession(): Promise<TunnelSession> {
    const live = this.sessions.find((s) => s.state === 'open') ?? this.sessions[0];
    if (live) return Promise.resolve(live);
    return this.ensureStart();
  }

  /** The start in flight, or a new one. */
  private ensureStart(): Promise<TunnelSession> {
    if (this.sessionStarting) return this.sessionStarting;
    this.sessionStarting = this.startSession().finally(() => {
      this.sessionStarting = undefined;
    });
    return this.sessionStarting;
  }

  private async startSession(): Promise<TunnelSession> {
    const waitMs = this.notBeforeMs - performance.now();
    if (waitMs > 0) {
      this.log.debug(
        `next session start in ${waitMs} ms (backoff after ${this.consecutiveFailures} failure(s))`,
      );
      await delay(waitMs, this.stopSignal.signal).catch(() => undefined);
    }
    if (this.stopping) throw new TunnelError('PF_ERR_SESSION_CLOSED', 'forward is stopping');
    let sessionId: string | undefined;
    // JSON logs carry the SessionId as a field once StartSession has named it.
    const logger = withLateField(this.log.child('session'), 'session', () => sessionId);
    const session = new TunnelSession(this.config, this.tuning, this.boundPort, {
      ssm: this.deps.ssm,
      logger,
      userAgent: this.deps.userAgent,
      ...(this.deps.targets ? { resolveTarget: this.deps.targets.resolve } : {}),
      spill: this.spill,
    });
    session.on('state', () => (sessionId = session.sessionId));
    session.once('granted', () => {
      sessionId = session.sessionId;
      this.emit('sessionGranted', session);
    });
    session.once('closed', (reason: SessionEndReason, err?: Error) =>
      this.onSessionClosed(session, reason, err),
    );
    this.counters.sessionsStarted++;
    this.startingSession = session;
    try {
      await session.start();
    } catch (err) {
      this.noteFailure();
      // A resolved instance that was replaced within the cache time: look the target up again next time.
      if (isPfError(err, 'PF_ERR_TARGET_NOT_CONNECTED')) this.deps.targets?.forget(this.config.target);
      throw err;
    } finally {
      this.startingSession = undefined;
    }
    if (this.stopping) {
      // stop() began while this start was in flight: nothing may open after "stopping".
      void session.close('user');
      throw new TunnelError('PF_ERR_SESSION_CLOSED', 'forward is stopping');
    }
    this.repeats.clear();
    this.sessions.push(session);
    this.emit('session', session);
    // Armed now; the connections waiting for this start cancel it as they attach.
    this.scheduleIdleStop(session);
    return session;
  }

  /** One more failed (or short-lived) session: the next start waits a jittered, growing delay. */
  private noteFailure(): void {
    this.consecutiveFailures++;
    this.notBeforeMs = performance.now() + backoffDelayMs(API_BACKOFF, this.consecutiveFailures - 1);
  }

  /**
   * A session ended (spec §10.1, §10.3): forget it, so the next connection (or, when eager, at once) starts a
   * fresh one. A session that ended early counts as a failure for the restart backoff. An eager forward
   * without keepAlive whose idle session the service closed falls back to lazy until the next connection,
   * so the service's idle timeout is not defeated by reopening at once, forever.
   */
  private onSessionClosed(session: TunnelSession, reason: SessionEndReason, err?: Error): void {
    this.counters.sessionsEnded++;
    this.counters.endedReconnects += session.reconnects;
    this.counters.endedResentMessages += session.stats.resentMessages;
    const index = this.sessions.indexOf(session);
    if (index >= 0) this.sessions.splice(index, 1);
    this.cancelIdleStop(session);
    // The one info line of a session's end (issue 13: one line per session event), with the error that ended
    // it. A session that never opened is reported by whoever waited for its start, with the error.
    const livedMs = Date.now() - session.createdAt;
    // Our own stops (user, idle) need no error text: the reason says it all.
    const why = err && reason !== 'user' && reason !== 'idle' ? `${reason}: ${describeError(err)}` : reason;
    const ended = `session ${session.sessionId ?? '(not started)'} ended (${why}) after ${formatDuration(livedMs)}, ${session.reconnects} reconnect(s)`;
    if (session.openedAt >= 0) this.log.info(ended);
    else this.log.debug(ended);
    if (reason !== 'idle' && reason !== 'user' && session.openedAt >= 0) {
      if (performance.now() - session.openedAt < SESSION_HEALTHY_AFTER_MS) this.noteFailure();
      else this.consecutiveFailures = 0;
    }
    // A session that never opened is reported by whoever waited for its start, with the error.
    if (this.stopping || reason === 'idle' || reason === 'user' || session.openedAt < 0) return;
    if (
      this.config.eager &&
      !this.config.keepAlive &&
      reason === 'channel-closed' &&
      this.sockets.size === 0
    ) {
      this.eagerActive = false;
      this.log.info(
        `session ${session.sessionId} ended by the service while no connection was open (${why}); eager without keepAlive, so the next session starts on the next local connection (set keepAlive: true to keep one open)`,
      );
      return;
    }
    this.log.debug(this.eagerActive ? 'starting a new session' : 'the next connection starts a new session');
    this.startEager();
  }

  /**
   * Stop `session` once it has carried no connection for `idleStopMs`. An eager forward keeps its last
   * session; the extra ones striping started idle-stop like a lazy forward's.
   */
  private scheduleIdleStop(session: TunnelSession): void {
    this.cancelIdleStop(session);
    if (this.config.idleStopMs <= 0 || this.stopping || !this.sessions.includes(session)) return;
    if (this.connectionsOn(session) > 0) return;
    const timer = setTimeout(() => {
      this.idleTimers.delete(session);
      if (this.connectionsOn(session) > 0 || !this.sessions.includes(session)) return;
      if (this.config.eager && this.sessions.length <= 1) return;
      this.log.debug(
        `no connections for ${this.config.idleStopMs} ms; terminating session ${session.sessionId}`,
      );
      this.sessions.splice(this.sessions.indexOf(session), 1);
      void session.close('idle');
    }, this.config.idleStopMs);
    timer.unref();
    this.idleTimers.set(session, timer);
  }

  private cancelIdleStop(session: TunnelSession): void {
    clearTimeout(this.idleTimers.get(session));
    this.idleTimers.delete(session);
  }

  /** Local connections open now. */
  get connectionCount(): number {
    return this.sockets.size;
  }

  /**
   * Stop accepting, let open connections (and a session start they wait for) finish for up to `graceMs`,
   * then reset the rest and end the session (TerminateSession). Idempotent: every call shares one stop.
   * {@link abandon} ends every wait at once.
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
    void this.startingSession?.close('user');
    for (const session of this.sessions) void session.close('user');
  }

  /** `promise`, or undefined once `ms` pass or the forward is abandoned, whichever comes first. */
  private async bounded<T>(promise: Promise<T>, ms = Infinity): Promise<T | undefined> {
    const signal = this.abandoned.signal;
    if (signal.aborted) return undefined;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      return await Promise.race([
        promise,
        new Promise<undefined>((resolve) => {
          onAbort = () => resolve(undefined);
          signal.addEventListener('abort', onAbort, { once: true });
          if (Number.isFinite(ms)) timer = setTimeout(() => resolve(undefined), Math.max(0, ms));
        }),
      ]);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
  }

  private async stopOnce(graceMs: number): Promise<void> {
    this.stopping = true;
    this.listening = false;
    this.stopSignal.abort();
    // Nothing flows through a session that is not open yet: abort its start (StartSession retries, a hung
    // dial or handshake) rather than wait for it; close() terminates a session already granted.
    const aborting = this.startingSession?.close('user');
    for (const timer of this.idleTimers.values()) clearTimeout(timer);
    this.idleTimers.clear();
    const graceEndMs = performance.now() + graceMs;
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
    // A start in flight (StartSession retries, dial, handshake) gets what is left of the grace, then is closed.
    const starting = this.sessionStarting;
    if (starting) {
      const settled = starting.then(
        () => true,
        () => true,
      );
      await this.bounded(settled, graceEndMs - performance.now());
    }
    if (aborting) await this.bounded(aborting.catch(() => undefined));
    const sessions = this.sessions.splice(0);
    await this.bounded(
      Promise.all(
        sessions.map((session) =>
          session.close('user').catch((err: unknown) => {
            if (!isPfError(err)) throw err;
          }),
        ),
      ),
    );
    await this.bounded(closed);
  }
}

/**
 * The agent sent FIN: the destination is closed completely (v1 has no half-close, spec §9.4), so nothing will
 * ever read what the local client still sends. pipe() has ended the local socket's write side; once that has
 * flushed what the agent sent, destroy the socket, so a client still uploading gets an error instead of
 * blocking on a socket nobody reads, and the forward's idle stop is no longer held up by it. Until then the
 * client's bytes are read and dropped: they keep our receive queue short, so the close is a FIN rather than
 * a reset that could cut off the tail of the response still in the kernel.
 */
function closeAfterFlush(socket: Socket, stream: Duplex): void {
  if (socket.destroyed) return;
  socket.unpipe(stream);
  socket.resume();
  if (!socket.writableEnded) socket.end();
  if (socket.writableFinished) socket.destroy();
  else socket.once('finish', () => socket.destroy());
}
