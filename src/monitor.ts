/**
 * Everything that reports on a running daemon, started and stopped together by the CLI: the control
 * socket (`pf-daemon status`), the metrics server, systemd's `STATUS=` line and the SIGUSR1 log lines.
 * All of them read the one stats tree (`Daemon.stats()`, `src/stats.ts`); none touches the data path.
 */
import { ControlServer } from './control/server.js';
import { describeError } from './errors.js';
import type { Logger } from './log.js';
import { MetricsServer } from './metrics/server.js';
import type { DaemonMetrics } from './metrics/registry.js';
import type { SdNotifier } from './sd-notify.js';
import { formatBytes } from './control/render.js';
import { summaryLine } from './stats.js';
import type { DaemonStats, ForwardStats, Readiness } from './stats.js';

/** How often the `STATUS=` picture is recomputed (and at most sent), ms. */
export const STATUS_INTERVAL_MS = 1_000;

/** The daemon surface the monitor reads. */
export interface MonitoredDaemon {
  stats(): DaemonStats;
  readiness(): Readiness;
}

/** A process-like source of SIGUSR1. */
export interface Usr1Source {
  on(signal: 'SIGUSR1', listener: () => void): unknown;
  off(signal: 'SIGUSR1', listener: () => void): unknown;
}

/** What the monitor needs. */
export interface MonitorOptions {
  daemon: MonitoredDaemon;
  logger: Logger;
  /** Control socket path; unset = no control socket. */
  controlSocket?: string;
  /** Metrics registry and address; unset = no metrics server. */
  metrics?: { registry: DaemonMetrics; listen: string };
  /** systemd notifier for `STATUS=`; unset or disabled = no updates. */
  notifier?: SdNotifier;
  /** Where SIGUSR1 comes from; unset = not handled. */
  signals?: Usr1Source;
}

/** One SIGUSR1 line: a forward's figures. */
export function forwardLine(f: ForwardStats): string {
  const open = f.sessions.filter((s) => s.state === 'open' || s.state === 'reconnecting').length;
  const state =
    f.state === 'listening' ? `listening on ${f.listen}` : `${f.state}${f.error ? ` (${f.error})` : ''}`;
  return `${f.name}: ${state}, ${open} session(s) open, ${f.connectionsActive} connection(s) (${f.connectionsAccepted} total, ${f.connectionsFailed} failed), ${f.reconnects} reconnect(s), up ${formatBytes(f.bytesUp)}, down ${formatBytes(f.bytesDown)}`;
}

/** The running monitor. */
export class Monitor {
  private statusTimer: NodeJS.Timeout | undefined;
  private lastStatus: string | undefined;
  private onUsr1: (() => void) | undefined;

  private constructor(
    private readonly options: MonitorOptions,
    private readonly control: ControlServer | undefined,
    private readonly metricsServer: MetricsServer | undefined,
  ) {}

  /** The control server, when it started. */
  get controlServer(): ControlServer | undefined {
    return this.control;
  }

  /** The metrics server, when configured. */
  get metrics(): MetricsServer | undefined {
    return this.metricsServer;
  }

  /**
   * Start everything configured. A control socket that cannot be opened is a warning (the forwards work
   * without it); a metrics address that cannot be served is an error, since the user asked for it.
   * @throws ControlError `PF_ERR_METRICS_LISTEN`
   */
  static async start(options: MonitorOptions): Promise<Monitor> {
    const log = options.logger;
    const { daemon } = options;
    let control: ControlServer | undefined;
    if (options.controlSocket) {
      try {
        control = await ControlServer.start({
          path: options.controlSocket,
          stats: () => daemon.stats(),
          logger: log,
        });
      } catch (err) {
        log.warn(`pf-daemon status will not work: ${describeError(err)}`);
      }
    }
    let metricsServer: MetricsServer | undefined;
    if (options.metrics) {
      try {
        metricsServer = await MetricsServer.start({
          listen: options.metrics.listen,
          metrics: options.metrics.registry,
          stats: () => daemon.stats(),
          readiness: () => daemon.readiness(),
          logger: log,
        });
      } catch (err) {
        await control?.close();
        throw err;
      }
    }
    const monitor = new Monitor(options, control, metricsServer);
    monitor.startStatusUpdates();
    if (options.signals) {
      const signals = options.signals;
      monitor.onUsr1 = () => monitor.logForwards();
      signals.on('SIGUSR1', monitor.onUsr1);
    }
    return monitor;
  }

  /** Write one info line per forward (SIGUSR1). */
  logForwards(): void {
    const stats = this.options.daemon.stats();
    this.options.logger.info(summaryLine(stats));
    for (const f of stats.forwards) this.options.logger.info(forwardLine(f));
  }

  private startStatusUpdates(): void {
    const notifier = this.options.notifier;
    if (!notifier?.enabled) return;
    const tick = (): void => {
      if (!notifier.enabled) return;
      const line = summaryLine(this.options.daemon.stats());
      if (line === this.lastStatus) return;
      this.lastStatus = line;
      void notifier.status(line);
    };
    this.statusTimer = setInterval(tick, STATUS_INTERVAL_MS);
    this.statusTimer.unref();
  }

  /** Someone else set `STATUS=` (READY after a reload): send the picture again on the next tick. */
  statusOverwritten(): void {
    this.lastStatus = undefined;
  }

  /** Stop everything (before the daemon drains, so status no longer answers for a stopping daemon). */
  async stop(): Promise<void> {
    clearInterval(this.statusTimer);
    if (this.onUsr1) this.options.signals?.off('SIGUSR1', this.onUsr1);
    await Promise.all([this.control?.close(), this.metricsServer?.close()]);
  }
}
