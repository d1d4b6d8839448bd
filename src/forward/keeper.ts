/**
 * The session keeper (docs/architecture.md, "The forward layer"): for one session spec (target, document,
 * parameters, reason, keepAlive, region/profile/endpoint) it starts SSM sessions lazily or eagerly, shares
 * them, stripes connections across up to `sessions` of them (issue 12), backs off after failures,
 * idle-stops and replaces lost ones, and hands out one {@link Carrier} per connection. It knows no
 * listener: the TCP port forward (`forward.ts`) and any other front end ask it for carriers.
 *
 * Placement: a new connection goes to the open session with the fewest carriers. Another session is
 * started when every open one already carries a connection and fewer than `sessions` live or are
 * starting; a burst of connections starts up to one session per waiting connection at once (never more
 * than `sessions` in all), and each waiting connection goes to the first session that opens with the
 * fewest carriers. After a failed start only one start runs at a time (with the backoff) until a start
 * succeeds again, so a target that is down is not asked N times at once.
 */
import { EventEmitter } from 'node:events';
import os from 'node:os';
import type { Duplex } from 'node:stream';
import type { ForwardConfig, TuningConfig } from '../config/types.js';
import { TunnelError, describeError, isPfError } from '../errors.js';
import { RepeatFilter, withLateField } from '../log.js';
import type { Logger } from '../log.js';
import { SpillStore } from '../mux/spill.js';
import type { SsmApi } from '../ssm/types.js';
import type { ForwardTargets } from '../targets/resolve.js';
import { formatDuration } from '../stats.js';
import type { ForwardSessionStats, ForwardStats } from '../stats.js';
import { API_BACKOFF, backoffDelayMs, boundedWait, delay } from './backoff.js';
import type { BackoffPolicy } from './backoff.js';
import { TunnelSession } from './session.js';
import type { SessionEndReason } from './session.js';

/**
 * A session that ends (other than by us) sooner than this after opening counts as a failed start for the
 * restart backoff, so a target that keeps ending sessions is not hammered with StartSession, ms (our default).
 */
export const SESSION_HEALTHY_AFTER_MS = 10_000;

/**
 * Retries of an eager keeper's session start when nobody is waiting for it: 1 s, ×2, capped at 60 s
 * (our default). Gentler than {@link API_BACKOFF}, which paces starts a connection waits for: a target
 * that is down is not asked every few seconds for hours.
 */
export const EAGER_RETRY_BACKOFF: BackoffPolicy = { initialMs: 1_000, maxMs: 60_000, factor: 2 };

/** What a keeper needs to start its sessions (a ForwardConfig satisfies it). */
export type SessionSpec = Pick<
  ForwardConfig,
  | 'name'
  | 'target'
  | 'pick'
  | 'remotePort'
  | 'host'
  | 'region'
  | 'profile'
  | 'endpoint'
  | 'ecsEndpoint'
  | 'documentName'
  | 'parameters'
  | 'reason'
  | 'eager'
  | 'idleStopMs'
  | 'sessions'
  | 'keepAlive'
  | 'allowInsecureEndpoint'
>;

/** What a keeper needs from outside. */
export interface KeeperDeps {
  ssm: SsmApi;
  logger: Logger;
  /** HTTP User-Agent for the WebSocket upgrades. */
  userAgent: string;
  /** Resolves the spec's target at each session start; absent: the target is used as it is. */
  targets?: ForwardTargets;
  /**
   * Spill store for slow local readers, shared daemon-wide (the daemon passes one to every forward). Unset =
   * a store of this keeper's own under `os.tmpdir()` with `tuning.spillLimitBytes`.
   */
  spill?: SpillStore;
  /**
   * Failures already reported (shared across forwards by the daemon, which also feeds it the start-up
   * checks): a repeat is logged at debug. Default: one filter per keeper.
   */
  repeats?: RepeatFilter;
}

/** One connection's path to the destination, the same in mux and basic mode. */
export interface Carrier {
  /**
   * The connection's bytes: write = towards the destination, read = from it, end() = our FIN; 'end' = the
   * remote's FIN. Destroy it to reset. Closing it releases the carrier (idle-stop accounting).
   */
  readonly stream: Duplex;
  readonly session: TunnelSession;
  /** Label for logs, e.g. "stream 3" or "basic connection 2". */
  readonly label: string;
  /**
   * After the stream ended without data: true (once) if the agent reported it could not reach the
   * destination (ConnectToPortError, which names no stream: paired with the next such end, spec §9.4).
   */
  takeDestinationRefusal(): boolean;
  /**
   * Resolves once the agent has consumed (acked) the message that carried this connection's open: in mux
   * mode the Output message with its smux SYN, after which the agent dials and a refused dial comes back as
   * ConnectToPortError within milliseconds. In basic mode, once every message sent before the call is acked
   * (there is no per-connection open message; see `TunnelSession.whenStreamOpened`). Rejects
   * (`PF_ERR_STREAM_RESET`) if the stream closes first, which includes its session ending. Created on the
   * first call and shared by later ones.
   */
  opened(): Promise<void>;
}

/** The keeper's session counters, the part of a forward's stats branch it owns. */
export type KeeperTotals = Pick<
  ForwardStats,
  'sessionsStarted' | 'sessionsEnded' | 'reconnects' | 'resentMessages'
>;

/** A connection waiting for a carrier. */
interface Waiter {
  resolve(carrier: Carrier): void;
  reject(err: Error): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** One session start in flight. */
interface StartAttempt {
  /** The session once created (after the backoff wait), so a stop can close it. */
  session: TunnelSession | undefined;
  promise: Promise<TunnelSession>;
}

/**
 * Keeps the sessions of one spec.
 * Events: 'sessionGranted' (TunnelSession: StartSession returned, not open yet), 'session' (TunnelSession,
 * open), 'connectionAssigned' (TunnelSession: a carrier on it was handed out).
 */
export class SessionKeeper extends EventEmitter {
  /** Live sessions (open or reconnecting), at most `spec.sessions`, oldest first. */
  private readonly sessions: TunnelSession[] = [];
  /** Session starts in flight (counted with {@link sessions} against `spec.sessions`). */
  private readonly starts = new Set<StartAttempt>();
  /** Connections waiting for a carrier, oldest first. */
  private readonly waiters: Waiter[] = [];
  /** The session of every carrier handed out and not yet closed; per-session loads are counted from it. */
  private readonly carriers = new Map<Duplex, TunnelSession>();
  /** Idle-stop timers of sessions that carry no connection. */
  private readonly idleTimers = new Map<TunnelSession, NodeJS.Timeout>();
  /** Eager and not fallen back to lazy after the service closed an idle session. */
  private eagerActive: boolean;
  /** The eager retry loop is waiting for a start or its backoff (one loop at a time). */
  private eagerRunning = false;
  private consecutiveFailures = 0;
  /** performance.now() before which no session start begins (the restart backoff), ms. */
  private notBeforeMs = 0;
  /** The latest start failed: one start at a time until one succeeds (no parallel failing starts). */
  private serialStarts = false;
  private stopping = false;
  private stopPromise: Promise<void> | undefined;
  private readonly stopSignal = new AbortController();
  /** Aborted by {@link abandon}: every wait of stop() ends at once. */
  private readonly abandoned = new AbortController();
  private readonly repeats: RepeatFilter;
  private readonly spill: SpillStore;
  private readonly counters: KeeperTotals = {
    sessionsStarted: 0,
    sessionsEnded: 0,
    reconnects: 0,
    resentMessages: 0,
  };

  constructor(
    readonly spec: SessionSpec,
    private readonly tuning: TuningConfig,
    private readonly deps: KeeperDeps,
    /** The local port StartSession names as `localPortNumber` (a listener's bound port; 0 = none). */
    private readonly localPort = 0,
  ) {
    super();
    this.spill = deps.spill ?? new SpillStore({ directory: os.tmpdir(), limitBytes: tuning.spillLimitBytes });
    this.eagerActive = spec.eager;
    this.repeats = deps.repeats ?? new RepeatFilter();
  }

  private get log(): Logger {
    return this.deps.logger;
  }

  /** Every live session (open or reconnecting), oldest first. */
  get currentSessions(): readonly TunnelSession[] {
    return [...this.sessions];
  }

  /** Carriers on `session` now (in basic mode: the one relayed plus those queued). */
  connectionsOn(session: TunnelSession): number {
    let count = 0;
    for (const carrier of this.carriers.values()) if (carrier === session) count++;
    return count;
  }

  /** Live sessions with their carrier counts, for the stats tree. */
  get stats(): ForwardSessionStats[] {
    return this.sessions.map((session) => ({ ...session.stats, connections: this.connectionsOn(session) }));
  }

  /** Session counters over every session this keeper started, the live ones included (monotonic). */
  get totals(): KeeperTotals {
    const totals = { ...this.counters };
    for (const session of this.sessions) {
      totals.reconnects += session.reconnects;
      totals.resentMessages += session.stats.resentMessages;
    }
    return totals;
  }

  /** Connections in use (open carriers + waiting acquires). */
  get load(): number {
    return this.carriers.size + this.waiters.length;
  }

  /**
   * Report a failure at `level`, or at debug when the same text was reported already (the filter is
   * shared with the front end, so a connection failing for the reason its start failed is logged once).
   */
  report(level: 'warn' | 'error', text: string, key = text): void {
    if (this.repeats.first(key)) this.log[level](text);
    else this.log.debug(`${text} (repeated)`);
  }

  /**
   * Start eagerly when `spec.eager`: a failed start is retried with {@link EAGER_RETRY_BACKOFF} until it
   * succeeds or the keeper stops.
   */
  start(): void {
    if (!this.eagerActive || this.stopping || this.eagerRunning) return;
    if (this.sessions.length > 0) return;
    this.eagerRunning = true;
    const pending = [...this.starts][0]?.promise ?? this.launchStart().promise;
    pending.then(
      () => {
        this.eagerRunning = false;
      },
      (err: unknown) => {
        this.eagerRunning = false;
        if (this.stopping) return;
        const retryMs = backoffDelayMs(EAGER_RETRY_BACKOFF, Math.max(0, this.consecutiveFailures - 1));
        this.notBeforeMs = Math.max(this.notBeforeMs, performance.now() + retryMs);
        this.report(
          'warn',
          `eager session start failed: ${describeError(err)}; retrying with backoff`,
          describeError(err),
        );
        this.start();
      },
    );
  }

  /**
   * A carrier for one new connection, once a session can carry it (lazy start, striping, backoff).
   * @param signal aborts the wait (`PF_ERR_ABORTED`).
   * @throws TunnelError `PF_ERR_SESSION_CLOSED` when stopping; otherwise the error of the session start
   * the connection waited for (AwsSessionError, TunnelError, ProtocolError).
   */
  acquire(signal?: AbortSignal): Promise<Carrier> {
    if (this.stopping) {
      return Promise.reject(new TunnelError('PF_ERR_SESSION_CLOSED', 'forward is stopping'));
    }
    if (signal?.aborted) return Promise.reject(abortedError(signal));
    if (this.spec.eager && !this.eagerActive) {
      this.eagerActive = true;
      this.log.info('local connection: eager again (a session stays open from now on)');
    }
    return new Promise<Carrier>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, signal, onAbort: undefined };
      if (signal) {
        waiter.onAbort = (): void => {
          const index = this.waiters.indexOf(waiter);
          if (index < 0) return;
          this.waiters.splice(index, 1);
          reject(abortedError(signal));
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
      this.dispatch();
    });
  }

  /** Take `waiter` out of the queue and settle it. */
  private settle(waiter: Waiter, outcome: { carrier: Carrier } | { error: Error }): void {
    const index = this.waiters.indexOf(waiter);
    if (index >= 0) this.waiters.splice(index, 1);
    if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
    if ('carrier' in outcome) waiter.resolve(outcome.carrier);
    else waiter.reject(outcome.error);
  }

  /**
   * Place the waiting connections, oldest first; called whenever a connection arrives, a session opens or
   * ends, a start fails or a carrier closes. Each waiter takes the first of: an open session with no
   * carrier (at once); a start in flight no waiter is counted on yet (it waits for it); a new start, while
   * fewer than `spec.sessions` live or start (after a failure only when none is in flight); the start in
   * flight with the fewest waiters counted on it, unless an open session carries fewer (ties wait); the
   * least loaded open session. Counting is redone on every pass: a start is bound to no waiter, so each
   * session that opens takes the oldest waiter. `failure` is the error of a start that just failed: no new
   * start is made in this pass, and a waiter with nowhere else to go is rejected with it.
   */
  private dispatch(failure?: unknown): void {
    if (this.stopping) return;
    const open = this.sessions.filter((s) => s.state === 'open');
    // A reconnecting session still keeps its streams; it takes new ones only when nothing is open.
    const candidates = open.length > 0 ? open : this.sessions;
    const loads = new Map(candidates.map((s) => [s, this.connectionsOn(s)]));
    // Waiters counted on each start in flight, recomputed on each pass (a start is not bound to a waiter).
    const counted = [...this.starts].map(() => 0);
    for (const waiter of [...this.waiters]) {
      let best: TunnelSession | undefined;
      let bestLoad = Infinity;
      for (const [session, load] of loads) if (load < bestLoad) [best, bestLoad] = [session, load];
      let slot = -1;
      for (let i = 0; i < counted.length; i++)
        if (slot < 0 || (counted[i] as number) < (counted[slot] as number)) slot = i;
      const slotLoad = slot < 0 ? Infinity : (counted[slot] as number);
      const mayStart =
        failure === undefined &&
        this.sessions.length + this.starts.size < this.spec.sessions &&
        (this.starts.size === 0 || !this.serialStarts);
      if (best && bestLoad === 0) {
        this.hand(waiter, best, loads);
      } else if (slotLoad === 0) {
        counted[slot] = 1;
      } else if (mayStart) {
        this.launchStart();
        counted.push(1);
      } else if (slot >= 0 && !(best && bestLoad < slotLoad)) {
        counted[slot] = slotLoad + 1;
      } else if (best) {
        this.hand(waiter, best, loads);
      } else {
        this.settle(waiter, {
          error:
            failure instanceof Error
              ? failure
              : new TunnelError('PF_ERR_SESSION_CLOSED', 'no session can carry the connection'),
        });
      }
    }
  }

  /** Give `waiter` a carrier on `session` (or the error opening it). */
  private hand(waiter: Waiter, session: TunnelSession, loads: Map<TunnelSession, number>): void {
    let carrier: Carrier;
    try {
      carrier = this.carry(session);
    } catch (err) {
      this.settle(waiter, { error: err instanceof Error ? err : new Error(String(err)) });
      return;
    }
    loads.set(session, (loads.get(session) ?? 0) + 1);
    this.settle(waiter, { carrier });
  }

  /**
   * A carrier on `session`: its stream, counted on the session until the stream closes.
   * @throws TunnelError when the session cannot open a stream (closing, basic queue full).
   */
  private carry(session: TunnelSession): Carrier {
    const stream = session.openStream();
    this.carriers.set(stream, session);
    this.cancelIdleStop(session);
    stream.once('close', () => {
      this.carriers.delete(stream);
      this.scheduleIdleStop(session);
      this.dispatch();
    });
    const id = (stream as Duplex & { id?: number }).id;
    const label = session.mode === 'basic' ? `basic connection ${id}` : `stream ${id}`;
    this.emit('connectionAssigned', session);
    let opened: Promise<void> | undefined;
    return {
      stream,
      session,
      label,
      takeDestinationRefusal: () => session.takeDestinationRefusal(),
      // Lazy: a carrier nobody asks about creates no promise that could reject unobserved.
      opened: () => (opened ??= session.whenStreamOpened(stream)),
    };
  }

  /** Begin one session start; it settles the waiters (through {@link dispatch}) when it ends. */
  private launchStart(): StartAttempt {
    const holder: Pick<StartAttempt, 'session'> = { session: undefined };
    const attempt: StartAttempt = Object.assign(holder, { promise: this.startSession(holder) });
    this.starts.add(attempt);
    attempt.promise.then(
      () => {
        this.starts.delete(attempt);
        this.dispatch();
      },
      (err: unknown) => {
        this.starts.delete(attempt);
        this.dispatch(err);
      },
    );
    return attempt;
  }

  private async startSession(attempt: Pick<StartAttempt, 'session'>): Promise<TunnelSession> {
    const waitMs = this.notBeforeMs - performance.now();
    if (waitMs > 0) {
      this.log.debug(
        `next session start in ${Math.round(waitMs)} ms (backoff after ${this.consecutiveFailures} failure(s))`,
      );
      await delay(waitMs, this.stopSignal.signal).catch(() => undefined);
    }
    if (this.stopping) throw new TunnelError('PF_ERR_SESSION_CLOSED', 'forward is stopping');
    let sessionId: string | undefined;
    // JSON logs carry the SessionId as a field once StartSession has named it.
    const logger = withLateField(this.log.child('session'), 'session', () => sessionId);
    const session = new TunnelSession(this.spec, this.tuning, this.localPort, {
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
    attempt.session = session;
    try {
      await session.start();
    } catch (err) {
      this.noteFailure();
      this.serialStarts = true;
      // A resolved instance that was replaced within the cache time: look the target up again next time.
      if (isPfError(err, 'PF_ERR_TARGET_NOT_CONNECTED')) this.deps.targets?.forget(this.spec.target);
      throw err;
    } finally {
      attempt.session = undefined;
    }
    if (this.stopping) {
      // stop() began while this start was in flight: nothing may open after "stopping".
      void session.close('user');
      throw new TunnelError('PF_ERR_SESSION_CLOSED', 'forward is stopping');
    }
    this.serialStarts = false;
    this.repeats.clear();
    this.sessions.push(session);
    this.emit('session', session);
    // Armed now; the connections waiting for this start cancel it as they get their carriers.
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
   * fresh one. A session that ended early counts as a failure for the restart backoff. An eager keeper
   * without keepAlive whose idle session the service closed falls back to lazy until the next connection,
   * so the service's idle timeout is not defeated by reopening at once, forever.
   */
  private onSessionClosed(session: TunnelSession, reason: SessionEndReason, err?: Error): void {
    this.counters.sessionsEnded++;
    this.counters.reconnects += session.reconnects;
    this.counters.resentMessages += session.stats.resentMessages;
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
    if (this.stopping || reason === 'idle' || reason === 'user' || session.openedAt < 0) return;
    if (this.spec.eager && !this.spec.keepAlive && reason === 'channel-closed' && this.load === 0) {
      this.eagerActive = false;
      this.log.info(
        `session ${session.sessionId} ended by the service while no connection was open (${why}); eager without keepAlive, so the next session starts on the next local connection (set keepAlive: true to keep one open)`,
      );
      return;
    }
    this.log.debug(this.eagerActive ? 'starting a new session' : 'the next connection starts a new session');
    this.start();
    // Connections waiting for a start may now start one more session in its place.
    this.dispatch();
  }

  /**
   * Stop `session` once it has carried no connection for `idleStopMs`. An eager keeper keeps its last
   * session; the extra ones striping started idle-stop like a lazy keeper's.
   */
  private scheduleIdleStop(session: TunnelSession): void {
    this.cancelIdleStop(session);
    if (this.spec.idleStopMs <= 0 || this.stopping || !this.sessions.includes(session)) return;
    if (this.connectionsOn(session) > 0) return;
    const timer = setTimeout(() => {
      this.idleTimers.delete(session);
      if (this.connectionsOn(session) > 0 || !this.sessions.includes(session)) return;
      if (this.spec.eager && this.sessions.length <= 1) return;
      this.log.debug(
        `no connections for ${this.spec.idleStopMs} ms; terminating session ${session.sessionId}`,
      );
      this.sessions.splice(this.sessions.indexOf(session), 1);
      void session.close('idle');
    }, this.spec.idleStopMs);
    timer.unref();
    this.idleTimers.set(session, timer);
  }

  private cancelIdleStop(session: TunnelSession): void {
    clearTimeout(this.idleTimers.get(session));
    this.idleTimers.delete(session);
  }

  /**
   * Stop: refuse new acquires and fail the waiting ones (`PF_ERR_SESSION_CLOSED`), abort the starts in
   * flight (nothing flows through a session that is not open yet), let open carriers finish for up to
   * `graceMs`, then reset the rest and end the sessions (TerminateSession). Idempotent: every call shares
   * one stop. {@link abandon} ends every wait at once.
   */
  stop(graceMs: number): Promise<void> {
    this.stopPromise ??= this.stopOnce(graceMs);
    return this.stopPromise;
  }

  /**
   * Give up waiting (the daemon's stop deadline passed): reset the carriers, close the sessions without
   * waiting for them, and let a pending {@link stop} resolve now.
   */
  abandon(): void {
    this.stopping = true;
    this.stopSignal.abort();
    this.abandoned.abort();
    this.failWaiters();
    for (const stream of this.carriers.keys()) stream.destroy();
    for (const attempt of this.starts) void attempt.session?.close('user');
    for (const session of this.sessions) void session.close('user');
  }

  private failWaiters(): void {
    for (const waiter of [...this.waiters]) {
      this.settle(waiter, { error: new TunnelError('PF_ERR_SESSION_CLOSED', 'forward is stopping') });
    }
  }

  /** `promise`, or undefined once `ms` pass or the keeper is abandoned, whichever comes first. */
  private async bounded<T>(promise: Promise<T>, ms = Infinity): Promise<T | undefined> {
    return boundedWait(promise, this.abandoned.signal, ms);
  }

  private async stopOnce(graceMs: number): Promise<void> {
    this.stopping = true;
    this.stopSignal.abort();
    const graceEndMs = performance.now() + graceMs;
    // Abort the starts (StartSession retries, a hung dial or handshake) rather than wait for them;
    // close() terminates a session already granted.
    const starting = [...this.starts];
    const aborting = starting.map((attempt) => attempt.session?.close('user').catch(() => undefined));
    for (const timer of this.idleTimers.values()) clearTimeout(timer);
    this.idleTimers.clear();
    this.failWaiters();
    if (this.carriers.size > 0 && graceMs > 0) {
      const drained = new Promise<void>((resolve) => {
        const check = (): void => {
          if (this.carriers.size === 0) resolve();
        };
        for (const stream of this.carriers.keys()) stream.once('close', check);
        check();
      });
      await this.bounded(drained, graceMs);
    }
    for (const stream of this.carriers.keys()) stream.destroy();
    // A start in flight gets what is left of the grace, then is closed.
    if (starting.length > 0) {
      const settled = Promise.all(starting.map((attempt) => attempt.promise.catch(() => undefined)));
      await this.bounded(settled, graceEndMs - performance.now());
    }
    await this.bounded(Promise.all(aborting));
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
  }
}

/** The error an aborted acquire rejects with. */
function abortedError(signal: AbortSignal): TunnelError {
  return new TunnelError('PF_ERR_ABORTED', 'stopped waiting for a session', { cause: signal.reason });
}
