/**
 * SOCKS version 5 as pf-daemon serves it: the greeting and method choice (RFC 1928 §3), username/password
 * authentication (RFC 1929 §2) and the request and reply (RFC 1928 §4-§6). Pure: bytes in, typed values and
 * bytes out, no sockets or timers. {@link Socks5Handshake} is the server side's state machine; it is fed
 * chunks as they arrive (a message may come in pieces, or several in one chunk) and tells the caller what
 * to write and when the request is complete. Every length is checked before it is read: the input comes
 * from whoever can reach the listener.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';

/** Protocol version byte of every SOCKS5 message except the RFC 1929 ones (RFC 1928 §3). */
export const SOCKS_VERSION = 0x05;
/** Version byte of the username/password sub-negotiation (RFC 1929 §2). */
export const USERPASS_VERSION = 0x01;

/** Authentication methods (RFC 1928 §3). */
export const AuthMethod = {
  /** X'00' NO AUTHENTICATION REQUIRED. */
  None: 0x00,
  /** X'02' USERNAME/PASSWORD (RFC 1929). */
  UserPass: 0x02,
  /** X'FF' NO ACCEPTABLE METHODS: the client must close. */
  NoAcceptable: 0xff,
} as const;
export type AuthMethod = (typeof AuthMethod)[keyof typeof AuthMethod];

/** Request commands (RFC 1928 §4). */
export const Command = {
  /** X'01' CONNECT: the only one pf-daemon serves. */
  Connect: 0x01,
  /** X'02' BIND: answered "command not supported". */
  Bind: 0x02,
  /** X'03' UDP ASSOCIATE: answered "command not supported". */
  UdpAssociate: 0x03,
} as const;

/** Address types (RFC 1928 §4, §5). */
export const AddressType = {
  /** X'01' IPv4: 4 bytes. */
  IPv4: 0x01,
  /** X'03' DOMAINNAME: one length byte, then the name (no terminating NUL). */
  Domain: 0x03,
  /** X'04' IPv6: 16 bytes. */
  IPv6: 0x04,
} as const;

/** Reply codes, field REP (RFC 1928 §6). */
export const Reply = {
  /** X'00' succeeded. */
  Succeeded: 0x00,
  /** X'01' general SOCKS server failure. */
  GeneralFailure: 0x01,
  /** X'02' connection not allowed by ruleset. */
  NotAllowed: 0x02,
  /** X'03' Network unreachable. */
  NetworkUnreachable: 0x03,
  /** X'04' Host unreachable. */
  HostUnreachable: 0x04,
  /** X'05' Connection refused. */
  ConnectionRefused: 0x05,
  /** X'06' TTL expired (we use it for a destination that did not answer in time). */
  TtlExpired: 0x06,
  /** X'07' Command not supported. */
  CommandNotSupported: 0x07,
  /** X'08' Address type not supported. */
  AddressTypeNotSupported: 0x08,
} as const;
export type Reply = (typeof Reply)[keyof typeof Reply];

const REPLY_NAMES: Record<number, string> = {
  0x00: 'succeeded',
  0x01: 'general failure',
  0x02: 'not allowed by ruleset',
  0x03: 'network unreachable',
  0x04: 'host unreachable',
  0x05: 'connection refused',
  0x06: 'TTL expired',
  0x07: 'command not supported',
  0x08: 'address type not supported',
};

/** `0x05 connection refused`: a reply code for log lines. */
export function describeReply(code: number): string {
  return `0x${code.toString(16).padStart(2, '0')} ${REPLY_NAMES[code] ?? 'unassigned'}`;
}

/** Bytes of the fixed part of a request or reply: VER CMD/REP RSV ATYP (RFC 1928 §4). */
export const REQUEST_HEADER_BYTES = 4;
/** Bytes of DST.PORT / BND.PORT (RFC 1928 §4). */
export const PORT_BYTES = 2;
/** Bytes of an IPv4 address (RFC 1928 §5). */
export const IPV4_BYTES = 4;
/** Bytes of an IPv6 address (RFC 1928 §5). */
export const IPV6_BYTES = 16;
/**
 * Longest handshake message, bytes: a username/password request with 255-byte fields, 1+1+255+1+255
 * (RFC 1929 §2). The greeting is at most 2+255, a request at most 4+1+255+2. Our read buffer holds one
 * message plus one chunk's overflow at most (see {@link Socks5Handshake}).
 */
export const MAX_HANDSHAKE_MESSAGE_BYTES = 513;

/** A parsed CONNECT destination. */
export interface SocksDestination {
  /** Host as the client sent it: dotted IPv4, IPv6 text (no brackets), or a domain name unresolved. */
  host: string;
  /** How the client named it. */
  type: 'ipv4' | 'ipv6' | 'domain';
  /** Destination port, 0-65535 as sent (0 is refused by the caller). */
  port: number;
}

/** Credentials a listener requires (RFC 1929). */
export interface SocksCredentials {
  username: string;
  password: string;
}

/** What one {@link Socks5Handshake.feed} call asks the caller to do. */
export interface HandshakeStep {
  /** Write these bytes to the client (a method choice or an auth status), then go on reading. */
  write?: Buffer;
  /** The CONNECT request is complete: `rest` holds bytes the client sent after it (optimistic data). */
  request?: SocksDestination;
  /** Bytes after the request, to pass on to the destination once connected. */
  rest?: Buffer;
  /**
   * The handshake failed: write `reply` (if any), then close. `message` says why, for the log line
   * (never the password).
   */
  fail?: { reply?: Buffer; message: string };
}

/** Handshake states (RFC 1928 §3-§4). */
const State = {
  Greeting: 'greeting',
  Auth: 'auth',
  Request: 'request',
  Done: 'done',
} as const;
type State = (typeof State)[keyof typeof State];

/**
 * Compare two secrets in constant time: their SHA-256 digests have one length, so neither the length nor
 * the first differing byte shows in the time taken.
 */
export function sameSecret(a: string, b: string): boolean {
  const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();
  return timingSafeEqual(digest(a), digest(b));
}

/**
 * Encode a reply (RFC 1928 §6). BND.ADDR/BND.PORT carry the address we report as bound; with no address
 * (failures, or a tunnel that has no local address of its own) it is `0.0.0.0:0`, as most servers send.
 */
export function encodeReply(code: Reply, bound?: { host: string; port: number }): Buffer {
  const host = bound?.host ?? '0.0.0.0';
  const port = bound?.port ?? 0;
  const family = isIP(host);
  let address: Buffer;
  let type: number;
  if (family === 4) {
    type = AddressType.IPv4;
    address = Buffer.from(host.split('.').map(Number));
  } else if (family === 6) {
    type = AddressType.IPv6;
    address = ipv6Bytes(host);
  } else {
    const name = Buffer.from(host, 'ascii').subarray(0, 255);
    type = AddressType.Domain;
    address = Buffer.concat([Buffer.from([name.length]), name]);
  }
  const out = Buffer.alloc(REQUEST_HEADER_BYTES + address.length + PORT_BYTES);
  out[0] = SOCKS_VERSION;
  out[1] = code;
  out[2] = 0x00;
  out[3] = type;
  address.copy(out, REQUEST_HEADER_BYTES);
  out.writeUInt16BE(port & 0xffff, REQUEST_HEADER_BYTES + address.length);
  return out;
}

/** The 16 bytes of an IPv6 literal (already checked by `isIP`). */
function ipv6Bytes(text: string): Buffer {
  const out = Buffer.alloc(IPV6_BYTES);
  let head = text;
  let tail = '';
  // An embedded IPv4 tail (`::ffff:1.2.3.4`) becomes two groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    head = text.slice(0, v4.index);
    tail = `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
    head = head + tail;
  }
  const [left = '', right] = head.split('::');
  const l = left === '' ? [] : left.split(':');
  const r = right === undefined || right === '' ? [] : right.split(':');
  const groups = [...l, ...Array<string>(8 - l.length - r.length).fill('0'), ...r];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16) & 0xffff, i * 2));
  return out;
}

/** IPv6 bytes as compressed text (the form `canonicalHost` also produces). */
function ipv6Text(bytes: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < IPV6_BYTES; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return new URL(`http://[${groups.join(':')}]`).hostname.slice(1, -1);
}

/** Encode a client greeting (for tests and the bench client). */
export function encodeGreeting(methods: readonly number[]): Buffer {
  return Buffer.from([SOCKS_VERSION, methods.length, ...methods]);
}

/** Encode a username/password request (RFC 1929 §2), for tests and clients. */
export function encodeUserPass(username: string, password: string): Buffer {
  const u = Buffer.from(username, 'utf8');
  const p = Buffer.from(password, 'utf8');
  return Buffer.concat([Buffer.from([USERPASS_VERSION, u.length]), u, Buffer.from([p.length]), p]);
}

/** Encode a CONNECT request (for tests and the bench client). */
export function encodeRequest(destination: SocksDestination, command: number = Command.Connect): Buffer {
  let address: Buffer;
  let type: number;
  if (destination.type === 'ipv4') {
    type = AddressType.IPv4;
    address = Buffer.from(destination.host.split('.').map(Number));
  } else if (destination.type === 'ipv6') {
    type = AddressType.IPv6;
    address = ipv6Bytes(destination.host);
  } else {
    const name = Buffer.from(destination.host, 'utf8');
    type = AddressType.Domain;
    address = Buffer.concat([Buffer.from([name.length]), name]);
  }
  const port = Buffer.alloc(PORT_BYTES);
  port.writeUInt16BE(destination.port);
  return Buffer.concat([Buffer.from([SOCKS_VERSION, command, 0x00, type]), address, port]);
}

/** A domain name a destination may carry: printable ASCII without spaces (names go to the agent as they are). */
const DOMAIN_PATTERN = /^[\x21-\x7e]{1,255}$/;

/**
 * The server side of one SOCKS5 handshake: greeting → (username/password) → request. Feed it every chunk
 * read from the client until it returns `request` or `fail`. Bytes it has not consumed wait in an internal
 * buffer of at most {@link MAX_HANDSHAKE_MESSAGE_BYTES} plus the chunk being fed; a client that sends more
 * than one message can hold before the handshake ends fails.
 */
export class Socks5Handshake {
  private state: State = State.Greeting;
  private pending: Buffer = Buffer.alloc(0);

  /**
   * @param credentials - required username/password; undefined = only "no authentication" is offered
   */
  constructor(private readonly credentials: SocksCredentials | undefined) {}

  /** Bytes held that are not yet a complete message. */
  get pendingBytes(): number {
    return this.pending.length;
  }

  /** Whether the handshake has ended (request or failure). */
  get done(): boolean {
    return this.state === State.Done;
  }

  /** Feed one chunk from the client; see {@link HandshakeStep}. */
  feed(chunk: Buffer): HandshakeStep {
    if (this.state === State.Done) return { fail: { message: 'data after the handshake ended' } };
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const writes: Buffer[] = [];
    for (;;) {
      const step = this.next();
      if (step === undefined) {
        // Incomplete: a message cannot be longer than MAX_HANDSHAKE_MESSAGE_BYTES, so more is garbage.
        if (this.pending.length > MAX_HANDSHAKE_MESSAGE_BYTES) {
          return this.failWith(writes, {
            message: `handshake message longer than ${MAX_HANDSHAKE_MESSAGE_BYTES} bytes`,
          });
        }
        return writes.length > 0 ? { write: Buffer.concat(writes) } : {};
      }
      if (step.fail) return this.failWith(writes, step.fail);
      if (step.write) writes.push(step.write);
      if (step.request) {
        const out: HandshakeStep = { request: step.request, rest: this.pending };
        if (writes.length > 0) out.write = Buffer.concat(writes);
        this.pending = Buffer.alloc(0);
        return out;
      }
    }
  }

  private failWith(writes: Buffer[], fail: { reply?: Buffer; message: string }): HandshakeStep {
    this.state = State.Done;
    this.pending = Buffer.alloc(0);
    const reply = Buffer.concat([...writes, ...(fail.reply ? [fail.reply] : [])]);
    return { fail: reply.length > 0 ? { reply, message: fail.message } : { message: fail.message } };
  }

  /** Consume one complete message from `pending`; undefined when it is incomplete. */
  private next(): HandshakeStep | undefined {
    switch (this.state) {
      case State.Greeting:
        return this.greeting();
      case State.Auth:
        return this.auth();
      case State.Request:
        return this.request();
      case State.Done:
        return { fail: { message: 'data after the handshake ended' } };
    }
  }

  private take(bytes: number): Buffer {
    const out = this.pending.subarray(0, bytes);
    this.pending = this.pending.subarray(bytes);
    return out;
  }

  /** VER NMETHODS METHODS (RFC 1928 §3). */
  private greeting(): HandshakeStep | undefined {
    const p = this.pending;
    if (p.length < 1) return undefined;
    if (p[0] !== SOCKS_VERSION) {
      return { fail: { message: `not SOCKS5: version byte 0x${(p[0] ?? 0).toString(16)}` } };
    }
    if (p.length < 2) return undefined;
    const count = p[1] ?? 0;
    if (count === 0) {
      return {
        fail: {
          reply: Buffer.from([SOCKS_VERSION, AuthMethod.NoAcceptable]),
          message: 'greeting offers no authentication method',
        },
      };
    }
    if (p.length < 2 + count) return undefined;
    const methods = this.take(2 + count).subarray(2);
    const wanted = this.credentials ? AuthMethod.UserPass : AuthMethod.None;
    if (!methods.includes(wanted)) {
      return {
        fail: {
          reply: Buffer.from([SOCKS_VERSION, AuthMethod.NoAcceptable]),
          message: this.credentials
            ? 'client does not offer username/password authentication, which this listener requires'
            : 'client does not offer "no authentication"',
        },
      };
    }
    this.state = this.credentials ? State.Auth : State.Request;
    return { write: Buffer.from([SOCKS_VERSION, wanted]) };
  }

  /** VER ULEN UNAME PLEN PASSWD (RFC 1929 §2); status 0 = success, anything else = failure, then close. */
  private auth(): HandshakeStep | undefined {
    const p = this.pending;
    if (p.length < 1) return undefined;
    const failure = Buffer.from([USERPASS_VERSION, 0x01]);
    if (p[0] !== USERPASS_VERSION) {
      return {
        fail: { reply: failure, message: `username/password version 0x${(p[0] ?? 0).toString(16)} is not 1` },
      };
    }
    if (p.length < 2) return undefined;
    const ulen = p[1] ?? 0;
    if (p.length < 2 + ulen + 1) return undefined;
    const plen = p[2 + ulen] ?? 0;
    if (p.length < 3 + ulen + plen) return undefined;
    const message = this.take(3 + ulen + plen);
    const username = message.subarray(2, 2 + ulen).toString('utf8');
    const password = message.subarray(3 + ulen).toString('utf8');
    const expected = this.credentials as SocksCredentials;
    // Both compared, always: the time does not tell which one was wrong.
    const userOk = sameSecret(username, expected.username);
    const passOk = sameSecret(password, expected.password);
    if (!(userOk && passOk)) {
      return { fail: { reply: failure, message: 'username/password authentication failed' } };
    }
    this.state = State.Request;
    return { write: Buffer.from([USERPASS_VERSION, 0x00]) };
  }

  /** VER CMD RSV ATYP DST.ADDR DST.PORT (RFC 1928 §4). */
  private request(): HandshakeStep | undefined {
    const p = this.pending;
    if (p.length < REQUEST_HEADER_BYTES) return undefined;
    const fail = (code: Reply, message: string): HandshakeStep => ({
      fail: { reply: encodeReply(code), message },
    });
    if (p[0] !== SOCKS_VERSION)
      return fail(Reply.GeneralFailure, `request version 0x${(p[0] ?? 0).toString(16)} is not 5`);
    const command = p[1] ?? 0;
    const type = p[3] ?? 0;
    let addressBytes: number;
    let offset = REQUEST_HEADER_BYTES;
    if (type === AddressType.IPv4) addressBytes = IPV4_BYTES;
    else if (type === AddressType.IPv6) addressBytes = IPV6_BYTES;
    else if (type === AddressType.Domain) {
      if (p.length < REQUEST_HEADER_BYTES + 1) return undefined;
      addressBytes = p[REQUEST_HEADER_BYTES] ?? 0;
      offset++;
    } else return fail(Reply.AddressTypeNotSupported, `address type 0x${type.toString(16)} is not 1, 3 or 4`);
    const total = offset + addressBytes + PORT_BYTES;
    if (p.length < total) return undefined;
    const message = this.take(total);
    this.state = State.Done;
    if (command !== Command.Connect) {
      const name =
        command === Command.Bind
          ? 'BIND'
          : command === Command.UdpAssociate
            ? 'UDP ASSOCIATE'
            : `command 0x${command.toString(16)}`;
      return fail(Reply.CommandNotSupported, `${name} is not supported (only CONNECT)`);
    }
    const address = message.subarray(offset, offset + addressBytes);
    const port = message.readUInt16BE(offset + addressBytes);
    let destination: SocksDestination;
    if (type === AddressType.IPv4) destination = { host: [...address].join('.'), type: 'ipv4', port };
    else if (type === AddressType.IPv6) destination = { host: ipv6Text(address), type: 'ipv6', port };
    else {
      const host = address.toString('latin1');
      if (!DOMAIN_PATTERN.test(host))
        return fail(Reply.HostUnreachable, 'domain name is empty or not printable ASCII');
      destination = { host, type: 'domain', port };
    }
    if (port === 0) return fail(Reply.ConnectionRefused, 'destination port 0');
    return { request: destination };
  }
}
