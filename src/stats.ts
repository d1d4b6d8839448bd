/**
 * The one stats tree (docs/architecture.md): `Daemon.stats` → forwards → sessions → channel/mux. Each layer
 * exposes a typed snapshot; `pf-daemon status` (text and `--json`), the Prometheus metrics, systemd's
 * `STATUS=` line and the SIGUSR1 log lines all format this tree and never reach into private fields.
 *
 * The tree is also the `--json` document of `pf-daemon status` (schema documented in `docs/status.md`):
 * fields are only ever added, never renamed or removed; a breaking change bumps {@link STATS_SCHEMA}.
 *
 * Counters on the hot path are plain increments (or, for bytes, the kernel-side counters Node keeps on
 * every socket anyway: `bytesRead`/`bytesWritten`), never per-chunk listeners.
 */
import { documentFor } from './config/types.js';
import type { ForwardConfig, SocksConfig } from './config/types.js';
import type { ReliableChannelStats } from './datachannel/reliable.js';
import type { BasicRelayStats } from './forward/basic.js';
import type { SessionInputStats } from './forward/input-guard.js';
import type { SmuxSessionStats } from './mux/session.js';
import type { Socket } from 'node:net';

/** Version of the `--json` schema; bumped only on a breaking change (see `docs/status.md`). */
export const STATS_SCHEMA = 1;

/** The latest error a session met (link loss, failed resume attempt, failure). */
export interface SessionErrorStats {
  /** One line, already redacted by the caller's rules (no tokens, no URL query strings). */
  message: string;
  /** Wall-clock time it happened, ISO 8601 UTC. */
  at: string;
}

/** One SSM session of a forward (spec §10.5). */
export interface SessionStats {
  /** SessionId; `null` before StartSession answered. */
  id: string | null;
  /** `mux` or `basic` once the handshake decided; `null` before. */
  mode: 'mux' | 'basic' | null;
  /** Session state (`starting`, `connecting`, `handshaking`, `open`, `reconnecting`, `closing`, `closed`). */
  state: string;
  /** Wall-clock time the session object was created (StartSession called), ISO 8601 UTC. */
  startedAt: string;
  /** Time since `startedAt`, ms. */
  ageMs: number;
  /** Successful ResumeSession reconnects. */
  reconnects: number;
  /** Wall-clock time the latest reconnect completed, ISO 8601 UTC; `null` before the first. */
  lastReconnectAt: string | null;
  /** Link loss to link up of the latest reconnect, ms; `null` before the first. */
  lastReconnectMs: number | null;
  /** Data-channel messages retransmitted (timer, attach, resume and pause probe). */
  resentMessages: number;
  /** Our messages committed and not yet acknowledged by the agent (each ≤ 1024 payload bytes). */
  unackedMessages: number;
  /** Upload bytes queued in the smux session, not yet in a data-channel message, bytes. */
  bufferedUpBytes: number;
  /** Download bytes held for slow local readers in smux streams, bytes. */
  bufferedDownBytes: number;
  /** Agent messages held in the reorder buffer ahead of a gap. */
  reorderBufferedMessages: number;
  /** The latest error, `null` if none. */
  lastError: SessionErrorStats | null;
  /** Reliable-channel counters (`src/datachannel/reliable.ts`). */
  channel: ReliableChannelStats;
  /** smux counters (`src/mux/session.ts`); `null` in basic mode or before open. */
  mux: SmuxSessionStats | null;
  /** Basic-mode relay counters (`src/forward/basic.ts`); `null` in mux mode or before open. */
  basic: BasicRelayStats | null;
  /** Session-layer input checks (`src/forward/input-guard.ts`). */
  input: SessionInputStats;
}

/** One session as its forward sees it: the session's own stats plus the local connections it carries. */
export interface ForwardSessionStats extends SessionStats {
  /** Local connections on this session now (basic mode: the one relayed plus those queued behind it). */
  connections: number;
}

/** Forward states as seen from outside. */
export type ForwardState = 'starting' | 'listening' | 'failed' | 'stopped';

/** One forward: its listener, counters, and the session it holds (spec §9). */
export interface ForwardStats {
  /** Forward name (the label of every metric). */
  name: string;
  /** Configured bind address. */
  bind: string;
  /** Bound port once listening, else the configured one (0 = any). */
  localPort: number;
  /** `bind:localPort` (`[v6]:port`) once listening; `null` otherwise. */
  listen: string | null;
  /** Managed node id. */
  target: string;
  /** Remote host as seen from the instance (`localhost` when none is configured). */
  host: string;
  /** Remote port. */
  remotePort: number;
  /** SSM document used for the session. */
  document: string;
  /** `listening`, or `failed` with `error` when its port could not be opened. */
  state: ForwardState;
  /** Why the forward is not listening (state `failed`); `null` otherwise. */
  error: string | null;
  /** Local connections accepted. */
  connectionsAccepted: number;
  /** Local connections open now. */
  connectionsActive: number;
  /** Connections that closed without a failure. */
  connectionsOk: number;
  /** Connections that failed: no session, no stream, or the agent could not reach the destination. */
  connectionsFailed: number;
  /** Sessions started (StartSession calls that went ahead). */
  sessionsStarted: number;
  /** Sessions that ended. */
  sessionsEnded: number;
  /** Successful reconnects over every session of the forward (monotonic). */
  reconnects: number;
  /** Data-channel messages resent over every session of the forward (monotonic). */
  resentMessages: number;
  /** Bytes read from local clients (towards the target), bytes. */
  bytesUp: number;
  /** Bytes written to local clients (from the target), bytes. */
  bytesDown: number;
  /** The forward's live sessions (open or reconnecting), at most its `sessions` (striping), oldest first. */
  sessions: ForwardSessionStats[];
}

/** One destination of a SOCKS listener: its keeper's sessions and the connections to it. */
export interface SocksDestinationStats {
  /** Destination host as clients named it (canonical: lower case, IPv6 compressed), unresolved. */
  host: string;
  /** Destination port. */
  port: number;
  /** SSM document of its sessions (the plain one for loopback destinations). */
  document: string;
  /** Client connections to it now. */
  connectionsActive: number;
  /** Client connections to it since the destination was opened. */
  connectionsTotal: number;
  /** Its live sessions. */
  sessions: SessionStats[];
}

/** One dynamic-forwarding listener (`socks:`, `-D`; src/socks/server.ts). */
export interface SocksStats {
  name: string;
  bind: string;
  /** Bound port once listening, else the configured one. */
  localPort: number;
  /** `bind:localPort` once listening; `null` otherwise. */
  listen: string | null;
  target: string;
  state: ForwardState;
  /** Why it is not listening (state `failed`); `null` otherwise. */
  error: string | null;
  /** `username` when RFC 1929 / Basic credentials are required, else `none`. */
  auth: 'username' | 'none';
  /** Most distinct destinations at once. */
  maxSessions: number;
  /** Client connections accepted. */
  connectionsAccepted: number;
  /** Client connections open now. */
  connectionsActive: number;
  /** Connections refused or failed before or while connecting (every reason below, and session failures). */
  connectionsFailed: number;
  /** Malformed, unsupported, unauthenticated or too slow handshakes. */
  handshakeFailures: number;
  /** CONNECTs refused by the allow list. */
  notAllowed: number;
  /** CONNECTs refused because maxSessions destinations were busy. */
  limitReached: number;
  /** CONNECTs the agent reported it could not connect (ConnectToPortError). */
  refused: number;
  /** Bytes read from clients (handshakes included), bytes. */
  bytesUp: number;
  /** Bytes written to clients (replies included), bytes. */
  bytesDown: number;
  /** Destinations with a session keeper now. */
  destinations: SocksDestinationStats[];
}

/** The whole daemon. */
export interface DaemonStats {
  /** {@link STATS_SCHEMA}. */
  schema: number;
  /** pf-daemon version (package.json). */
  version: string;
  /** Process id. */
  pid: number;
  /** Wall-clock start of the daemon, ISO 8601 UTC. */
  startedAt: string;
  /** Time since `startedAt`, ms. */
  uptimeMs: number;
  /** Config file in use; `null` when running from flags only. */
  configFile: string | null;
  /** Every configured forward, in config order. */
  forwards: ForwardStats[];
  /** Every configured SOCKS listener, in config order (absent when none is configured). */
  socks?: SocksStats[];
}

/** Readiness: every configured forward listens. */
export interface Readiness {
  ready: boolean;
  /** One line per forward that is not listening, naming it and why. */
  reasons: string[];
}

/** Totals over a stats tree, for one-line summaries (systemd `STATUS=`, the status header). */
export interface StatsTotals {
  forwards: number;
  /** Forwards not listening. */
  failedForwards: number;
  /** Sessions in state `open` or `reconnecting`. */
  sessionsOpen: number;
  /** Local connections open now. */
  connections: number;
  /** Reconnects over every forward. */
  reconnects: number;
  bytesUp: number;
  bytesDown: number;
}

/** Sum a stats tree. */
export function totalsOf(stats: DaemonStats): StatsTotals {
  const totals: StatsTotals = {
    forwards: stats.forwards.length,
    failedForwards: 0,
    sessionsOpen: 0,
    connections: 0,
    reconnects: 0,
    bytesUp: 0,
    bytesDown: 0,
  };
  for (const s of stats.socks ?? []) {
    totals.connections += s.connectionsActive;
    totals.bytesUp += s.bytesUp;
    totals.bytesDown += s.bytesDown;
    for (const d of s.destinations)
      totals.sessionsOpen += d.sessions.filter(
        (x) => x.state === 'open' || x.state === 'reconnecting',
      ).length;
  }
  for (const f of stats.forwards) {
    if (f.state !== 'listening') totals.failedForwards++;
    totals.sessionsOpen += f.sessions.filter((s) => s.state === 'open' || s.state === 'reconnecting').length;
    totals.connections += f.connectionsActive;
    totals.reconnects += f.reconnects;
    totals.bytesUp += f.bytesUp;
    totals.bytesDown += f.bytesDown;
  }
  return totals;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/**
 * The one-line picture, as systemd shows it: `3 forwards · 2 sessions open · 5 connections · 1 reconnect`
 * (plus `· 1 not listening` when a forward failed). Figures only: no addresses, no rates.
 */
export function summaryLine(stats: DaemonStats): string {
  const t = totalsOf(stats);
  const parts = [
    plural(t.forwards, 'forward'),
    `${plural(t.sessionsOpen, 'session')} open`,
    plural(t.connections, 'connection'),
    plural(t.reconnects, 'reconnect'),
  ];
  if (t.failedForwards > 0) parts.push(`${t.failedForwards} not listening`);
  return parts.join(' · ');
}

/** `host:port`, bracketing IPv6 literals. */
export function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The stats of a configured forward that is not running (its listener failed, or it has not started). */
export function failedForwardStats(config: ForwardConfig, error: string): ForwardStats {
  return {
    name: config.name,
    bind: config.bind,
    localPort: config.localPort,
    listen: null,
    target: config.target,
    host: config.host ?? 'localhost',
    remotePort: config.remotePort,
    document: documentFor(config),
    state: 'failed',
    error,
    connectionsAccepted: 0,
    connectionsActive: 0,
    connectionsOk: 0,
    connectionsFailed: 0,
    sessionsStarted: 0,
    sessionsEnded: 0,
    reconnects: 0,
    resentMessages: 0,
    bytesUp: 0,
    bytesDown: 0,
    sessions: [],
  };
}

/** The stats of a configured SOCKS listener that is not running. */
export function failedSocksStats(config: SocksConfig, error: string): SocksStats {
  return {
    name: config.name,
    bind: config.bind,
    localPort: config.localPort,
    listen: null,
    target: config.target,
    state: 'failed',
    error,
    auth: config.username !== undefined ? 'username' : 'none',
    maxSessions: config.maxSessions,
    connectionsAccepted: 0,
    connectionsActive: 0,
    connectionsFailed: 0,
    handshakeFailures: 0,
    notAllowed: 0,
    limitReached: 0,
    refused: 0,
    bytesUp: 0,
    bytesDown: 0,
    destinations: [],
  };
}

/** `850 ms`, `12.3 s`, `4 min 5 s`, `2 h 3 min`: a session's lifetime for its end line. */
export function formatDuration(ms: number): string {
  if (ms < 1_000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)} s`;
  const s = Math.floor(ms / 1_000);
  if (s < 3_600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3_600)} h ${Math.floor((s % 3_600) / 60)} min`;
}

/**
 * Bytes a front end has moved: what its closed sockets moved (summed at close) plus the open sockets' own
 * `bytesRead`/`bytesWritten` now, so the data path carries no counting code (forward.ts, socks/server.ts).
 */
export function frontEndBytes(
  open: Iterable<Socket>,
  closedUp: number,
  closedDown: number,
): { bytesUp: number; bytesDown: number } {
  let bytesUp = closedUp;
  let bytesDown = closedDown;
  for (const socket of open) {
    bytesUp += socket.bytesRead;
    bytesDown += socket.bytesWritten;
  }
  return { bytesUp, bytesDown };
}
