/**
 * The allow list of a SOCKS listener: which destinations a client may ask for. Rules, one string each:
 *
 * - `10.0.0.0/8`, `10.1.2.3`, `fd00::/8`, `[fd00::/8]:443`: an address or CIDR block, optionally with ports;
 * - `db.internal`, `db.internal:5432`: one host name exactly;
 * - `*.internal`, `*.internal:80,443`: every name under a domain (not the domain itself);
 * - `*`, `*:443`: every host;
 * - ports after the last `:` as a comma list of ports and ranges, e.g. `:80,443,8000-8100`.
 *
 * Names are matched as the client sent them, never resolved here (the instance's resolver sees them, so a
 * CIDR rule matches only destinations given as addresses). Hosts are canonicalised first with
 * `canonicalHost` (src/targets/destination.ts), so `127.1` or `0x7f.0.0.1` cannot slip past a CIDR rule.
 * Pure: parsing and matching, no I/O.
 */
import { isIP } from 'node:net';
import { canonicalHost } from '../targets/destination.js';

/** An inclusive port range. */
interface PortRange {
  from: number;
  to: number;
}

/** One parsed rule. */
export type AllowRule =
  | { kind: 'cidr'; family: 4 | 6; network: bigint; prefix: number; ports: readonly PortRange[] | null }
  | { kind: 'name'; name: string; ports: readonly PortRange[] | null }
  | { kind: 'suffix'; suffix: string; ports: readonly PortRange[] | null }
  | { kind: 'any'; ports: readonly PortRange[] | null };

/** Example rules for messages. */
export const ALLOW_EXAMPLE = '10.0.0.0/8:5432, *.internal:80,443, db.internal';

/** IPv4 or IPv6 text as a number (bits) with its width. */
function addressBits(address: string): { family: 4 | 6; bits: bigint } | undefined {
  const family = isIP(address);
  if (family === 4) {
    const bits = address.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
    return { family: 4, bits };
  }
  if (family === 6) {
    const canon = canonicalHost(address);
    // An IPv4-mapped address canonicalises to IPv4: match it as one.
    if (canon.kind === 'ipv4') return addressBits(canon.address);
    const text = canon.kind === 'ipv6' ? canon.address : address;
    const [left = '', right] = text.split('::');
    const l = left === '' ? [] : left.split(':');
    const r = right === undefined || right === '' ? [] : right.split(':');
    const groups = [...l, ...Array<string>(8 - l.length - r.length).fill('0'), ...r];
    const bits = groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16) || 0), 0n);
    return { family: 6, bits };
  }
  return undefined;
}

/** Parse `80,443,8000-8100`; a string saying what is wrong otherwise. */
function parsePorts(text: string): PortRange[] | string {
  const ranges: PortRange[] = [];
  for (const part of text.split(',')) {
    const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(part.trim());
    if (!match) return `port list ${JSON.stringify(text)} is not ports or ranges such as 80,443,8000-8100`;
    const from = Number(match[1]);
    const to = match[2] === undefined ? from : Number(match[2]);
    if (from < 1 || to > 65535 || from > to)
      return `port range ${part.trim()} is not within 1-65535, low-high`;
    ranges.push({ from, to });
  }
  return ranges;
}

/**
 * Parse one rule.
 * @returns the rule, or a string saying what is wrong (for the config error)
 */
export function parseAllowRule(text: string): AllowRule | string {
  const rule = text.trim();
  if (rule === '') return 'empty rule';
  let hostPart = rule;
  let portPart: string | undefined;
  if (rule.startsWith('[')) {
    const close = rule.indexOf(']');
    if (close < 0) return 'unbalanced [ in an IPv6 rule; write [fd00::/8]:443';
    hostPart = rule.slice(1, close);
    const after = rule.slice(close + 1);
    if (after !== '') {
      if (!after.startsWith(':')) return 'expected :ports after ]';
      portPart = after.slice(1);
    }
  } else if ((rule.match(/:/g) ?? []).length === 1) {
    const colon = rule.indexOf(':');
    hostPart = rule.slice(0, colon);
    portPart = rule.slice(colon + 1);
  }
  let ports: PortRange[] | null = null;
  if (portPart !== undefined) {
    const parsed = parsePorts(portPart);
    if (typeof parsed === 'string') return parsed;
    ports = parsed;
  }
  if (hostPart === '*') return { kind: 'any', ports };
  if (hostPart.startsWith('*.')) {
    const suffix = hostPart.slice(2).toLowerCase().replace(/\.$/, '');
    if (!/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(suffix)) return `${hostPart} is not *.domain`;
    return { kind: 'suffix', suffix, ports };
  }
  if (hostPart.includes('*')) return `${hostPart}: * is allowed only as the whole host or as *.domain`;
  const slash = hostPart.indexOf('/');
  const address = slash < 0 ? hostPart : hostPart.slice(0, slash);
  const bits = addressBits(address);
  if (bits) {
    const width = bits.family === 4 ? 32 : 128;
    let prefix = width;
    if (slash >= 0) {
      const prefixText = hostPart.slice(slash + 1);
      if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > width) {
        return `prefix /${prefixText} is not 0-${width}`;
      }
      prefix = Number(prefixText);
    }
    const mask = prefix === 0 ? 0n : ((1n << BigInt(prefix)) - 1n) << BigInt(width - prefix);
    return { kind: 'cidr', family: bits.family, network: bits.bits & mask, prefix, ports };
  }
  if (slash >= 0) return `${hostPart} is not an address/prefix such as 10.0.0.0/8`;
  const name = hostPart.toLowerCase().replace(/\.$/, '');
  if (!/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(name)) return `${hostPart} is not a host name, address or CIDR`;
  return { kind: 'name', name, ports };
}

function portAllowed(ports: readonly PortRange[] | null, port: number): boolean {
  return ports === null || ports.some((r) => port >= r.from && port <= r.to);
}

/** A parsed allow list. An empty list allows nothing; use `*` to allow everything. */
export class AllowList {
  private constructor(readonly rules: readonly AllowRule[]) {}

  /** The list that allows every destination (the loopback default). */
  static readonly all = new AllowList([{ kind: 'any', ports: null }]);

  /**
   * Parse rules.
   * @throws Error naming the first bad rule (the config layer reports it with its path)
   */
  static parse(rules: readonly string[]): AllowList {
    const parsed: AllowRule[] = [];
    for (const text of rules) {
      const rule = parseAllowRule(text);
      if (typeof rule === 'string') throw new Error(`allow rule ${JSON.stringify(text)}: ${rule}`);
      parsed.push(rule);
    }
    return new AllowList(parsed);
  }

  /** Whether `host:port` (host as the client sent it) is allowed. */
  allows(host: string, port: number): boolean {
    const canon = canonicalHost(host);
    const bits = canon.kind === 'name' ? undefined : addressBits(canon.address);
    const name = canon.kind === 'name' ? canon.name : undefined;
    for (const rule of this.rules) {
      if (!portAllowed(rule.ports, port)) continue;
      switch (rule.kind) {
        case 'any':
          return true;
        case 'name':
          if (name === rule.name) return true;
          break;
        case 'suffix':
          if (name !== undefined && name.endsWith(`.${rule.suffix}`)) return true;
          break;
        case 'cidr': {
          if (!bits || bits.family !== rule.family) break;
          const width = rule.family === 4 ? 32 : 128;
          const mask =
            rule.prefix === 0 ? 0n : ((1n << BigInt(rule.prefix)) - 1n) << BigInt(width - rule.prefix);
          if ((bits.bits & mask) === rule.network) return true;
          break;
        }
      }
    }
    return false;
  }
}
