/**
 * Daemon lifecycle controller (docs/architecture.md, Conventions): runs every configured forward, reloads the
 * configuration (added forwards start, removed ones drain, unchanged ones keep their connections), and
 * stops gracefully within a deadline. Signals are wired by the CLI; this class only exposes
 * start/stop/reload.
 *
 * Ownership: every Forward this daemon created is in `owned` from creation until its stop finished,
 * whatever its state (starting, listening, draining after a reload). stop() stops exactly that set, once
 * each, so a stop during a reload cannot miss a draining forward or let the reload start a new one.
 */
import os from 'node:os';
import { isDeepStrictEqual } from 'node:util';
import { isLoopbackHost } from './targets/destination.js';
import type { DaemonConfig, ForwardConfig, TuningConfig } from './config/types.js';
import { describeError } from './errors.js';
import { Forward } from './forward/forward.js';
import { listenerKey } from './forward/listen.js';
import { RepeatFilter } from './log.js';
import type { Logger } from './log.js';
import type { SsmApi } from './ssm/types.js';
import { SpillStore } from './mux/spill.js';
import { SessionLedger } from './ledger.js';
import type { LedgerEntry } from './ledger.js';
import type { TunnelSession } from './forward/session.js';
import type { ForwardTargets, TargetLocation } from './targets/resolve.js';
import { SocksDaemonPart } from './socks/daemon-part.js';
import { STATS_SCHEMA, failedForwardStats } from './stats.js';
import type { DaemonStats, Readiness } from './stats.js';

/** Where an SSM API lives: a forward's region/profile/endpoint overrides. */
export type SsmLocation = Pick<ForwardConfig, 'region' | 'profile' | 'endpoint'>;

/** Longest a TerminateSession for a crashed daemon's leftover session may take, ms (our default). */
const ORPHAN_TERMINATE_TIMEOUT_MS = 15_000;
/**
 * stop() finishes within `drainGraceMs` plus this, ms (our default): time for the sessions' orderly ends
 * (TerminateSession flag ack or API call) after the drain. Past it, forwards are abandoned (connections
 * reset, sessions closed without waiting) so systemd's TimeoutStopSec (30 s in our units) is never hit.
 */
export const STOP_DEADLINE_SLACK_MS = 5_000;
/** Longest the start-up check of region and credentials may take, ms (our default). */
export const SETUP_CHECK_TIMEOUT_MS = 5_000;
/** Longest stop() waits for the session ledger's last write, ms (our default). */
const LEDGER_FLUSH_TIMEOUT_MS = 1_000;

/** Lifecycle states of the daemon (explicit state: docs/architecture.md, Conventions). */
export const DaemonState = {
  New: 'new',
  Running: 'running',
  Stopping: 'stopping',
  Stopped: 'stopped',
} as const;
export type DaemonState = (typeof DaemonState)[keyof typeof DaemonState];

/** What a reload did. */
export interface ReloadSummary {
  /** Forwards listening after the reload. */
  listening: number;
  /** Names of configured forwards that could not start. */
  failed: string[];
  /** Forwards stopped (removed or replaced). */
  stopped: number;
  /** Forwards started (added or replaced). */
  started: number;
  /** Forwards left untouched. */
  unchanged: number;
}

/** Tuning keys read only by stop(): changing them restarts no forward. */
const STOP_ONLY_TUNING: readonly (keyof TuningConfig)[] = ['drainGraceMs', 'spillLimitBytes'];

/** Resolve `promise`'s outcome, or `undefined` once `ms` pass. */
async function within<T>(promise: Promise<T>, ms: number): Promise<{ value: T } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise.then((value) => ({ value })),
      new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Key of a listener address, or undefined for `localPort: 0` (never shared). */
/** What the daemon needs from outside. */
export interface DaemonDeps {
  logger: Logger;
  /** Builds the SSM client for a forward (region/profile/endpoint come from the forward). */
  ssmFor: (where: SsmLocation) => SsmApi;
  /** Builds what resolves a forward's target at each session start (`src/targets/resolve.ts`). */
  targetsFor?: (where: TargetLocation & Pick<ForwardConfig, 'pick'>) => ForwardTargets;
  /** HTTP User-Agent for data-channel upgrades. Default `pf-daemon`. */
  userAgent?: string;
  /**
   * Folder of the session ledger (spec §10.4): open SessionIds are recorded there so sessions left by a
   * killed daemon are terminated on the next start. Unset = no ledger.
   */
  ledgerDir?: string;
  /** Version reported in `stats()` (package.json). Default `unknown`. */
  version?: string;
  /** Config file reported in `stats()`; unset when running from flags only. */
  configFile?: string;
  /** Told about every successful reconnect (metrics' reconnect histogram); ms taken. */
  onReconnected?: (forward: string, ms: number) => void;
}

/** Runs forwards until stopped. */
export class Daemon {
  /** Listening forwards by name. */
  private readonly forwards = new Map<string, Forward>();
  /** Every forward created and not yet stopped: starting, listening or draining (see the module comment). */
  private readonly owned = new Set<Forward>();
  /** Configured forwards whose listener could not be opened on the last reload, with the reason. */
  private readonly notListening = new Map<string, string>();
  /** Wall-clock construction time, ms since the epoch (status uptime). */
  private readonly createdAt = Date.now();
  private config: DaemonConfig;
  private stateValue: DaemonState = DaemonState.New;
  private readonly ledger: SessionLedger | undefined;
  /** One spill budget for every forward, so `tuning.spillLimitBytes` is daemon-wide. */
  private readonly spill: SpillStore;
  /** Failures already reported, shared by the start-up check and every forward. */
  private readonly repeats = new RepeatFilter();
  /** Reloads run one at a time. */
  private reloadChain: Promise<unknown> = Promise.resolve();
  /** Settles when the running reload has started its forwards (stop() waits for that, not for its drain). */
  private reloadStarting: Promise<void> = Promise.resolve();
  private stopPromise: Promise<void> | undefined;
  /** The SOCKS listeners (`socks:`, `-D`): started, reloaded and stopped with the forwards. */
  private readonly socks: SocksDaemonPart;
  /** Settles when sessions left by a crashed daemon have been terminated (started by start()). */
  orphanSweep: Promise<void> = Promise.resolve();

  constructor(
    config: DaemonConfig,
    private readonly deps: DaemonDeps,
  ) {
    this.config = config;
    this.spill = new SpillStore({ directory: os.tmpdir(), limitBytes: config.tuning.spillLimitBytes });
    this.ledger = deps.ledgerDir ? new SessionLedger(deps.ledgerDir, deps.logger.child('ledger')) : undefined;
    this.socks = new SocksDaemonPart({
      logger: deps.logger,
      ssmFor: deps.ssmFor,
      ...(deps.targetsFor ? { targetsFor: deps.targetsFor } : {}),
      userAgent: deps.userAgent ?? 'pf-daemon',
      spill: this.spill,
      repeats: this.repeats,
      record: (session, where) => this.record(session, where),
    });
  }

  /** The listening forwards by name. */
  get running(): ReadonlyMap<string, Forward> {
    return this.forwards;
  }

  /** Lifecycle state. */
  get state(): DaemonState {
    return this.stateValue;
  }

  /** Forwards not yet fully stopped (listening, starting or draining). */
  get ownedCount(): number {
    return this.owned.size;
  }

  private createForward(forwardConfig: ForwardConfig): Forward {
    const forward = new Forward(forwardConfig, this.config.tuning, {
      ssm: this.deps.ssmFor(forwardConfig),
      logger: this.deps.logger.child(`forward:${forwardConfig.name}`, { forward: forwardConfig.name }),
      userAgent: this.deps.userAgent ?? 'pf-daemon',
      ...(this.deps.targetsFor ? { targets: this.deps.targetsFor(forwardConfig) } : {}),
      spill: this.spill,
      repeats: this.repeats,
    });
    // As soon as StartSession returns (issue 10 item 5): a dial that hangs must not leave it unrecorded.
    forward.on('sessionGranted', (session: TunnelSession) => this.record(session, forwardConfig));
    const observe = this.deps.onReconnected;
    if (observe) {
      forward.on('session', (session: TunnelSession) =>
        session.on('reconnected', (ms: number) => observe(forwardConfig.name, ms)),
      );
    }
    this.owned.add(forward);
    return forward;
  }

  /** The stats tree (`src/stats.ts`): every configured forward in config order, with its sessions. */
  stats(): DaemonStats {
    return {
      schema: STATS_SCHEMA,
      version: this.deps.version ?? 'unknown',
      pid: process.pid,
      startedAt: new Date(this.createdAt).toISOString(),
      uptimeMs: Date.now() - this.createdAt,
      configFile: this.deps.configFile ?? null,
      forwards: this.config.forwards.map((f) => {
        const running = this.forwards.get(f.name);
        if (running) return running.stats;
        return failedForwardStats(f, this.notListening.get(f.name) ?? 'not started');
      }),
      ...((this.config.socks?.length ?? 0) > 0 ? { socks: this.socks.stats(this.config.socks ?? []) } : {}),
    };
  }

  /** Ready when every configured forward listens; otherwise one reason per forward that does not. */
  readiness(): Readiness {
    const reasons: string[] = [];
    for (const f of this.config.forwards) {
      const running = this.forwards.get(f.name);
      if (running?.address) continue;
      reasons.push(`forward ${f.name} is not listening: ${this.notListening.get(f.name) ?? 'not started'}`);
    }
    reasons.push(...this.socks.notReady(this.config.socks ?? []));
    return { ready: reasons.length === 0, reasons };
  }

  /** Keep an open session in the ledger until it closes. */
  private record(
    session: TunnelSession,
    forward: Pick<ForwardConfig, 'target' | 'region' | 'profile' | 'endpoint'>,
  ): void {
    const ledger = this.ledger;
    const sessionId = session.sessionId;
    if (!ledger || !sessionId) return;
    const entry: LedgerEntry = { sessionId, target: forward.target, pid: process.pid, startedAt: Date.now() };
    if (forward.region) entry.region = forward.region;
    if (forward.profile) entry.profile = forward.profile;
    if (forward.endpoint) entry.endpoint = forward.endpoint;
    void ledger.add(entry);
    // Forgotten only once the service session is over; a failed TerminateSession is retried on the next start.
    session.once('settled', (gone: boolean) => {
      if (gone) void ledger.remove(sessionId);
    });
  }

  /** Terminate the sessions of daemons that died without closing them (spec §10.4). */
  private async sweepOrphans(ledger: SessionLedger): Promise<void> {
    await ledger.sweepOrphans(async (entry) => {
      const where: SsmLocation = {};
      if (entry.region) where.region = entry.region;
      if (entry.profile) where.profile = entry.profile;
      if (entry.endpoint) where.endpoint = entry.endpoint;
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          this.deps.ssmFor(where).terminateSession(entry.sessionId),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error('timed out')), ORPHAN_TERMINATE_TIMEOUT_MS);
          }),
        ]);
        this.deps.logger.info(
          `terminated session ${entry.sessionId} (${entry.target}) left open by pf-daemon pid ${entry.pid}`,
        );
      } catch (err) {
        this.deps.logger.warn(
          `could not terminate leftover session ${entry.sessionId}: ${describeError(err)}; kept for the next start`,
        );
        throw err;
      } finally {
        clearTimeout(timer);
      }
    });
  }

  /**
   * Resolve region and credentials of every distinct SSM client now (no StartSession), within
   * {@link SETUP_CHECK_TIMEOUT_MS}, so a missing region or an expired SSO login is reported at start as one
   * warning naming the fix rather than at the first connection. The daemon keeps running either way:
   * lazy forwards try again on the next connection, eager ones retry with backoff.
   */
  private async checkSetup(
    forwards: readonly Pick<ForwardConfig, 'name' | 'region' | 'profile' | 'endpoint'>[],
  ): Promise<void> {
    const byApi = new Map<SsmApi, string[]>();
    for (const f of forwards) {
      const api = this.deps.ssmFor(f);
      byApi.set(api, [...(byApi.get(api) ?? []), f.name]);
    }
    await Promise.all(
      [...byApi].map(async ([api, names]) => {
        if (!api.checkSetup) return;
        const who = `forward${names.length > 1 ? 's' : ''} ${names.join(', ')}`;
        try {
          const done = await within(api.checkSetup(), SETUP_CHECK_TIMEOUT_MS);
          if (!done) {
            this.deps.logger.warn(
              `${who}: could not resolve AWS region and credentials within ${SETUP_CHECK_TIMEOUT_MS} ms (a slow credential_process or SSO endpoint?); carrying on, connections will try again`,
            );
          }
        } catch (err) {
          const text = describeError(err);
          if (this.repeats.first(text)) {
            this.deps.logger.warn(`${who}: ${text}; listening anyway, connections will try again`);
          }
        }
      }),
    );
  }

  /** One warning per listener reachable from other machines (start and reload). */
  private warnExposed(): void {
    for (const forward of this.forwards.values()) {
      const f = forward.config;
      if (isLoopbackHost(f.bind)) continue;
      const port = forward.address?.port ?? f.localPort;
      const remote = f.host
        ? `${f.host}:${f.remotePort} (via ${f.target})`
        : `port ${f.remotePort} of ${f.target}`;
      this.deps.logger.warn(
        `${remote} is reachable from your network without authentication: forward ${f.name} listens on ${f.bind.includes(':') ? `[${f.bind}]` : f.bind}:${port}; bind 127.0.0.1 unless that is intended`,
      );
    }
  }

  /**
   * Open every listener (and eager sessions), then check region and credentials (bounded). If one listener
   * fails, the ones already open are stopped and the error is rethrown (a fatal start-up error).
   */
  async start(): Promise<void> {
    this.stateValue = DaemonState.Running;
    for (const forwardConfig of this.config.forwards) {
      const forward = this.createForward(forwardConfig);
      try {
        await forward.start();
      } catch (err) {
        this.owned.delete(forward);
        await this.stop();
        throw err;
      }
      this.forwards.set(forwardConfig.name, forward);
    }
    try {
      await this.socks.start(this.config.socks ?? [], this.config.tuning);
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.warnExposed();
    await this.checkSetup([...this.config.forwards, ...(this.config.socks ?? [])]);
    this.deps.logger.info(`${this.forwards.size} forward(s) running`);
    // In the background: a slow or unreachable API must not delay the listeners.
    if (this.ledger) this.orphanSweep = this.sweepOrphans(this.ledger);
  }

  /**
   * Stop accepting, drain for the grace period, terminate sessions, and empty the ledger. A reload in
   * progress is cut short (it starts nothing more) and its draining forwards are stopped with the rest,
   * each once. Finishes within `drainGraceMs` + {@link STOP_DEADLINE_SLACK_MS} whatever is in flight
   * (StartSession retries, a dial, a handshake). Idempotent.
   */
  stop(): Promise<void> {
    this.stopPromise ??= this.stopOnce();
    return this.stopPromise;
  }

  private async stopOnce(): Promise<void> {
    this.stateValue = DaemonState.Stopping;
    // A reload's start phase only binds listeners; once it has settled, every forward it made is owned.
    await this.reloadStarting;
    this.forwards.clear();
    const all = [...this.owned];
    const graceMs = this.config.tuning.drainGraceMs;
    const deadlineMs = graceMs + STOP_DEADLINE_SLACK_MS;
    const stopped = Promise.all([
      this.socks.stopAll(graceMs),
      ...all.map((forward) =>
        forward.stop(graceMs).then(
          () => this.owned.delete(forward),
          (err: unknown) =>
            this.deps.logger.warn(
              `forward ${forward.config.name} did not stop cleanly: ${describeError(err)}`,
            ),
        ),
      ),
    ]);
    if (!(await within(stopped, deadlineMs))) {
      this.socks.abandonAll();
      const late = all.filter((f) => this.owned.has(f));
      this.deps.logger.warn(
        `stop deadline (${deadlineMs} ms) passed with ${late.length} forward(s) still closing (${late.map((f) => f.config.name).join(', ')}): resetting their connections and closing their sessions without waiting`,
      );
      for (const forward of late) forward.abandon();
      await within(stopped, 0);
    }
    if (this.ledger) await within(this.ledger.flushed(), LEDGER_FLUSH_TIMEOUT_MS);
    this.stateValue = DaemonState.Stopped;
  }

  /**
   * Apply a new configuration. Forwards whose config is unchanged keep running untouched; removed or
   * changed ones drain and stop; added or changed ones start, taking over the old listener when the
   * address is the same so the port never refuses connections. A forward that fails to start is logged
   * and counted; the rest of the reload still applies. Reloads are serialised; after stop() began, a
   * reload does nothing.
   */
  reload(config: DaemonConfig): Promise<ReloadSummary> {
    const run = this.reloadChain.then(() => this.reloadOnce(config));
    this.reloadChain = run.catch(() => undefined);
    return run;
  }

  private async reloadOnce(config: DaemonConfig): Promise<ReloadSummary> {
    const summary: ReloadSummary = {
      listening: this.forwards.size,
      failed: [],
      stopped: 0,
      started: 0,
      unchanged: 0,
    };
    if (this.stateValue !== DaemonState.Running) {
      this.deps.logger.warn('reload ignored: the daemon is stopping');
      return summary;
    }
    let startPhaseDone!: () => void;
    this.reloadStarting = new Promise<void>((resolve) => (startPhaseDone = resolve));
    const toStop: Forward[] = [];
    let socksDraining: Promise<void> = Promise.resolve();
    try {
      const changedTuning = (Object.keys(config.tuning) as (keyof TuningConfig)[]).filter(
        (key) => !isDeepStrictEqual(config.tuning[key], this.config.tuning[key]),
      );
      const restartAll = changedTuning.some((key) => !STOP_ONLY_TUNING.includes(key));
      if (restartAll) {
        this.deps.logger.info(
          `tuning.${changedTuning.join(', tuning.')} changed: every forward restarts so its sessions use the new values (open connections finish on the old sessions)`,
        );
      }
      const next = new Map(config.forwards.map((f) => [f.name, f]));
      for (const [name, forward] of this.forwards) {
        const wanted = next.get(name);
        if (!wanted || restartAll || !isDeepStrictEqual(wanted, forward.config)) {
          toStop.push(forward);
          this.forwards.delete(name);
        }
      }
      this.config = config;
      this.spill.limitBytes = config.tuning.spillLimitBytes;
      this.notListening.clear();
      // Listeners whose address the new configuration keeps are handed over; the others are closed first,
      // so a new forward may bind a port a removed one held.
      const byAddress = new Map<string, Forward>();
      for (const old of toStop) {
        const key = listenerKey(old.config);
        if (key && config.forwards.some((f) => !this.forwards.has(f.name) && listenerKey(f) === key)) {
          byAddress.set(key, old);
        } else {
          await old.stopAccepting();
        }
      }
      for (const forwardConfig of config.forwards) {
        if (this.forwards.has(forwardConfig.name)) {
          summary.unchanged++;
          continue;
        }
        if (this.stateValue !== DaemonState.Running) break;
        const key = listenerKey(forwardConfig);
        const previous = key ? byAddress.get(key) : undefined;
        if (key) byAddress.delete(key);
        const forward = this.createForward(forwardConfig);
        try {
          await forward.start(previous?.handOverListener());
          this.forwards.set(forwardConfig.name, forward);
          summary.started++;
        } catch (err) {
          this.owned.delete(forward);
          summary.failed.push(forwardConfig.name);
          this.notListening.set(forwardConfig.name, describeError(err));
          this.deps.logger.error(`reload: forward ${forwardConfig.name} not started: ${describeError(err)}`);
        }
      }
      // Old listeners nobody took over (their successor failed, or a stop cut the reload short).
      for (const old of byAddress.values()) await old.stopAccepting();
      if (this.stateValue === DaemonState.Running) {
        socksDraining = (await this.socks.reload(config.socks ?? [], config.tuning, restartAll)).drained;
      }
    } finally {
      startPhaseDone();
    }
    summary.stopped = toStop.length;
    summary.listening = this.forwards.size;
    if (this.stateValue === DaemonState.Running) {
      this.warnExposed();
      this.deps.logger.info(
        `reloaded: ${summary.stopped} stopped, ${summary.started} started, ${summary.unchanged} unchanged; ${summary.listening} of ${config.forwards.length} listening`,
      );
    }
    // The old forwards drain after their successors listen. stop() may join these stops (they are shared).
    const graceMs = config.tuning.drainGraceMs;
    await Promise.all([
      socksDraining,
      ...toStop.map((forward) =>
        forward.stop(graceMs).then(
          () => this.owned.delete(forward),
          (err: unknown) =>
            this.deps.logger.warn(
              `forward ${forward.config.name} did not stop cleanly: ${describeError(err)}`,
            ),
        ),
      ),
    ]);
    return summary;
  }
}
