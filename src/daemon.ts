/**
 * Daemon lifecycle controller (house style §13): runs every configured forward, reloads, drains.
 * Placeholder until the forwarding issue lands; the CLI already codes against this interface.
 */
import type { DaemonConfig, ForwardConfig } from './config/types.js';
import type { Logger } from './log.js';
import type { SsmApi } from './ssm/types.js';
import { TunnelError } from './errors.js';

/** What the daemon needs from outside. */
export interface DaemonDeps {
  logger: Logger;
  /** Builds the SSM client for a forward (region/profile/endpoint come from the forward). */
  ssmFor: (forward: ForwardConfig) => SsmApi;
}

/** Runs forwards until stopped. */
export class Daemon {
  constructor(
    private readonly config: DaemonConfig,
    private readonly deps: DaemonDeps,
  ) {}

  /** Open every listener (and eager sessions). Rejects on a fatal start-up error. */
  async start(): Promise<void> {
    this.deps.logger.info(`would start ${this.config.forwards.length} forward(s)`);
    throw new TunnelError('PF_ERR_LISTEN', 'forwarding is not implemented yet');
  }

  /** Stop accepting, drain for the grace period, terminate sessions. */
  async stop(): Promise<void> {}

  /** Apply a new configuration: start added forwards, drain removed ones, keep unchanged ones. */
  async reload(_config: DaemonConfig): Promise<void> {}
}
