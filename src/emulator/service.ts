/**
 * The emulated message gateway (spec §3, §12.1 "Connect"): accepts WebSocket upgrades at
 * `/v1/data-channel/<SessionId>?role=publish_subscribe&cell-number=<n>` on the emulator's HTTP server
 * (`ws` in noServer mode, no permessage-deflate), requires a text OpenDataChannel with the session's current
 * token as the first frame, and hands the socket to the session's relay.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { RawData, WebSocket } from 'ws';
import { decodeOpenDataChannel } from '../datachannel/payloads.js';
import type { OpenDataChannelInput } from '../datachannel/payloads.js';
import type { Logger } from '../log.js';
import type { Faults } from './faults.js';
import { SESSION_TERMINATED_TEXT, WS_CLOSE } from './session.js';
import type { EmulatedSession } from './session.js';

/** Path prefix of data-channel URLs (protocol, spec §2.1). */
export const DATA_CHANNEL_PATH_PREFIX = '/v1/data-channel/';
/** Required `role` query value (protocol). */
export const DATA_CHANNEL_ROLE = 'publish_subscribe';
/** Largest WebSocket message accepted, bytes (our limit; real frames are ≤ 120 + 1024 bytes). */
export const MAX_WS_PAYLOAD_BYTES = 16 * 1024 * 1024;

/** The data-channel URL of a session (spec §2.1 StreamUrl shape, `ws://` on loopback). */
export function streamUrlFor(port: number, sessionId: string, cellNumber: number): string {
  return (
    `ws://127.0.0.1:${port}${DATA_CHANNEL_PATH_PREFIX}${encodeURIComponent(sessionId)}` +
    `?role=${DATA_CHANNEL_ROLE}&cell-number=${cellNumber}`
  );
}

/** What the gateway needs from the emulator. */
export interface GatewayBackend {
  /** The session with this id, live or ended. */
  lookup(sessionId: string): EmulatedSession | undefined;
  /** Live faults (`resumeBehavior: 'rejectStaleUrl'`). */
  faults: Faults;
  /** Time a new socket has to send OpenDataChannel, ms. */
  openTimeoutMs: number;
  logger: Logger;
}

/** Parsed data-channel request path. */
interface DataChannelTarget {
  sessionId: string;
  cellNumber: string | null;
}

/** Parse an upgrade URL; undefined when it is not a data-channel URL. */
export function parseDataChannelUrl(url: string | undefined): DataChannelTarget | undefined {
  if (url === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(url, 'http://127.0.0.1');
  } catch {
    return undefined;
  }
  if (!parsed.pathname.startsWith(DATA_CHANNEL_PATH_PREFIX)) return undefined;
  const id = decodeURIComponent(parsed.pathname.slice(DATA_CHANNEL_PATH_PREFIX.length));
  if (id.length === 0 || id.includes('/')) return undefined;
  if (parsed.searchParams.get('role') !== DATA_CHANNEL_ROLE) return undefined;
  return { sessionId: id, cellNumber: parsed.searchParams.get('cell-number') };
}

function rawText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

/** Accepts data-channel WebSockets and attaches them to sessions. */
export class DataChannelGateway {
  private readonly wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    clientTracking: false,
    maxPayload: MAX_WS_PAYLOAD_BYTES,
  });
  private readonly sockets = new Set<WebSocket>();

  constructor(private readonly backend: GatewayBackend) {}

  /** Number of open data-channel sockets (validated or not). */
  get openSockets(): number {
    return this.sockets.size;
  }

  /** Handle an HTTP `upgrade` event. Non-data-channel URLs get 404 and the socket is destroyed. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const target = parseDataChannelUrl(req.url);
    if (target === undefined) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, target));
  }

  /** Terminate every socket and stop accepting. */
  close(): void {
    for (const ws of this.sockets) ws.terminate();
    this.sockets.clear();
    this.wss.close();
  }

  private onConnection(ws: WebSocket, target: DataChannelTarget): void {
    const logger = this.backend.logger;
    this.sockets.add(ws);
    ws.on('close', () => this.sockets.delete(ws));
    ws.on('error', (err) => logger.debug('data-channel socket error', { error: err }));
    const timer = setTimeout(() => {
      logger.debug('no OpenDataChannel in time; closing', { sessionId: target.sessionId });
      ws.close(WS_CLOSE.POLICY, 'OpenDataChannel expected');
    }, this.backend.openTimeoutMs);
    ws.once('close', () => clearTimeout(timer));
    ws.once('message', (data: RawData, isBinary: boolean) => {
      clearTimeout(timer);
      const refuse = (text: string): void => {
        logger.debug('refusing data-channel connect', { sessionId: target.sessionId, why: text });
        ws.close(WS_CLOSE.POLICY, text);
      };
      if (isBinary) {
        refuse('OpenDataChannel must be the first frame, as text');
        return;
      }
      let open: OpenDataChannelInput;
      try {
        open = decodeOpenDataChannel(rawText(data));
      } catch {
        refuse('invalid OpenDataChannel');
        return;
      }
      const session = this.backend.lookup(target.sessionId);
      if (session === undefined) {
        refuse('Session does not exist');
        return;
      }
      if (session.state === 'terminated') {
        refuse(SESSION_TERMINATED_TEXT);
        return;
      }
      if (open.tokenValue !== session.token) {
        refuse('Invalid token');
        return;
      }
      if (
        this.backend.faults.resumeBehavior === 'rejectStaleUrl' &&
        target.cellNumber !== String(session.cellNumber)
      ) {
        refuse('Stale cell-number');
        return;
      }
      const closeMode = this.backend.faults.takeAcceptThenClose();
      if (closeMode !== undefined) {
        // Accepted, then closed before any frame: what a client sees when the service rejects its token.
        logger.debug('accept-then-close fault', { sessionId: target.sessionId, mode: closeMode });
        if (closeMode === 'abrupt') ws.terminate();
        else ws.close(WS_CLOSE.NORMAL, 'Bye');
        return;
      }
      session.attach(ws, open);
    });
  }
}
