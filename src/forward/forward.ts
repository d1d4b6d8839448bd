/**
 * A forward: one local TCP listener whose accepted connections travel through one shared SSM session
 * (spec §9). The session starts lazily on the first connection (or eagerly), is shared by later ones, is
 * terminated after an idle period with no connections, and is replaced transparently when it ends.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ForwardConfig, TuningConfig } from '../config/types.js';
import { TunnelError, describeError, isPfError } from '../errors.js';
import type { Logger } from '../log.js';
import type { SsmApi } from '../ssm/types.js';
import type { ForwardTargets } from '../targets/resolve.js';
import { SpillStore } from '../mux/spill.js';
import { API_BACKOFF, backoffDelayMs, delay } from './backoff.js';
import { corkPerTick } from './local-socket.js';
import { TunnelSession } from './session.js';
import type { SessionEndReason } from './session.js';

/**
 * A session that ends (other than by us) sooner than this after opening counts as a failed start for the
 * restart backoff, so a target that keeps ending sessions is not hammered with StartSession, ms (our default).
 */
export const SESSION_HEALTHY_AFTER_MS = 10_000;

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
}

/** Counters of one forward. */
export interface ForwardStats {
  connectionsAccepted: number;
  connectionsActive: number;
  connectionsFailed: number;
  sessionsStarted: number;
  sessionsEnded: number;
  bytesUp: number;
  bytesDown: number;
}

/**
 * Runs one forward.
 * Events: 'listening' (AddressInfo), 'session' (TunnelSession), 'connectionClosed' (error|undefined).
 */
export class Forward extends EventEmitter {
  private server: net.Server | undefined;
  private session: TunnelSession | undefined;
  private sessionStarting: Promise<TunnelSession> | undefined;
  private readonly sockets = new Set<Socket>();
  private idleTimer: NodeJS.Timeout | undefined;
  private consecutiveFailures = 0;
  private notBeforeMs = 0;
  private stopping = false;
  private readonly stopSignal = new AbortController();
  private boundPort = 0;
  private readonly spill: SpillStore;
  readonly stats: ForwardStats = {
    connectionsAccepted: 0,
    connectionsActive: 0,
    connectionsFailed: 0,
    sessionsStarted: 0,
    sessionsEnded: 0,
    bytesUp: 0,
    bytesDown: 0,
  };

  constructor(
    readonly config: ForwardConfig,
    private readonly tuning: TuningConfig,
    private readonly deps: ForwardDeps,
  ) {
    super();
    this.spill = deps.spill ?? new SpillStore({ directory: os.tmpdir(), limitBytes: tuning.spillLimitBytes });
  }

  private get log(): Logger {
    return this.deps.logger;
  }

  /** The bound address once listening. */
  get address(): AddressInfo | undefined {
    const address = this.server?.address();
    return address && typeof address === 'object' ? address : undefined;
  }

  /** The current session, if any. */
  get currentSession(): TunnelSession | undefined {
    return this.session;
  }

  /**
   * Open the listener (and the session, when eager).
   * @throws TunnelError `PF_ERR_LISTEN` naming the address and the fix.
   */
  async start(): Promise<AddressInfo> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) =>
      this.onConnection(socket),
    );
    this.server = server;
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
        reject(new TunnelError('PF_ERR_LISTEN', `cannot listen on ${where}: ${hint}`, { cause: err }));
      });
      server.listen(this.config.localPort, this.config.bind, () => resolve());
    });
    server.on('error', (err) => this.log.error(`listener error: ${err.message}`));
    const address = this.address as AddressInfo;
    this.boundPort = address.port;
    this.log.info(
      `listening on ${address.address}:${address.port} → ${this.config.host ?? 'localhost'}:${this.config.remotePort} via ${this.config.target}`,
    );
    this.emit('listening', address);
    if (this.config.eager) {
      this.ensureSession().catch((err: unknown) =>
        this.log.error(`eager session start failed: ${describeError(err)}`),
      );
    }
    return address;
  }

  private onConnection(socket: Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    this.stats.connectionsAccepted++;
    this.stats.connectionsActive++;
    this.sockets.add(socket);
    clearTimeout(this.idleTimer);
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    socket.setNoDelay(true);
    socket.on('error', (err) => this.log.debug(`local connection ${peer}: ${err.message}`));
    socket.once('close', () => {
      this.sockets.delete(socket);
      this.stats.connectionsActive--;
      this.scheduleIdleStop();
    });
    this.ensureSession().then(
      (session) => this.attach(socket, session, peer),
      (err: unknown) => {
        this.stats.connectionsFailed++;
        this.log.error(`connection from ${peer} closed: ${describeError(err)}`);
        socket.destroy();
      },
    );
  }

  private attach(socket: Socket, session: TunnelSession, peer: string): void {
    if (socket.destroyed) return;
    if (session.mode === 'basic') {
      session.basicRelay?.attach(socket);
      return;
    }
    let stream: Duplex;
    try {
      stream = session.openStream();
    } catch (err) {
      this.stats.connectionsFailed++;
      this.log.warn(`connection from ${peer} closed: ${describeError(err)}`);
      socket.destroy();
      return;
    }
    const id = (stream as Duplex & { id?: number }).id;
    let received = 0;
    socket.on('data', (chunk: Buffer) => {
      this.stats.bytesUp += chunk.length;
    });
    // Registered before pipe(): the cork is in place before pipe writes the chunk.
    const holdWrites = corkPerTick(socket);
    stream.on('data', (chunk: Buffer) => {
      holdWrites();
      received += chunk.length;
      this.stats.bytesDown += chunk.length;
    });
    // pipe() gives backpressure both ways: a slow local reader pauses the stream, a full stream pauses the socket.
    socket.pipe(stream);
    stream.pipe(socket);
    stream.once('end', () => {
      // ConnectToPortError does not name its stream (spec §9.4): pair it with the next FIN of a stream
      // that never received data.
      if (received === 0 && session.takeDestinationRefusal()) {
        this.stats.connectionsFailed++;
        this.log.warn(
          `connection from ${peer} (stream ${id}) closed: the agent could not reach ${this.config.host ?? 'localhost'}:${this.config.remotePort}`,
        );
      }
      closeAfterFlush(socket, stream);
    });
    stream.once('error', (err: Error) => {
      // The one warn line of a connection reset for its backlog (past the bound): name it and say why.
      if (isPfError(err, 'PF_ERR_STREAM_BACKLOG'))
        this.log.warn(`connection from ${peer} (stream ${id}) reset: ${describeError(err)}`);
      else this.log.debug(`stream ${id} for ${peer} reset: ${describeError(err)}`);
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

  /** The shared session, starting one if needed (lazily, with backoff after repeated failures). */
  private ensureSession(): Promise<TunnelSession> {
    if (this.session && this.session.state === 'open') return Promise.resolve(this.session);
    if (this.session && this.session.state === 'reconnecting') return Promise.resolve(this.session);
    if (this.sessionStarting) return this.sessionStarting;
    this.sessionStarting = this.startSession().finally(() => {
      this.sessionStarting = undefined;
    });
    return this.sessionStarting;
  }

  private async startSession(): Promise<TunnelSession> {
    const waitMs = this.notBeforeMs - Date.now();
    if (waitMs > 0) {
      this.log.debug(
        `next session start in ${waitMs} ms (backoff after ${this.consecutiveFailures} failure(s))`,
      );
      await delay(waitMs, this.stopSignal.signal).catch(() => undefined);
    }
    if (this.stopping) throw new TunnelError('PF_ERR_SESSION_CLOSED', 'forward is stopping');
    const session = new TunnelSession(this.config, this.tuning, this.boundPort, {
      ssm: this.deps.ssm,
      logger: this.log.child('session'),
      userAgent: this.deps.userAgent,
      ...(this.deps.targets ? { resolveTarget: this.deps.targets.resolve } : {}),
      spill: this.spill,
    });
    session.once('closed', (reason: SessionEndReason) => this.onSessionClosed(session, reason));
    this.stats.sessionsStarted++;
    try {
      await session.start();
    } catch (err) {
      this.noteFailure();
      // A resolved instance that was replaced within the cache time: look the target up again next time.
      if (isPfError(err, 'PF_ERR_TARGET_NOT_CONNECTED')) this.deps.targets?.forget(this.config.target);
      throw err;
    }
    this.session = session;
    this.emit('session', session);
    this.scheduleIdleStop();
    return session;
  }

  /** One more failed (or short-lived) session: the next start waits a jittered, growing delay. */
  private noteFailure(): void {
    this.consecutiveFailures++;
    this.notBeforeMs = Date.now() + backoffDelayMs(API_BACKOFF, this.consecutiveFailures - 1);
  }

  /**
   * A session ended (spec §10.1, §10.3): forget it, so the next connection (or, when eager, at once) starts a
   * fresh one. A session that ended early counts as a failure for the restart backoff.
   */
  private onSessionClosed(session: TunnelSession, reason: SessionEndReason): void {
    this.stats.sessionsEnded++;
    if (this.session === session) this.session = undefined;
    if (reason !== 'idle' && reason !== 'user' && session.openedAt >= 0) {
      if (performance.now() - session.openedAt < SESSION_HEALTHY_AFTER_MS) this.noteFailure();
      else this.consecutiveFailures = 0;
    }
    if (!this.stopping && reason !== 'idle' && reason !== 'user') {
      this.log.info(`session ended (${reason}); the next connection starts a new one`);
      if (this.config.eager) {
        this.ensureSession().catch((err: unknown) =>
          this.log.error(`session restart failed: ${describeError(err)}`),
        );
      }
    }
  }

  private scheduleIdleStop(): void {
    clearTimeout(this.idleTimer);
    if (this.config.idleStopMs <= 0 || this.config.eager || this.sockets.size > 0 || !this.session) return;
    this.idleTimer = setTimeout(() => {
      const session = this.session;
      if (!session || this.sockets.size > 0) return;
      this.log.info(
        `no connections for ${this.config.idleStopMs} ms; terminating session ${session.sessionId}`,
      );
      this.session = undefined;
      void session.close('idle');
    }, this.config.idleStopMs);
    this.idleTimer.unref();
  }

  /** Local connections open now. */
  get connectionCount(): number {
    return this.sockets.size;
  }

  /**
   * Stop accepting, let open connections finish for up to `graceMs`, then reset the rest and end the
   * session (TerminateSession).
   */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    this.stopSignal.abort();
    clearTimeout(this.idleTimer);
    const server = this.server;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    if (this.sockets.size > 0 && graceMs > 0) {
      this.log.info(`draining ${this.sockets.size} connection(s) for up to ${graceMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        const check = (): void => {
          if (this.sockets.size === 0) {
            clearTimeout(timer);
            resolve();
          }
        };
        for (const socket of this.sockets) socket.once('close', check);
        check();
      });
    }
    for (const socket of this.sockets) socket.destroy();
    const starting = this.sessionStarting;
    if (starting)
      await starting.then(
        () => undefined,
        () => undefined,
      );
    const session = this.session;
    this.session = undefined;
    if (session) {
      try {
        await session.close('user');
      } catch (err) {
        if (!isPfError(err)) throw err;
      }
    }
    await closed;
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
