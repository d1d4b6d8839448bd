/**
 * The SSM agent's destination rules as the daemon needs them: which `host` values are loopback (so the
 * forward uses `AWS-StartPortForwardingSession`, which reaches the instance's own localhost), which ones
 * SSM Agent 3.3.4851.0 and later refuse through `AWS-StartPortForwardingSessionToRemoteHost` (loopback and
 * the instance/ECS/EKS metadata and credential endpoints), and the log line for a ConnectToPortError that
 * names the likely causes. Pure: no DNS, no sockets.
 */
import { isIP } from 'node:net';

/** First SSM Agent version that refuses loopback and metadata destinations through ToRemoteHost. */
export const AGENT_DENYLIST_SINCE_VERSION = '3.3.4851.0';

/**
 * Metadata and credential endpoints the agent refuses, canonical form: EC2 instance metadata (IPv4, IPv6),
 * the ECS task credential endpoint, and the EKS Pod Identity agent (IPv4, IPv6).
 */
export const AGENT_DENIED_METADATA_ADDRESSES: ReadonlySet<string> = new Set([
  '169.254.169.254',
  'fd00:ec2::254',
  '169.254.170.2',
  '169.254.170.23',
  'fd00:ec2::23',
]);

/** A host after canonicalisation. */
export type CanonicalHost =
  { kind: 'ipv4'; address: string } | { kind: 'ipv6'; address: string } | { kind: 'name'; name: string };

/**
 * Canonicalise a host the way resolvers read it: IPv4 in any inet_aton form (`127.1`, `0x7f.1`,
 * `017700000001`) becomes dotted decimal (the WHATWG URL host parser applies those rules), IPv6 is
 * compressed and lower-cased with brackets removed, and an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`)
 * becomes its IPv4 address. Names are lower-cased without a trailing dot.
 */
export function canonicalHost(host: string): CanonicalHost {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (isIP(bare) === 6) {
    const address = new URL(`http://[${bare}]`).hostname.slice(1, -1);
    const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(address);
    if (mapped) {
      const high = parseInt(mapped[1] ?? '0', 16);
      const low = parseInt(mapped[2] ?? '0', 16);
      return { kind: 'ipv4', address: [high >> 8, high & 255, low >> 8, low & 255].join('.') };
    }
    return { kind: 'ipv6', address };
  }
  let parsed: string;
  try {
    parsed = new URL(`http://${bare}`).hostname;
  } catch {
    return { kind: 'name', name: bare.toLowerCase() };
  }
  if (isIP(parsed) === 4) return { kind: 'ipv4', address: parsed };
  return { kind: 'name', name: parsed.replace(/\.$/, '') };
}

/** True for `localhost` (and `*.localhost`, RFC 6761), 127.0.0.0/8 in any form, and `::1`. */
export function isLoopbackHost(host: string): boolean {
  const c = canonicalHost(host);
  switch (c.kind) {
    case 'ipv4':
      return c.address.startsWith('127.');
    case 'ipv6':
      return c.address === '::1';
    case 'name':
      return c.name === 'localhost' || c.name.endsWith('.localhost');
  }
}

/** Why SSM Agent ≥ {@link AGENT_DENYLIST_SINCE_VERSION} refuses `host` through ToRemoteHost, if it does. */
export function agentDenylistReason(host: string): 'loopback' | 'metadata' | undefined {
  if (isLoopbackHost(host)) return 'loopback';
  const c = canonicalHost(host);
  if (c.kind !== 'name' && AGENT_DENIED_METADATA_ADDRESSES.has(c.address)) return 'metadata';
  return undefined;
}

/** The AWS document for the instance's own ports (SSM documents; also `DOCUMENT_LOCAL` in `config/types.ts`). */
const LOCAL_DOCUMENT = 'AWS-StartPortForwardingSession';

/**
 * The warning logged when the agent answers ConnectToPortError (spec §9.4): names the destination and the
 * likely causes, most specific first.
 *
 * @param host - the forward's `host` (undefined: the instance's localhost)
 * @param port - the remote port, 1–65535
 * @param documentName - the forward's `documentName`, if set: without one a loopback `host` went through
 *   the local document, so the denylist cannot be the cause
 */
export function describeConnectToPortError(
  host: string | undefined,
  port: number,
  documentName?: string,
): string {
  const where = `${host ?? 'localhost'}:${port}`;
  const local =
    host === undefined ||
    documentName === LOCAL_DOCUMENT ||
    (documentName === undefined && isLoopbackHost(host));
  const denied = local ? undefined : agentDenylistReason(host);
  if (denied === 'metadata') {
    return `the agent could not connect to ${where}: SSM Agent ${AGENT_DENYLIST_SINCE_VERSION} and later refuse the instance metadata and ECS/EKS credential endpoints; this address cannot be forwarded on newer agents`;
  }
  if (denied === 'loopback') {
    return `the agent could not connect to ${where}: SSM Agent ${AGENT_DENYLIST_SINCE_VERSION} and later refuse loopback addresses through AWS-StartPortForwardingSessionToRemoteHost; drop host (or use AWS-StartPortForwardingSession) to reach the instance's own localhost`;
  }
  const from = local ? 'on the instance' : 'from the instance';
  const newer = local
    ? ''
    : ' (newer agents also refuse loopback and metadata addresses through ToRemoteHost)';
  return `the agent could not connect to ${where}: nothing listens on port ${port} ${from}, or a security group, NACL or host firewall blocks it${newer}`;
}
