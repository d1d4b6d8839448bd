/**
 * The destination denylist of the emulated agent: SSM Agent 3.3.4851.0 and later refuse port forwarding
 * through `AWS-StartPortForwardingSessionToRemoteHost` (a `host` property) to loopback and to the instance
 * metadata and ECS/EKS credential endpoints, after resolving the host (spec §9.2: "Forwarding to IP address
 * … is forbidden."). The local document (no `host`) is never refused: it is how loopback is reached.
 *
 * Host names are resolved with the system resolver, as the agent does, but only numeric forms and
 * `localhost` (which resolve without the network); other names stand for remote hosts (the emulator's
 * `hostMap` replaces their DNS) and are not checked.
 */
import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { agentCompareVersions } from './version.js';

/** First agent version with the denylist. */
export const DENYLIST_SINCE_AGENT_VERSION = '3.3.4851.0';

/** Loopback ranges and the metadata/credential endpoints the agent refuses. */
function deniedAddresses(): BlockList {
  const list = new BlockList();
  list.addSubnet('127.0.0.0', 8, 'ipv4');
  list.addAddress('::1', 'ipv6');
  // EC2 instance metadata (IPv4, IPv6), ECS task credentials, EKS Pod Identity agent (IPv4, IPv6).
  for (const a of ['169.254.169.254', '169.254.170.2', '169.254.170.23']) list.addAddress(a, 'ipv4');
  for (const a of ['fd00:ec2::254', 'fd00:ec2::23']) list.addAddress(a, 'ipv6');
  return list;
}

const DENIED = deniedAddresses();

/** Numeric host forms the resolver turns into addresses without DNS (inet_aton: `127.1`, `0x7f.1`, …). */
const NUMERIC_HOST = /^[0-9a-fx.]+$/i;

/**
 * Why the agent refuses `host`, or undefined when it does not.
 *
 * @param host - the session's `host` property (undefined for the local document)
 * @param agentVersion - the emulated AgentVersion
 * @returns the agent's refusal text, e.g. `Forwarding to IP address 127.0.0.1 is forbidden.`
 */
export async function destinationRefusal(
  host: string | undefined,
  agentVersion: string,
): Promise<string | undefined> {
  if (host === undefined || host === '') return undefined;
  if (agentCompareVersions(agentVersion, DENYLIST_SINCE_AGENT_VERSION) < 0) return undefined;
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  const name = bare.toLowerCase().replace(/\.$/, '');
  const resolvable =
    isIP(bare) !== 0 || NUMERIC_HOST.test(bare) || name === 'localhost' || name.endsWith('.localhost');
  if (!resolvable) return undefined;
  let addresses: { address: string; family: number }[];
  try {
    addresses = name.endsWith('.localhost')
      ? [{ address: '127.0.0.1', family: 4 }]
      : await lookup(bare, { all: true, verbatim: true });
  } catch {
    return undefined;
  }
  for (const { address, family } of addresses) {
    if (DENIED.check(address, family === 6 ? 'ipv6' : 'ipv4'))
      return `Forwarding to IP address ${address} is forbidden.`;
  }
  return undefined;
}
