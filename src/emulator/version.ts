/**
 * The emulated agent's version rules (spec §3.3, agent column), the emulator's own reading of the spec: it
 * shares no client logic (`src/datachannel/version.ts` is the client's), so a mistake in the client's
 * decision shows up as a disagreement with the emulated agent instead of being mirrored by it.
 */
import { LOCAL_PORT_FORWARDING, VersionThreshold } from '../datachannel/constants.js';

const SEMVER =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$/;

function compareIdentifiers(a: string, b: string): number {
  const an = /^\d+$/.test(a);
  const bn = /^\d+$/.test(b);
  if (an && bn) return Math.sign(Number(a) - Number(b));
  if (an) return -1;
  if (bn) return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareSemver(a: RegExpExecArray, b: RegExpExecArray): number {
  for (let i = 1; i <= 3; i++) {
    const d = Math.sign(Number(a[i]) - Number(b[i]));
    if (d !== 0) return d;
  }
  const pa = a[4];
  const pb = b[4];
  if (pa === undefined && pb === undefined) return 0;
  if (pa === undefined) return 1;
  if (pb === undefined) return -1;
  const xa = pa.split('.');
  const xb = pb.split('.');
  for (let i = 0; i < Math.min(xa.length, xb.length); i++) {
    const d = compareIdentifiers(xa[i] as string, xb[i] as string);
    if (d !== 0) return d;
  }
  return Math.sign(xa.length - xb.length);
}

/**
 * Reference agent rule: semver order when both parse as semver; otherwise component by component,
 * numeric when both are integers, else string order; more components wins a tie. Empty sorts lowest.
 * Returns -1, 0 or 1.
 */
export function agentCompareVersions(a: string, b: string): number {
  if (a === b) return 0;
  if (a === '') return -1;
  if (b === '') return 1;
  const sa = SEMVER.exec(a);
  const sb = SEMVER.exec(b);
  if (sa && sb) return compareSemver(sa, sb);
  const xa = a.split('.');
  const xb = b.split('.');
  for (let i = 0; i < Math.min(xa.length, xb.length); i++) {
    const ca = xa[i] as string;
    const cb = xb[i] as string;
    const na = /^\d+$/.test(ca);
    const nb = /^\d+$/.test(cb);
    const d = na && nb ? Math.sign(Number(ca) - Number(cb)) : ca < cb ? -1 : ca > cb ? 1 : 0;
    if (d !== 0) return d;
  }
  return Math.sign(xa.length - xb.length);
}

/** The decisions the agent takes from the client's version (spec §3.3, agent column). */
export interface AgentModeDecision {
  mux: boolean;
  smuxKeepAlive: boolean;
}

/** Agent-side decisions from the HandshakeResponse's ClientVersion and the document's `type`. */
export function agentModeFor(clientVersion: string, type: string): AgentModeDecision {
  return {
    mux:
      type === LOCAL_PORT_FORWARDING &&
      agentCompareVersions(clientVersion, VersionThreshold.CLIENT_MUX_AT_LEAST) >= 0,
    smuxKeepAlive: agentCompareVersions(clientVersion, VersionThreshold.CLIENT_KEEPALIVE_OFF_ABOVE) <= 0,
  };
}

/**
 * What an agent of version `agentVersion` can do at all, whatever the client: smux exists only in agents
 * above 3.0.196.0, and agents up to 3.1.1511.0 always run the smux keep-alive (spec §3.3; the versions the
 * client column names, read here as the agent's own release history and compared by the agent's rule).
 */
export interface AgentCapabilities {
  /** The agent speaks smux. */
  mux: boolean;
  /** The agent cannot turn its smux keep-alive off. */
  keepAliveAlwaysOn: boolean;
}

/** First agent release line with smux: versions above this (spec §3.3). */
const AGENT_MUX_SINCE_ABOVE = '3.0.196.0';
/** Agents up to this version keep the smux keep-alive on for every client (spec §3.3). */
const AGENT_KEEPALIVE_ALWAYS_ON_UP_TO = '3.1.1511.0';

/** {@link AgentCapabilities} of an agent of version `agentVersion`. */
export function agentCapabilities(agentVersion: string): AgentCapabilities {
  return {
    mux: agentCompareVersions(agentVersion, AGENT_MUX_SINCE_ABOVE) > 0,
    keepAliveAlwaysOn: agentCompareVersions(agentVersion, AGENT_KEEPALIVE_ALWAYS_ON_UP_TO) <= 0,
  };
}
