/**
 * HTTP CONNECT as a proxy serves it (RFC 9110 §9.3.6): the request line and header block up to
 * {@link MAX_HEADER_BYTES}, `Proxy-Authorization: Basic` (RFC 7617) when the listener requires credentials,
 * and the status responses. Only CONNECT is served: plain `GET http://…` proxying is out of scope and
 * answered 405. Pure: {@link HttpConnectParser} is fed chunks and says when the header block is complete;
 * no sockets, no timers.
 */
import { sameSecret } from './socks5.js';
import type { SocksCredentials, SocksDestination } from './socks5.js';
import { isIP } from 'node:net';

/**
 * Longest request line plus headers we read before the blank line, bytes (our bound; 8 KiB is what nginx
 * and Node's own HTTP parser default to for a header block). Past it: 431.
 */
export const MAX_HEADER_BYTES = 8 * 1024;

/** Realm named in `Proxy-Authenticate` (RFC 7617 §2). */
export const PROXY_REALM = 'pf-daemon';

/** What a complete CONNECT request asks for. */
export interface ConnectRequest {
  destination: SocksDestination;
  /** Bytes after the header block (a client may send its first bytes without waiting), passed on. */
  rest: Buffer;
}

/** A refused request: the response to write, then close; `message` is for the log line. */
export interface HttpRefusal {
  response: Buffer;
  message: string;
}

/** One {@link HttpConnectParser.feed} result: undefined while the header block is incomplete. */
export type HttpParseResult = { request: ConnectRequest } | { refuse: HttpRefusal } | undefined;

const REASONS: Record<number, string> = {
  200: 'Connection established',
  400: 'Bad Request',
  403: 'Forbidden',
  405: 'Method Not Allowed',
  407: 'Proxy Authentication Required',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/**
 * A response with a one-line text body (so `curl -v` shows why) and `Connection: close`. 200 has no body
 * and no length: the tunnel starts right after the blank line.
 */
export function httpResponse(status: number, body?: string, headers: Record<string, string> = {}): Buffer {
  const lines = [`HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}`];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  if (status === 200) return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  const text = `${body ?? REASONS[status] ?? 'error'}\n`;
  lines.push('Content-Type: text/plain; charset=utf-8');
  lines.push(`Content-Length: ${Buffer.byteLength(text)}`);
  lines.push('Connection: close');
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n${text}`, 'utf8');
}

/** Split `host:port` / `[v6]:port` of a CONNECT target (RFC 9110 §9.3.6: authority-form). */
export function parseAuthority(text: string): SocksDestination | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._~%!$&'()*+,;=-]+)):(\d{1,5})$/.exec(text);
  if (!match) return undefined;
  const port = Number(match[3]);
  if (port < 1 || port > 65535) return undefined;
  if (match[1] !== undefined) {
    if (isIP(match[1]) !== 6) return undefined;
    return { host: match[1], type: 'ipv6', port };
  }
  const host = match[2] ?? '';
  return { host, type: isIP(host) === 4 ? 'ipv4' : 'domain', port };
}

/** Index just past the blank line ending the header block (`\r\n\r\n`, or bare `\n\n`), or -1. */
function headerEnd(buffer: Buffer): number {
  const crlf = buffer.indexOf('\r\n\r\n');
  const lf = buffer.indexOf('\n\n');
  if (crlf >= 0 && (lf < 0 || crlf + 2 <= lf)) return crlf + 4;
  return lf >= 0 ? lf + 2 : -1;
}

/**
 * Reads one CONNECT request. Feed chunks until it returns a request or a refusal; bytes are held up to
 * {@link MAX_HEADER_BYTES} (plus the chunk being fed).
 */
export class HttpConnectParser {
  private pending: Buffer = Buffer.alloc(0);
  private finished = false;

  /** @param credentials - required credentials; undefined = none asked for */
  constructor(private readonly credentials: SocksCredentials | undefined) {}

  /** Bytes held while the header block is incomplete. */
  get pendingBytes(): number {
    return this.pending.length;
  }

  feed(chunk: Buffer): HttpParseResult {
    if (this.finished) return { refuse: { response: httpResponse(400), message: 'data after the request' } };
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const end = headerEnd(this.pending);
    if (end < 0 || end > MAX_HEADER_BYTES) {
      if (this.pending.length <= MAX_HEADER_BYTES && end < 0) return undefined;
      this.finished = true;
      return {
        refuse: {
          response: httpResponse(431, `request line and headers longer than ${MAX_HEADER_BYTES} bytes`),
          message: `header block longer than ${MAX_HEADER_BYTES} bytes`,
        },
      };
    }
    this.finished = true;
    const head = this.pending.subarray(0, end).toString('latin1');
    const rest = this.pending.subarray(end);
    this.pending = Buffer.alloc(0);
    const refuse = (status: number, body: string, headers?: Record<string, string>): HttpParseResult => ({
      refuse: { response: httpResponse(status, body, headers), message: `${status}: ${body}` },
    });
    const lines = head.split(/\r?\n/);
    const requestLine = /^([A-Za-z]+) (\S+) HTTP\/1\.[01]$/.exec(lines[0] ?? '');
    if (!requestLine) return refuse(400, 'not an HTTP/1.x request line');
    const method = requestLine[1] ?? '';
    const target = requestLine[2] ?? '';
    if (method !== 'CONNECT') {
      return refuse(
        405,
        `pf-daemon is a CONNECT-only proxy: ${method} is not forwarded; use HTTPS_PROXY/--proxytunnel or SOCKS5`,
        { Allow: 'CONNECT' },
      );
    }
    const destination = parseAuthority(target);
    if (!destination)
      return refuse(400, `CONNECT target ${JSON.stringify(target.slice(0, 100))} is not host:port`);
    if (this.credentials) {
      let authorization: string | undefined;
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === 'proxy-authorization') {
          authorization = line.slice(colon + 1).trim();
        }
      }
      if (!this.authorized(authorization)) {
        return refuse(407, 'proxy authentication required (Basic)', {
          'Proxy-Authenticate': `Basic realm="${PROXY_REALM}"`,
        });
      }
    }
    return { request: { destination, rest } };
  }

  /** `Basic base64(user:pass)` against the required credentials (RFC 7617 §2), in constant time. */
  private authorized(header: string | undefined): boolean {
    const expected = this.credentials as SocksCredentials;
    const match = header === undefined ? null : /^Basic\s+([A-Za-z0-9+/=]{1,1024})$/i.exec(header);
    const decoded = match ? Buffer.from(match[1] ?? '', 'base64').toString('utf8') : '';
    const colon = decoded.indexOf(':');
    const username = colon < 0 ? '' : decoded.slice(0, colon);
    const password = colon < 0 ? '' : decoded.slice(colon + 1);
    const userOk = sameSecret(username, expected.username);
    const passOk = sameSecret(password, expected.password);
    return match !== null && colon >= 0 && userOk && passOk;
  }
}
