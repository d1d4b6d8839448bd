/**
 * One data-channel WebSocket (spec §3): dial the StreamUrl, send OpenDataChannel, hand every received
 * message frame to the owner, keep the link honest with pings and a liveness deadline. A connection is
 * single-use: after 'down' the owner dials a new one (ResumeSession, spec §10.3).
 *
 * This is the only I/O in the data-channel layer; the reliable channel above it is a pure state machine.
 */
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { TunnelError } from '../errors.js';
import type { Logger } from '../log.js';
import { describeProxy, proxyAgentFor, proxyUrlFor } from '../proxy.js';
import { WriteCoalescer, underlyingSocketOf } from '../transport/write-coalescer.js';
import { encodeOpenDataChannel } from './payloads.js';
import { newMessageId } from './message.js';

/** Options of one connection attempt. */
export interface ConnectionOptions {
  /** StreamUrl exactly as returned by StartSession/ResumeSession (ws:// or wss://). Secret: never logged whole. */
  streamUrl: string;
  /** Token for OpenDataChannel. Secret. */
  tokenValue: string;
  /** Fixed per session (spec §3.2). */
  clientId: string;
  /** ClientVersion constant (spec §3.3). */
  clientVersion: string;
  /**
   * Deadline of the whole dial, ms: proxy CONNECT, TLS, the upgrade and writing OpenDataChannel. One
   * timer covers them all, so a proxy that accepts TCP and never answers cannot hold the dial open.
   */
  connectTimeoutMs: number;
  /** Ping interval, ms (spec §3.4). */
  pingIntervalMs: number;
  /** No frame and no pong for this long ⇒ 'down', ms (spec §3.4). */
  livenessTimeoutMs: number;
  /** HTTP User-Agent of the upgrade request (our own version goes here, not in ClientVersion). */
  userAgent: string;
  /** Extra upgrade headers (SigV4, spec §3.1). Secrets: never logged. */
  headers?: Record<string, string>;
  /**
   * Monotonic clock for liveness, ms. Default `performance.now`: a wall-clock step must not disable (or
   * fire) dead-link detection.
   */
  now?: () => number;
}

/** Why a connection went down. */
export type DownReason = 'closed-by-peer' | 'error' | 'liveness' | 'closed-by-us';

/** Text of the WebSocket ping payload (spec §3.4). */
const PING_PAYLOAD = Buffer.from('keepalive');
/** Options of every binary send: one shared object instead of one per frame. */
const SEND_BINARY = Object.freeze({ binary: true });
/** Normal-closure code we send on orderly close (spec §3.5). */
const CLOSE_NORMAL = 1000;

/** Text of an abort reason for an error message. */
function describeAbort(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason ?? 'closed');
}

/**
 * Written notification of {@link DataChannelConnection.send}: called once, with no argument (or null) when
 * the frame has left the WebSocket for the kernel, with an error when it never will. It is `ws`'s own send
 * callback, passed through as it is: one function per frame, no wrapper closure (issue 16).
 */
export type WrittenCallback = (err?: Error | null) => void;

/** Receiver of every message frame of a connection (see {@link DataChannelConnection.onFrame}). */
export type FrameHandler = (frame: Buffer) => void;

/** Host and path of a StreamUrl, without its query string (which may carry signed parameters). */
export function describeStreamUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
  } catch {
    return '<invalid url>';
  }
}

/** TLS options from the AWS environment: `AWS_CA_BUNDLE` adds a CA bundle for wss:// (weakness #14). */
function tlsOptionsFromEnv(env: NodeJS.ProcessEnv): { ca?: Buffer } {
  const bundle = env['AWS_CA_BUNDLE'];
  return bundle ? { ca: readFileSync(bundle) } : {};
}

/**
 * A live data-channel WebSocket. Every message frame goes to {@link onFrame}.
 * Events: 'alive' () once, on the first binary frame or pong after
 * OpenDataChannel (proof that the service kept the socket: a rejected token is accepted and closed
 * right after OpenDataChannel), 'down' (DownReason, detail string) exactly once.
 */
export class DataChannelConnection extends EventEmitter {
  private socket: WebSocket | undefined;
  private writes: WriteCoalescer | undefined;
  private livenessTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private lastHeardAt = 0;
  private isDown = false;
  private provenAlive = false;
  private readonly now: () => number;
  /** Frames handed to the socket. */
  framesSent = 0;
  /** Frames received. */
  framesReceived = 0;
  /**
   * Where every received message frame (binary or text) goes, synchronously, in order. A plain function
   * rather than an event: the hottest path of the daemon pays no emit and no argument array per frame
   * (issue 16). Frames arriving while it is unset are dropped (the reliable layer above recovers them).
   */
  onFrame: FrameHandler | undefined;

  constructor(
    private readonly options: ConnectionOptions,
    private readonly logger: Logger,
  ) {
    super();
    this.now = options.now ?? (() => performance.now());
  }

  /** True once a binary frame or a pong arrived after OpenDataChannel (see the 'alive' event). */
  get alive(): boolean {
    return this.provenAlive;
  }

  /** Bytes queued in the WebSocket not yet written to the kernel. */
  get bufferedAmount(): number {
    return this.socket?.bufferedAmount ?? 0;
  }

  /** True between a successful open and 'down'. */
  get isOpen(): boolean {
    return !this.isDown && this.socket?.readyState === WebSocket.OPEN;
  }

  /**
   * Dial, wait for the upgrade, send OpenDataChannel (text) and a ping (whose pong proves the socket was
   * kept). Resolves when OpenDataChannel has been written. `connectTimeoutMs` bounds all of it, proxy
   * CONNECT included; `signal` aborts it (the socket, and the proxy's, are destroyed at once).
   * @throws TunnelError `PF_ERR_CONNECT` on failure, timeout or abort.
   */
  async open(signal?: AbortSignal): Promise<void> {
    const { streamUrl, connectTimeoutMs, userAgent } = this.options;
    const where = describeStreamUrl(streamUrl);
    // HTTPS_PROXY/NO_PROXY apply to the data channel too (the official plugin ignores them, spec §11 #14).
    // The agent's own socket to the proxy obeys `dial`, so a CONNECT that is never answered is not leaked.
    const dial = new AbortController();
    const agent = proxyAgentFor(streamUrl, dial.signal);
    const proxy = agent ? describeProxy(proxyUrlFor(streamUrl) ?? '') : undefined;
    if (proxy) this.logger.debug(`dialling ${where} through proxy ${proxy}`);
    const via = proxy ? ` through proxy ${proxy}` : '';
    let ws: WebSocket | undefined;
    const fail = (message: string, cause?: unknown): TunnelError => {
      dial.abort();
      if (ws) {
        ws.removeAllListeners();
        ws.on('error', () => undefined);
        ws.terminate();
      }
      return new TunnelError('PF_ERR_CONNECT', message, cause === undefined ? undefined : { cause });
    };
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      const socket = await new Promise<WebSocket>((resolveOpen, rejectOpen) => {
        // Settles once: a late error, close or timeout after success must not tear down the new link.
        let settled = false;
        const resolve = (value: WebSocket): void => {
          if (settled) return;
          settled = true;
          resolveOpen(value);
        };
        const reject = (make: () => TunnelError): void => {
          if (settled) return;
          settled = true;
          rejectOpen(make());
        };
        timer = setTimeout(
          () =>
            reject(() =>
              fail(
                `cannot open data channel ${where}${via}: no answer within ${connectTimeoutMs} ms (connectTimeoutMs)`,
              ),
            ),
          connectTimeoutMs,
        );
        onAbort = () => reject(() => fail(`dial of ${where} aborted: ${describeAbort(signal?.reason)}`));
        if (signal?.aborted) {
          onAbort();
          return;
        }
        signal?.addEventListener('abort', onAbort, { once: true });
        let created: WebSocket;
        try {
          created = new WebSocket(streamUrl, {
            perMessageDeflate: false,
            handshakeTimeout: connectTimeoutMs,
            headers: { ...this.options.headers, 'User-Agent': userAgent },
            maxPayload: 16 * 1024 * 1024,
            ...tlsOptionsFromEnv(process.env),
            ...(agent ? { agent } : {}),
          });
        } catch (err) {
          reject(() => fail(`cannot dial ${where}: ${(err as Error).message}`, err));
          return;
        }
        ws = created;
        const onError = (err: Error): void =>
          reject(() => fail(`cannot open data channel ${where}${via}: ${err.message}`, err));
        created.once('error', onError);
        created.once('unexpected-response', (_req, res) =>
          onError(new Error(`HTTP ${res.statusCode ?? '?'} on WebSocket upgrade`)),
        );
        created.once('open', () => {
          created.off('error', onError);
          created.once('error', onError);
          created.once('close', (code: number) =>
            onError(new Error(`WebSocket closed (${code}) before OpenDataChannel was written`)),
          );
          created.binaryType = 'nodebuffer';
          // OpenDataChannel is written under the same deadline; the ping right behind it is answered only
          // if the service keeps the socket after reading it.
          created.send(
            encodeOpenDataChannel({
              messageSchemaVersion: '1.0',
              requestId: newMessageId(),
              tokenValue: this.options.tokenValue,
              clientId: this.options.clientId,
              clientVersion: this.options.clientVersion,
            }),
            (err) => {
              if (err) onError(err);
              else resolve(created);
            },
          );
          created.ping(PING_PAYLOAD);
        });
      });
      socket.removeAllListeners();
      this.attachSocket(socket);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
    this.logger.debug(`data channel open to ${where}`);
  }

  /** Wire an open socket with OpenDataChannel written: frames, pongs, close, pings and liveness. */
  private attachSocket(socket: WebSocket): void {
    this.socket = socket;
    if (socket.readyState !== WebSocket.OPEN) {
      this.goDown('closed-by-peer', 'WebSocket closed right after OpenDataChannel');
      return;
    }
    this.writes = new WriteCoalescer(underlyingSocketOf(socket));
    // ws has its 'data' listener on the raw socket since the upgrade: the acks and data frames produced by
    // the messages of one read leave in one writev (issue 16); a lone write on an idle link goes at once.
    this.writes.watchReads(underlyingSocketOf(socket));
    this.lastHeardAt = this.now();
    socket.on('message', (data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary));
    socket.on('pong', () => {
      this.lastHeardAt = this.now();
      this.proveAlive();
    });
    socket.on('close', (code: number, reason: Buffer) =>
      this.goDown(
        'closed-by-peer',
        `WebSocket closed (${code}${reason.length ? ` ${reason.toString()}` : ''})`,
      ),
    );
    socket.on('error', (err: Error) => this.goDown('error', err.message));
    this.pingTimer = setInterval(() => this.ping(), this.options.pingIntervalMs);
    this.pingTimer.unref();
    this.livenessTimer = setInterval(
      () => this.checkLiveness(),
      Math.min(1000, this.options.livenessTimeoutMs),
    );
    this.livenessTimer.unref();
  }

  private proveAlive(): void {
    if (this.provenAlive || this.isDown) return;
    this.provenAlive = true;
    this.emit('alive');
  }

  /**
   * Send one binary message frame. Silently ignored when the link is down (the reliable layer resends);
   * `onWritten` is then never called. Otherwise it is `ws`'s send callback (see {@link WrittenCallback}).
   * `ws` masks a copy (client frames are masked, RFC 6455 §5.3): `frame` itself is never modified, so the
   * caller may send it again.
   */
  send(frame: Buffer, onWritten?: WrittenCallback): void {
    const socket = this.socket;
    if (this.isDown || socket === undefined || socket.readyState !== WebSocket.OPEN) return;
    this.framesSent++;
    this.writes?.hold();
    socket.send(frame, SEND_BINARY, onWritten);
  }

  /** Orderly close with a close frame (spec §3.5, weakness #9). */
  close(): void {
    if (this.socket && this.socket.readyState === WebSocket.OPEN)
      this.socket.close(CLOSE_NORMAL, 'client close');
    this.goDown('closed-by-us', 'closed by pf-daemon');
  }

  /** Drop the link abruptly (used when the link is judged dead). */
  terminate(reason: DownReason, detail: string): void {
    this.goDown(reason, detail);
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    this.lastHeardAt = this.now();
    this.framesReceived++;
    if (!isBinary) {
      // Not expected after OpenDataChannel; the reference parses them as messages too (spec §3.5).
      this.logger.debug(`text frame of ${data.length} bytes on the data channel`);
    } else {
      this.proveAlive();
    }
    this.onFrame?.(data);
  }

  private ping(): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.ping(PING_PAYLOAD);
  }

  private checkLiveness(): void {
    const silentMs = Math.round(this.now() - this.lastHeardAt);
    if (silentMs > this.options.livenessTimeoutMs) {
      this.goDown('liveness', `no frame or pong for ${silentMs} ms`);
    }
  }

  private goDown(reason: DownReason, detail: string): void {
    if (this.isDown) return;
    this.isDown = true;
    clearInterval(this.pingTimer);
    clearInterval(this.livenessTimer);
    const socket = this.socket;
    if (socket) {
      socket.removeAllListeners('message');
      socket.removeAllListeners('close');
      socket.removeAllListeners('error');
      socket.on('error', () => undefined);
      this.writes?.flush();
      this.writes?.unwatchReads();
      if (reason !== 'closed-by-us') socket.terminate();
    }
    this.emit('down', reason, detail);
  }
}
