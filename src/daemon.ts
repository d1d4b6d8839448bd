/**
 * Daemon lifecycle controller (house style §13): runs every configured forward, reloads the
 * configuration (added forwards start, removed ones drain, unchanged ones keep their connections), and
 * stops gracefully. Signals are wired by the CLI; this class only exposes start/stop/reload.
 */
import { isDeepStrictEqual } from 'node:util';
import type { DaemonConfig, ForwardConfig } from './config/types.js';
import { describeError } from './errors.js';
import { Forward } from './forward/forward.js';
import type { Logger } from './log.js';
import type { SsmApi } from './ssm/types.js';

/** What the daemon needs from outside. */
export interface DaemonDeps {
  logger: Logger;
  /** Builds the SSM client for a forward (region/profile/endpoint come from the forward). */
  ssmFor: (forward: ForwardConfig) => SsmApi;
  /** HTTP User-Agent for data-channel upgrades. Default `pf-daemon`. */
  userAgent?: string;
}

/** Runs forwards until stopped. */
export class Daemon {
  private readonly forwards = new Map<string, Forward>();
  private config: DaemonConfig;

  constructor(
    config: DaemonConfig,
    private readonly deps: DaemonDeps,
  ) {
    this.config = config;
  }

  /** The running forwards by name. */
  get running(): ReadonlyMap<string, Forward> {
    return this.forwards;
  }

  private createForward(forward: ForwardConfig): Forward {
    return new Forward(forward, this.config.tuning, {
      ssm: this.deps.ssmFor(forward),
      logger: this.deps.logger.child(`forward:${forward.name}`),
      userAgent: this.deps.userAgent ?? 'pf-daemon',
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
  }

  /** Stop accepting, drain for the grace period, terminate sessions. */
  async stop(): Promise<void> {
    const all = [...this.forwards.values()];
    this.forwards.clear();
    await Promise.all(all.map((f) => f.stop(this.config.tuning.drainGraceMs)));
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
