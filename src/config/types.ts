/**
 * The configuration model: what a forward is, and the tuning knobs with their documented defaults
 * (see docs/architecture.md, Conventions). The YAML loader and the CLI both produce a {@link DaemonConfig};
 * inner modules receive the frozen, resolved result and apply no defaults of their own.
 */
import type { LogFormat, LogLevel } from '../log.js';
import { DEFAULT_CLIENT_VERSION } from '../datachannel/constants.js';
import {
  SESSION_RECEIVE_BUFFER_DEFAULT_BYTES,
  STREAM_BACKLOG_LIMIT_DEFAULT_BYTES,
  STREAM_RECEIVE_BUFFER_DEFAULT_BYTES,
} from '../mux/defaults.js';
import { isLoopbackHost } from '../targets/destination.js';

/** SSM document for `localhost:<port>` on the instance (spec §2.1). */
export const DOCUMENT_LOCAL = 'AWS-StartPortForwardingSession';
/** SSM document for `<host>:<port>` reachable from the instance (spec §2.1). */
export const DOCUMENT_REMOTE_HOST = 'AWS-StartPortForwardingSessionToRemoteHost';

/** One forward: a local listener tunnelled to one remote port through one SSM session at a time. */
export interface ForwardConfig {
  /** Unique name used in logs and for reload matching. Default: `<localPort>:<host|localhost>:<remotePort>@<target>`. */
  name: string;
  /**
   * Where the session goes, in one of the forms of `src/targets/spec.ts`: a managed node id (`i-…`, `mi-…`),
   * `name:<Name tag>` or a bare word (`web-1`), `tag:<Key>=<Value>`, `ecs:<cluster>/<service|taskId>[/<container>]`
   * or `ecs:<cluster>_<taskId>_<runtimeId>`. Non-id forms are resolved at each session start (cached ≤ 60 s).
   */
  target: string;
  /** Several targets match: `one` (default) fails listing them, `any` picks one online match at random. */
  pick?: TargetPick;
  /** Remote port (`portNumber`), 1–65535. */
  remotePort: number;
  /** Remote host as seen from the instance; set ⇒ `AWS-StartPortForwardingSessionToRemoteHost`. */
  host?: string;
  /** Local listening port, 0–65535 (0 = any free port). Default: `remotePort`. */
  localPort: number;
  /** Local bind address. Default `127.0.0.1` (never all interfaces unless asked). */
  bind: string;
  /** AWS region; default from the SDK chain (`AWS_REGION`, profile). */
  region?: string;
  /** Named AWS profile (SSO profiles included); default from the SDK chain. */
  profile?: string;
  /** SSM API endpoint override (e.g. the emulator); `AWS_ENDPOINT_URL_SSM` also works through the SDK. */
  endpoint?: string;
  /** ECS API endpoint override for `ecs:` targets; `AWS_ENDPOINT_URL_ECS` also works through the SDK. */
  ecsEndpoint?: string;
  /**
   * Session document, for organisations that publish their own port-forwarding documents. Default:
   * `AWS-StartPortForwardingSessionToRemoteHost` when `host` is set and not loopback, else
   * `AWS-StartPortForwardingSession` (see {@link documentFor}).
   */
  documentName?: string;
  /** Extra StartSession parameters of a custom `documentName` (each sent as a one-element list). */
  parameters?: Readonly<Record<string, string>>;
  /** StartSession `Reason`, 1–256 chars, shown in session history. */
  reason?: string;
  /** Start the session at startup instead of on the first connection. Default false. */
  eager: boolean;
  /** Terminate the session after this many ms with no local connections; 0 = never. Default 600000 (10 min). */
  idleStopMs: number;
  /**
   * Most SSM sessions this forward stripes its connections across, 1–16. Default 1. A new connection goes to
   * the open session with the fewest connections; another starts (lazily) only when every open one already
   * carries a connection. Each session is one session worker on the instance and one StartSession call; the
   * agent paces each at about 1 MB/s, so N sessions lift the ceiling of a many-connection workload N-fold.
   */
  sessions: number;
  /** Send smux NOPs every 60 s to defeat the service idle timeout (spec §10.2). Default false. */
  keepAlive: boolean;
  /**
   * After a local connection half-closes (EOF), how long to keep its stream open with no data from the
   * remote before sending FIN, ms; 0 = FIN at once. Default 2000. smux v1 as the agent runs it has no
   * half-close (spec §9.4): a FIN makes the agent close the destination socket completely, so a reply the
   * destination had not sent yet would be lost. Holding the FIN back lets a server that answers a complete
   * request (HTTP/1.0, `nc -N`, many RPCs) reply; the timer restarts on every chunk from the remote, so a
   * long reply is never cut. The destination never sees the EOF, so servers that wait for EOF before
   * answering still cannot work. Why 2000: request/response servers answer in well under 2 s, and a server
   * that keeps the connection open after its reply delays the client's EOF by at most that much.
   */
  halfCloseLingerMs: number;
  /**
   * Accept an `endpoint` with plain `http://` to a host that is not loopback. Default false: the
   * StartSession answer carries the session token, which would travel in clear.
   */
  allowInsecureEndpoint: boolean;
}

/**
 * One dynamic-forwarding listener (`-D`, `socks:`; `src/socks/`): SOCKS5 and HTTP CONNECT on one port, each
 * CONNECT reaching `host:port` as seen from `target`, one SSM session per distinct destination.
 */
export interface SocksConfig {
  /** Unique name (shared namespace with forwards), used in logs and stats. Default `socks:<localPort>@<target>`. */
  name: string;
  /** Where the sessions go, in the forms of {@link ForwardConfig.target}. */
  target: string;
  /** Several targets match: as {@link ForwardConfig.pick}. */
  pick?: TargetPick;
  /** Local bind address. Default `127.0.0.1`. Not loopback ⇒ `allow` and `username`/`password` are required. */
  bind: string;
  /** Local listening port, 0–65535 (0 = any free port). Default 1080. */
  localPort: number;
  /** AWS region, as for forwards. */
  region?: string;
  /** Named AWS profile, as for forwards. */
  profile?: string;
  /** SSM API endpoint override, as for forwards. */
  endpoint?: string;
  /** ECS API endpoint override, as for forwards. */
  ecsEndpoint?: string;
  /**
   * Destinations clients may ask for: rules of `src/socks/allow.ts` (`cidr[:ports]`, `name[:ports]`,
   * `*.domain[:ports]`, `*`). Default `['*']` on a loopback bind; required otherwise.
   */
  allow: readonly string[];
  /** Most distinct destinations (each one SSM session) open at once, 1–256. Default 16. */
  maxSessions: number;
  /** RFC 1929 username (1–255 bytes) clients must send; with `password`. Required on a non-loopback bind. */
  username?: string;
  /** RFC 1929 password (1–255 bytes); never logged. */
  password?: string;
  /** StartSession `Reason`, as for forwards. */
  reason?: string;
  /** A destination's session ends after this many ms with no connection to it; 0 = never. Default 600000. */
  idleStopMs: number;
  /** smux keep-alive NOPs on each destination's session, as for forwards. Default false. */
  keepAlive: boolean;
  /** After a client EOF, ms of remote silence before FIN, as {@link ForwardConfig.halfCloseLingerMs}. Default 2000. */
  halfCloseLingerMs: number;
  /** Accept a plain-http endpoint to a non-loopback host, as for forwards. Default false. */
  allowInsecureEndpoint: boolean;
}

/** Documented defaults of a `socks:` entry's optional behaviour. */
export const defaultSocks = Object.freeze({
  bind: '127.0.0.1',
  localPort: 1080,
  maxSessions: 16,
  idleStopMs: 600_000,
  keepAlive: false,
  halfCloseLingerMs: 2_000,
  allowInsecureEndpoint: false,
  /** Allow list of a loopback listener without one: everything the target can reach. */
  loopbackAllow: Object.freeze(['*']) as readonly string[],
});

/** How a target form that matches several instances or tasks is settled. */
export type TargetPick = 'one' | 'any';

/** Knobs of the protocol engine. All have defaults in {@link defaultTuning}. */
export interface TuningConfig {
  /** ClientVersion sent in OpenDataChannel and HandshakeResponse (spec §3.3). Default `1.2.694.0`. */
  clientVersion: string;
  /**
   * Max un-acked outgoing messages in flight (each ≤ 1024 B) (spec §9.6). Default 256.
   *
   * Why 256 (256 KiB in flight): upload throughput is `window / RTT` until a CPU is the limit. On loopback
   * the RTT is well under 5 ms, so 256 KiB already allows > 50 MB/s; measured (issue 7, 2 cores, separate
   * processes) 256 and 1024 give the same CPU-bound upload (~15–18 MB/s unpaced, the larger window slightly
   * worse from longer ack bursts), and through a real region (RTT 20–50 ms) 256 KiB still allows 5–13 MB/s,
   * 10–20× the reference client's paced 0.6–0.8 MB/s. It stays far below the agent's 4 MiB session-wide
   * smux receive stall (spec §9.4), so one busy session never drives the agent into the stall by itself and
   * a destination that stops reading is noticed after 256 KiB, not 4 MiB. Raise it for long fat paths.
   */
  sendWindowMessages: number;
  /** Max out-of-order incoming messages buffered (spec §7.2). Default 10000. */
  reorderLimitMessages: number;
  /** Bytes kept in memory per smux stream for a slow local reader before spilling (spec §9.6). Default 4 MiB. */
  streamReceiveBufferBytes: number;
  /** Bytes kept in memory per session for slow local readers before spilling (spec §9.6). Default 64 MiB. */
  sessionReceiveBufferBytes: number;
  /**
   * Bytes that may wait for one connection's local reader (memory + spill file) before that connection is
   * reset (spec §9.6). Default 512 MiB.
   *
   * Why 512 MiB: the agent sends at most ~1 MiB/s per session (1 KiB messages, 1 ms apart, spec §9.2), so a
   * reader that stops behind a full-speed download (a paused pager, a Ctrl-Z'd psql) can stay stopped for
   * 8 minutes or more and still get every byte; a reader gone that long is more likely abandoned than
   * paused, and keeping a growing file for it helps nobody. It is twice the 256 MiB floor asked for in
   * issue 10 and, with the 2 GiB daemon-wide `spillLimitBytes`, lets four such connections stall at once.
   */
  streamBacklogLimitBytes: number;
  /**
   * Bytes all spill files of the daemon may hold together (disk in `$TMPDIR`), across every forward and
   * session; 0 = never spill (a connection is reset once its memory is full). Default 2 GiB.
   */
  spillLimitBytes: number;
  /** WebSocket ping interval, ms (spec §3.4). Default 30000. */
  pingIntervalMs: number;
  /** No frame or pong for this long ⇒ link dead, ms (spec §3.4). Default 60000. */
  livenessTimeoutMs: number;
  /** WebSocket connect timeout, ms (spec §3.1). Default 15000. */
  connectTimeoutMs: number;
  /** No HandshakeRequest this long after OpenDataChannel ⇒ failure, ms (spec §3.2). Default 30000. */
  handshakeTimeoutMs: number;
  /** Total time ResumeSession reconnects may take before the session is declared lost, ms (spec §10.3). Default 120000. */
  resumeBudgetMs: number;
  /** On shutdown, time open connections get to finish, ms. Default 10000. */
  drainGraceMs: number;
  /** No ack progress while connected for this long ⇒ session terminated, ms (spec §7.3). Default 300000. */
  giveUpMs: number;
  /** Keep-alive NOP interval when `keepAlive` is on, ms (spec §10.2). Default 60000. */
  keepAliveIntervalMs: number;
}

/** Logging options. */
export interface LogConfig {
  /** Default `info`. */
  level: LogLevel;
  /** Default `auto`. */
  format: LogFormat;
}

/** Prometheus metrics endpoint (`src/metrics/`); off unless `listen` is set. */
export interface MetricsConfig {
  /**
   * `host:port` (`[v6]:port`) of the HTTP server for `/metrics`, `/healthz` and `/readyz`, e.g.
   * `127.0.0.1:9464`. Unset = no metrics server (the default). A non-loopback host gets a warning line.
   */
  listen?: string;
}

/** The whole resolved configuration. */
export interface DaemonConfig {
  forwards: ForwardConfig[];
  /** Dynamic-forwarding listeners (`socks:`, `-D`); `verifyConfig` always sets it, hand-built configs may omit it. */
  socks?: SocksConfig[];
  log: LogConfig;
  tuning: TuningConfig;
  /**
   * Path of the control socket `pf-daemon status` talks to. Unset = the default chosen at run time by
   * `src/control/paths.ts` (`$XDG_RUNTIME_DIR/pf-daemon/control.sock`, see there for the fallbacks).
   */
  controlSocket?: string;
  /** Metrics endpoint; unset or without `listen` = off. */
  metrics?: MetricsConfig;
}

/** Documented defaults of every tuning knob. */
export const defaultTuning: Readonly<Required<TuningConfig>> = Object.freeze({
  clientVersion: DEFAULT_CLIENT_VERSION,
  sendWindowMessages: 256,
  reorderLimitMessages: 10000,
  streamReceiveBufferBytes: STREAM_RECEIVE_BUFFER_DEFAULT_BYTES,
  sessionReceiveBufferBytes: SESSION_RECEIVE_BUFFER_DEFAULT_BYTES,
  streamBacklogLimitBytes: STREAM_BACKLOG_LIMIT_DEFAULT_BYTES,
  spillLimitBytes: 2 * 1024 * 1024 * 1024,
  pingIntervalMs: 30_000,
  livenessTimeoutMs: 60_000,
  connectTimeoutMs: 15_000,
  handshakeTimeoutMs: 30_000,
  resumeBudgetMs: 120_000,
  drainGraceMs: 10_000,
  giveUpMs: 300_000,
  keepAliveIntervalMs: 60_000,
});

/** Documented defaults of a forward's optional behaviour. */
export const defaultForward = Object.freeze({
  bind: '127.0.0.1',
  eager: false,
  idleStopMs: 600_000,
  sessions: 1,
  keepAlive: false,
  halfCloseLingerMs: 2_000,
  allowInsecureEndpoint: false,
});

/** Documented logging defaults. */
export const defaultLog: Readonly<LogConfig> = Object.freeze({ level: 'info', format: 'auto' });

/**
 * Whether a forward sends `host` in StartSession. A loopback `host` (`localhost`, `127.0.0.0/8` in any form,
 * `::1`) goes through the local document instead: SSM Agent 3.3.4851.0 and later refuse loopback through
 * ToRemoteHost, and the local document reaches the same port on the instance (`src/targets/destination.ts`).
 * An explicit `documentName` other than the local document gets `host` as written.
 */
function sendsHost(forward: Pick<ForwardConfig, 'host' | 'documentName'>): boolean {
  if (forward.host === undefined || forward.host === '') return false;
  if (forward.documentName === DOCUMENT_LOCAL) return false;
  return forward.documentName !== undefined || !isLoopbackHost(forward.host);
}

/** The SSM document a forward uses: its `documentName`, else the default mapping of {@link sendsHost}. */
export function documentFor(forward: Pick<ForwardConfig, 'host' | 'documentName'>): string {
  if (forward.documentName !== undefined) return forward.documentName;
  return sendsHost(forward) ? DOCUMENT_REMOTE_HOST : DOCUMENT_LOCAL;
}

/** StartSession `Parameters` for a forward (every value a one-element list, spec §2.1). */
export function parametersFor(
  forward: Pick<ForwardConfig, 'host' | 'remotePort' | 'documentName' | 'parameters'>,
  boundLocalPort: number,
): Record<string, string[]> {
  const params: Record<string, string[]> = {
    portNumber: [String(forward.remotePort)],
    localPortNumber: [String(boundLocalPort)],
  };
  if (sendsHost(forward) && forward.host !== undefined) params['host'] = [forward.host];
  for (const [key, value] of Object.entries(forward.parameters ?? {})) params[key] = [value];
  return params;
}
