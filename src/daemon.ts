/**
 * Daemon lifecycle controller (house style §13): runs every configured forward, reloads the
 * configuration (added forwards start, removed ones drain, unchanged ones keep their connections), and
 * stops gracefully. Signals are wired by the CLI; this class only exposes start/stop/reload.
 */
import os from 'node:os';
import { isDeepStrictEqual } from 'node:util';
import type { DaemonConfig, ForwardConfig } from './config/types.js';
import { describeError } from './errors.js';
import { Forward } from './forward/forward.js';
import type { Logger } from './log.js';
import type { SsmApi } from './ssm/types.js';
import { SpillStore } from './mux/spill.js';
import { SessionLedger } from './forward/ledger.js';
import type { LedgerEntry } from './forward/ledger.js';
import type { TunnelSession } from './forward/session.js';
import type { ForwardTargets } from './targets/resolve.js';

/** Where an SSM API lives: a forward's region/profile/endpoint overrides. */
export type SsmLocation = Pick<ForwardConfig, 'region' | 'profile' | 'endpoint'>;

/** Longest a TerminateSession for a crashed daemon's leftover session may take, ms (our default). */
const ORPHAN_TERMINATE_TIMEOUT_MS = 15_000;

/** What the daemon needs from outside. */
export interface DaemonDeps {
  logger: Logger;
  /** Builds the SSM client for a forward (region/profile/endpoint come from the forward). */
  ssmFor: (where: SsmLocation) => SsmApi;
  /** Builds what resolves a forward's target at each session start (`src/targets/resolve.ts`). */
  targetsFor?: (forward: ForwardConfig) => ForwardTargets;
  /** HTTP User-Agent for data-channel upgrades. Default `pf-daemon`. */
  userAgent?: string;
  /**
   * Folder of the session ledger (spec §10.4): open SessionIds are recorded there so sessions left by a
   * killed daemon are terminated on the next start. Unset = no ledger.
   */
  ledgerDir?: string;
}

/** Runs forwards until stopped. */
export class Daemon {
  private readonly forwards = new Map<string, Forward>();
  private config: DaemonConfig;
  private readonly ledger: SessionLedger | undefined;
  /** One spill budget for every forward, so `tuning.spillLimitBytes` is daemon-wide. */
  private readonly spill: SpillStore;
  /** Settles when sessions left by a crashed daemon have been terminated (started by start()). */
  orphanSweep: Promise<void> = Promise.resolve();

  constructor(
    config: DaemonConfig,
    private readonly deps: DaemonDeps,
  ) {
    this.config = config;
    this.spill = new SpillStore({ directory: os.tmpdir(), limitBytes: config.tuning.spillLimitBytes });
    this.ledger = deps.ledgerDir ? new SessionLedger(deps.ledgerDir, deps.logger.child('ledger')) : undefined;
  }

  /** The running forwards by name. */
  get running(): ReadonlyMap<string, Forward> {
    return this.forwards;
  }

  private createForward(forwardConfig: ForwardConfig): Forward {
    const forward = new Forward(forwardConfig, this.config.tuning, {
      ssm: this.deps.ssmFor(forwardConfig),
      logger: this.deps.logger.child(`forward:${forwardConfig.name}`),
      userAgent: this.deps.userAgent ?? 'pf-daemon',
      ...(this.deps.targetsFor ? { targets: this.deps.targetsFor(forwardConfig) } : {}),
      spill: this.spill,
    });
    forward.on('session', (session: TunnelSession) => this.record(session, forwardConfig));
    return forward;
  }

  /** Keep an open session in the ledger until it closes. */
  private record(session: TunnelSession, forward: ForwardConfig): void {
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
   * Open every listener (and eager sessions). If one listener fails, the ones already open are stopped
   * and the error is rethrown (a fatal start-up error).
   */
  async start(): Promise<void> {
    for (const forwardConfig of this.config.forwards) {
      const forward = this.createForward(forwardConfig);
      try {
        await forward.start();
      } catch (err) {
        await this.stop();
        throw err;
      }
      this.forwards.set(forwardConfig.name, forward);
    }
    this.deps.logger.info(`${this.forwards.size} forward(s) running`);
    // In the background: a slow or unreachable API must not delay the listeners.
    if (this.ledger) this.orphanSweep = this.sweepOrphans(this.ledger);
  }

  /** Stop accepting, drain for the grace period, terminate sessions. */
  async stop(): Promise<void> {
    const all = [...this.forwards.values()];
    this.forwards.clear();
    await Promise.all(all.map((f) => f.stop(this.config.tuning.drainGraceMs)));
    await this.ledger?.flushed();
  }

  /**
   * Apply a new configuration. Forwards whose config is unchanged keep running untouched; removed or
   * changed ones drain and stop; added or changed ones start. A forward that fails to start is logged and
   * skipped; the rest of the reload still applies.
   */
  async reload(config: DaemonConfig): Promise<void> {
    const tuningChanged = !isDeepStrictEqual(config.tuning, this.config.tuning);
    const next = new Map(config.forwards.map((f) => [f.name, f]));
    const toStop: Forward[] = [];
    for (const [name, forward] of this.forwards) {
      const wanted = next.get(name);
      if (!wanted || tuningChanged || !isDeepStrictEqual(wanted, forward.config)) {
        toStop.push(forward);
        this.forwards.delete(name);
      }
    }
    this.config = config;
    this.spill.limitBytes = config.tuning.spillLimitBytes;
    await Promise.all(toStop.map((f) => f.stop(config.tuning.drainGraceMs)));
    let started = 0;
    for (const forwardConfig of config.forwards) {
      if (this.forwards.has(forwardConfig.name)) continue;
      const forward = this.createForward(forwardConfig);
      try {
        await forward.start();
        this.forwards.set(forwardConfig.name, forward);
        started++;
      } catch (err) {
        this.deps.logger.error(`reload: forward ${forwardConfig.name} not started: ${describeError(err)}`);
      }
    }
    this.deps.logger.info(
      `reloaded: ${toStop.length} stopped, ${started} started, ${this.forwards.size - started} unchanged`,
    );
  }
}
