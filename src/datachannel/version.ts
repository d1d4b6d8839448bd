/**
 * Version comparisons that decide port-forwarding mode (spec §3.3). Both ends decide independently,
 * so the client rule (ours) and the agent rule (the emulator's) are implemented exactly, quirks included.
 */
import { LOCAL_PORT_FORWARDING, VersionThreshold } from './constants.js';

/**
 * Reference client rule: split on `.`, compare numerically, strictly greater. Strings with a different
 * number of components or non-numeric parts are "not greater".
 */
export function clientVersionGreater(version: string, than: string): boolean {
  const a = version.split('.');
  const b = than.split('.');
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as string;
    const y = b[i] as string;
    if (!/^\d+$/.test(x) || !/^\d+$/.test(y)) return false;
    const nx = Number(x);
    const ny = Number(y);
    if (nx > ny) return true;
    if (nx < ny) return false;
  }
  return false;
}

/** The decisions the client takes from the agent's version (spec §3.3, client column). */
export interface ClientModeDecision {
  /** smux multiplexing (true) or basic single-connection mode (false). */
  mux: boolean;
  /** Whether the client must send smux NOP keep-alives every 10 s. */
  smuxKeepAlive: boolean;
  /** Whether the agent understands the TerminateSession flag. */
  terminateFlag: boolean;
}

/** Client-side decisions from the handshake's AgentVersion and `Properties.type`. */
export function clientModeFor(agentVersion: string, type: string): ClientModeDecision {
  return {
    mux:
      type === LOCAL_PORT_FORWARDING && clientVersionGreater(agentVersion, VersionThreshold.AGENT_MUX_ABOVE),
    smuxKeepAlive: !clientVersionGreater(agentVersion, VersionThreshold.AGENT_KEEPALIVE_OFF_ABOVE),
    terminateFlag: clientVersionGreater(agentVersion, VersionThreshold.AGENT_TERMINATE_FLAG_ABOVE),
  };
}

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
