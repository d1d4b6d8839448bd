/**
 * The configuration model: what a forward is, and the tuning knobs with their documented defaults
 * (house style §5). The YAML loader and the CLI both produce a {@link DaemonConfig}; inner modules receive
 * the frozen, resolved result and apply no defaults of their own.
 */
import type { LogFormat, LogLevel } from '../log.js';

/** SSM document for `localhost:<port>` on the instance (spec §2.1). */
export const DOCUMENT_LOCAL = 'AWS-StartPortForwardingSession';
/** SSM document for `<host>:<port>` reachable from the instance (spec §2.1). */
export const DOCUMENT_REMOTE_HOST = 'AWS-StartPortForwardingSessionToRemoteHost';

/** One forward: a local listener tunnelled to one remote port through one SSM session at a time. */
export interface ForwardConfig {
  /** Unique name used in logs and for reload matching. Default: `<localPort>:<host|localhost>:<remotePort>@<target>`. */
  name: string;
  /** Managed node id (`i-…` or `mi-…`). */
  target: string;
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
  /** StartSession `Reason`, 1–256 chars, shown in session history. */
  reason?: string;
  /** Start the session at startup instead of on the first connection. Default false. */
  eager: boolean;
  /** Terminate the session after this many ms with no local connections; 0 = never. Default 600000 (10 min). */
  idleStopMs: number;
  /** Send smux NOPs every 60 s to defeat the service idle timeout (spec §10.2). Default false. */
  keepAlive: boolean;
}

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
  /** Bytes buffered per smux stream towards a slow local reader before acks stop (spec §9.6). Default 4 MiB. */
  streamReceiveBufferBytes: number;
  /** Bytes buffered per session towards slow local readers before acks stop (spec §9.6). Default 64 MiB. */
  sessionReceiveBufferBytes: number;
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
  clientVersion: '1.2.694.0',
  sendWindowMessages: 256,
  reorderLimitMessages: 10000,
  streamReceiveBufferBytes: 4 * 1024 * 1024,
  sessionReceiveBufferBytes: 64 * 1024 * 1024,
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
  keepAlive: false,
});

/** Documented logging defaults. */
export const defaultLog: Readonly<LogConfig> = Object.freeze({ level: 'info', format: 'auto' });

/** The SSM document a forward uses. */
export function documentFor(forward: Pick<ForwardConfig, 'host'>): string {
  return forward.host ? DOCUMENT_REMOTE_HOST : DOCUMENT_LOCAL;
}

/** StartSession `Parameters` for a forward (every value a one-element list, spec §2.1). */
export function parametersFor(
  forward: Pick<ForwardConfig, 'host' | 'remotePort'>,
  boundLocalPort: number,
): Record<string, string[]> {
  const params: Record<string, string[]> = {
    portNumber: [String(forward.remotePort)],
    localPortNumber: [String(boundLocalPort)],
  };
  if (forward.host) params['host'] = [forward.host];
  return params;
}
