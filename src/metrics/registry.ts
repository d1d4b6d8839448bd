/**
 * Prometheus metrics of the daemon (`prom-client`): the stats tree (`src/stats.ts`) rendered at scrape
 * time, plus one histogram that is observed when a reconnect completes. Labels are forward names only
 * (bounded by the config), never addresses of local peers.
 *
 * Counters are the tree's own monotonic counters, copied in at scrape time (`collect`): nothing is
 * counted twice and the data path carries no metrics code. A forward restarted by a reload starts from
 * zero, which Prometheus treats as a counter reset. Process metrics are prom-client's defaults under
 * their standard names (`process_*`, `nodejs_*`), so stock dashboards work.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DaemonStats, ForwardStats, SocksStats } from '../stats.js';

/** Prefix of every pf-daemon metric. */
export const METRIC_PREFIX = 'pf_daemon_';
/** Buckets of `pf_daemon_session_reconnect_seconds`, s: a quick resume is ~0.1–1 s, the budget 120 s. */
export const RECONNECT_BUCKETS_SECONDS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/** The registry and the one event-driven metric. */
export interface DaemonMetrics {
  readonly registry: Registry;
  /** Record a completed reconnect of `forward` that took `ms`. */
  observeReconnect(forward: string, ms: number): void;
  /** The Prometheus text exposition of `stats` (plus process metrics). */
  render(stats: DaemonStats): Promise<string>;
}

/**
 * Build the registry.
 * @param version - pf-daemon version for `pf_daemon_build_info`
 * @param processMetrics - include prom-client's default process metrics (default true)
 */
export function createDaemonMetrics(version: string, processMetrics = true): DaemonMetrics {
  const registry = new Registry();
  let current: DaemonStats | undefined;
  const forwards = (): readonly ForwardStats[] => current?.forwards ?? [];

  /** A counter mirroring a monotonic field of each forward. */
  const counterOf = (
    name: string,
    help: string,
    labelNames: string[],
    fill: (counter: Counter, f: ForwardStats) => void,
  ): void => {
    new Counter({
      name: METRIC_PREFIX + name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const f of forwards()) fill(this, f);
      },
    });
  };
  const gaugeOf = (name: string, help: string, value: (f: ForwardStats) => number): void => {
    new Gauge({
      name: METRIC_PREFIX + name,
      help,
      labelNames: ['forward'],
      registers: [registry],
      collect() {
        this.reset();
        for (const f of forwards()) this.set({ forward: f.name }, value(f));
      },
    });
  };

  counterOf(
    'forward_bytes_total',
    'Bytes carried by a forward: up = from local clients, down = to them.',
    ['forward', 'direction'],
    (c, f) => {
      c.inc({ forward: f.name, direction: 'up' }, f.bytesUp);
      c.inc({ forward: f.name, direction: 'down' }, f.bytesDown);
    },
  );
  counterOf(
    'forward_connections_total',
    'Local connections that ended, by result (failed = no session, no stream or destination refused).',
    ['forward', 'result'],
    (c, f) => {
      c.inc({ forward: f.name, result: 'ok' }, f.connectionsOk);
      c.inc({ forward: f.name, result: 'failed' }, f.connectionsFailed);
    },
  );
  gaugeOf('forward_active_connections', 'Local connections open now.', (f) => f.connectionsActive);
  gaugeOf('forward_listening', '1 while the forward listens on its local port, else 0.', (f) =>
    f.state === 'listening' ? 1 : 0,
  );
  counterOf('sessions_started_total', 'SSM sessions started.', ['forward'], (c, f) =>
    c.inc({ forward: f.name }, f.sessionsStarted),
  );
  gaugeOf(
    'sessions_open',
    'SSM sessions open or reconnecting now.',
    (f) => f.sessions.filter((s) => s.state === 'open' || s.state === 'reconnecting').length,
  );
  counterOf('session_reconnects_total', 'Successful ResumeSession reconnects.', ['forward'], (c, f) =>
    c.inc({ forward: f.name }, f.reconnects),
  );
  counterOf(
    'datachannel_resent_messages_total',
    'Data-channel messages retransmitted.',
    ['forward'],
    (c, f) => c.inc({ forward: f.name }, f.resentMessages),
  );
  gaugeOf('receive_buffered_bytes', 'Download bytes held for slow local readers, bytes.', (f) =>
    f.sessions.reduce((sum, s) => sum + s.bufferedDownBytes, 0),
  );
  gaugeOf('send_buffered_bytes', 'Upload bytes queued before the data channel, bytes.', (f) =>
    f.sessions.reduce((sum, s) => sum + s.bufferedUpBytes, 0),
  );
  // SOCKS listeners (src/socks/): labelled by entry name only, never by destination (clients choose those).
  const socks = (): readonly SocksStats[] => current?.socks ?? [];
  const socksGauge = (name: string, help: string, value: (s: SocksStats) => number): void => {
    new Gauge({
      name: METRIC_PREFIX + name,
      help,
      labelNames: ['socks'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of socks()) this.set({ socks: s.name }, value(s));
      },
    });
  };
  socksGauge(
    'socks_active_connections',
    'SOCKS/HTTP CONNECT client connections open now.',
    (s) => s.connectionsActive,
  );
  socksGauge(
    'socks_destinations',
    'Distinct destinations with a session keeper now.',
    (s) => s.destinations.length,
  );
  new Counter({
    name: `${METRIC_PREFIX}socks_connections_total`,
    help: 'SOCKS/HTTP CONNECT client connections accepted, and those refused by reason.',
    labelNames: ['socks', 'result'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of socks()) {
        this.inc({ socks: s.name, result: 'accepted' }, s.connectionsAccepted);
        this.inc({ socks: s.name, result: 'failed' }, s.connectionsFailed);
        this.inc({ socks: s.name, result: 'not_allowed' }, s.notAllowed);
        this.inc({ socks: s.name, result: 'refused' }, s.refused);
        this.inc({ socks: s.name, result: 'limit' }, s.limitReached);
        this.inc({ socks: s.name, result: 'bad_handshake' }, s.handshakeFailures);
      }
    },
  });
  const reconnectSeconds = new Histogram({
    name: `${METRIC_PREFIX}session_reconnect_seconds`,
    help: 'Time from link loss to link up of each successful reconnect, seconds.',
    buckets: RECONNECT_BUCKETS_SECONDS,
    registers: [registry],
  });
  const buildInfo = new Gauge({
    name: `${METRIC_PREFIX}build_info`,
    help: 'Always 1; the version label names the running pf-daemon.',
    labelNames: ['version'],
    registers: [registry],
  });
  buildInfo.set({ version }, 1);
  if (processMetrics) collectDefaultMetrics({ register: registry });

  return {
    registry,
    observeReconnect: (_forward, ms) => reconnectSeconds.observe(ms / 1_000),
    async render(stats) {
      current = stats;
      try {
        return await registry.metrics();
      } finally {
        current = undefined;
      }
    },
  };
}
