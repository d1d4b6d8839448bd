/**
 * The client's version rule that decides port-forwarding mode (spec §3.3, client column), quirks included.
 * The agent decides independently by its own rule; the emulator implements that one itself
 * (`src/emulator/version.ts`) so a mistake here is caught by it rather than mirrored.
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
