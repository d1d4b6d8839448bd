/**
 * A real Daemon against the emulator with its monitor (control socket in a private temporary folder,
 * metrics on 127.0.0.1:0), for the status and metrics tests. Also a capturing logger and a condition wait.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { DaemonConfig, ForwardConfig } from '../../src/config/types.js';
import { Daemon } from '../../src/daemon.js';
import type { Emulator } from '../../src/emulator/index.js';
import type { Logger, LogMeta } from '../../src/log.js';
import { createDaemonMetrics } from '../../src/metrics/registry.js';
import { Monitor } from '../../src/monitor.js';
import type { MonitorOptions } from '../../src/monitor.js';
import { emulatorSsm, tuningWith } from '../forward/fixtures.js';

/** One captured log line. */
export interface LogLine {
  level: 'error' | 'warn' | 'info' | 'debug';
  namespace: string;
  message: string;
}

/** A Logger that records every line (debug included) in `lines`. */
export function capturingLogger(lines: LogLine[] = [], namespace = ''): Logger & { lines: LogLine[] } {
  const at =
    (level: LogLine['level']) =>
    (message: string, _meta?: LogMeta): void => {
      lines.push({ level, namespace, message });
    };
  return {
    lines,
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    debugEnabled: true,
    child: (ns: string) => capturingLogger(lines, namespace ? `${namespace}:${ns}` : ns),
  };
}

/** Resolve once `predicate()` holds (checked every 10 ms), or reject after `ms` naming `what`. */
export function eventually(predicate: () => boolean, ms: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const check = (): void => {
      if (predicate()) return resolve();
      if (Date.now() - started > ms) return reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      setTimeout(check, 10);
    };
    check();
  });
}

/** The daemon config of the tests. */
export function daemonConfig(forwards: ForwardConfig[]): DaemonConfig {
  return { forwards, log: { level: 'info', format: 'plain' }, tuning: tuningWith({ drainGraceMs: 0 }) };
}

/** A running daemon with its monitor. */
export interface ObservedDaemon {
  daemon: Daemon;
  monitor: Monitor;
  socketPath: string;
  /** `http://127.0.0.1:<port>` of the metrics server. */
  metricsUrl: string;
  logger: Logger & { lines: LogLine[] };
  /** Bound port of a forward. */
  port(name: string): number;
  close(): Promise<void>;
}

/** Start a Daemon for `forwards` against `emulator`, then its monitor. */
export async function startObservedDaemon(
  emulator: Emulator,
  forwards: ForwardConfig[],
  extra: Partial<Pick<MonitorOptions, 'notifier' | 'signals'>> = {},
): Promise<ObservedDaemon> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pf-status-'));
  const socketPath = path.join(dir, 'run', 'control.sock');
  const ssm = emulatorSsm(emulator);
  const logger = capturingLogger();
  const metrics = createDaemonMetrics('9.9.9-test');
  const daemon = new Daemon(daemonConfig(forwards), {
    logger,
    ssmFor: () => ssm,
    version: '9.9.9-test',
    configFile: '/etc/pf-daemon/test.yaml',
    onReconnected: metrics.observeReconnect,
  });
  await daemon.start();
  const monitor = await Monitor.start({
    daemon,
    logger: logger.child('monitor'),
    controlSocket: socketPath,
    metrics: { registry: metrics, listen: '127.0.0.1:0' },
    ...extra,
  });
  const address = monitor.metrics?.address as AddressInfo;
  return {
    daemon,
    monitor,
    socketPath,
    metricsUrl: `http://127.0.0.1:${address.port}`,
    logger,
    port: (name) => (daemon.running.get(name)?.address as AddressInfo).port,
    async close() {
      await monitor.stop();
      await daemon.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
