/**
 * The emulated agent's smux v1 server (spec §9.4): the reference agent runs xtaci/smux v1 as a server with
 * library defaults over the concatenated Output payloads, accepts client-opened streams one at a time and
 * dials the destination for each inside its accept loop (`agent/session/plugins/port/port_mux.go`).
 *
 * Reproduced semantics:
 * - SYN opens a stream (no SYN-ACK); a SYN for a live id is ignored; PSH for an unknown id is dropped;
 *   FIN for an unknown id is ignored; NOP is ignored;
 * - version ≠ 1 or an unknown command kills the whole session;
 * - serial dial: stream n+1 is not dialled before stream n's dial settled; data for a stream waiting for its
 *   dial is held and counts towards the receive buffer;
 * - 4 MiB session-wide receive buffer: once that much received data waits unwritten (held for streams being
 *   dialled, or queued in destination sockets), {@link SmuxServer.receiveStalled} turns true and the agent
 *   stops consuming Output; 1024 streams waiting for accept have the same effect;
 * - no half-close: on FIN the stream's data is written out, the destination socket is closed fully and FIN
 *   is sent back; when the destination closes first, FIN is sent and the stream forgotten;
 * - dial failure: the owner sends Flag ConnectToPortError (hook), then FIN goes out on that stream;
 * - keep-alive (when on): NOP every 10 s; the session dies when no frame arrived during a 30 s period.
 *
 * Not reproduced: PSH frames are written as they are decoded rather than pulled by a reader goroutine, and
 * the server never opens streams (the agent never does).
 */
import type net from 'node:net';
import type { Logger } from '../log.js';
import { describeError } from '../errors.js';
import { WriteCoalescer } from '../transport/write-coalescer.js';
import { SmuxCommand, SmuxFrameDecoder, encodeFrame } from '../mux/frame.js';
import type { SmuxFrame } from '../mux/frame.js';

/** xtaci/smux v1 defaults the agent uses (`smux.DefaultConfig()`); all protocol values. */
export const SMUX_SERVER = {
  /** Session-wide receive buffer, bytes (`MaxReceiveBuffer`). */
  MAX_RECEIVE_BUFFER_BYTES: 4 * 1024 * 1024,
  /** Largest PSH data the server writes, bytes (`MaxFrameSize`). */
  MAX_FRAME_DATA_BYTES: 32768,
  /** Streams that may wait for accept before the session stops reading (`defaultAcceptBacklog`). */
  ACCEPT_BACKLOG: 1024,
  /** NOP interval when keep-alive is on, ms (`KeepAliveInterval`). */
  KEEPALIVE_INTERVAL_MS: 10_000,
  /** Session death after this long without any incoming frame, ms (`KeepAliveTimeout`). */
  KEEPALIVE_TIMEOUT_MS: 30_000,
} as const;

/** Resolved server options (the agent fills them from {@link SMUX_SERVER} and its own knobs). */
export interface SmuxServerOptions {
  /** Send NOPs and enforce the keep-alive timeout. */
  keepAlive: boolean;
  /** NOP interval, ms. */
  keepAliveIntervalMs: number;
  /** Period after which a session with no incoming frame dies, ms. */
  keepAliveTimeoutMs: number;
  /** Session-wide receive buffer, bytes. */
  maxReceiveBufferBytes: number;
}

/** Functions the server calls; all are synchronous notifications. */
export interface SmuxServerHooks {
  /** Dial the destination for stream `sid` (serial: called once the previous dial settled). */
  dial(sid: number): Promise<net.Socket>;
  /** Append bytes to the outbound smux byte stream (towards the client). */
  writeOutbound(bytes: Buffer): void;
  /** A SYN created stream `sid`. */
  streamOpened(sid: number): void;
  /** The dial for `sid` failed; called before the FIN for it is written, so the flag goes first. */
  dialFailed(sid: number, error: unknown): void;
  /** The destination for `sid` is connected. */
  destinationConnected(sid: number): void;
  /** Stream `sid` was forgotten. */
  streamClosed(sid: number): void;
  /** Bytes moved for stream `sid`. */
  bytes(sid: number, direction: 'toDestination' | 'fromDestination', count: number): void;
  /** Something that may end a receive stall happened (a socket drained, a stream was dropped). */
  maybeUnstalled(): void;
  /** The session died (protocol error, keep-alive timeout). Called once. */
  failed(reason: string): void;
}

/** Life-cycle of one server-side stream. Forgotten streams are removed from the table. */
const StreamState = {
  /** Waiting in the accept queue or being dialled; data is held. */
  Accepting: 0,
  /** Destination connected; data is written through. */
  Connected: 1,
  /** FIN received while connected; flushing, then close fully and FIN back. */
  Closing: 2,
} as const;
type StreamState = (typeof StreamState)[keyof typeof StreamState];

interface ServerStream {
  sid: number;
  state: StreamState;
  /** Data received before the destination was connected. */
  held: Buffer[];
  heldBytes: number;
  /** FIN arrived before the destination was connected. */
  finReceived: boolean;
  socket: net.Socket | undefined;
  /** Coalesces the PSH writes of one burst into one syscall (mechanics only: same bytes, same order). */
  writes: WriteCoalescer | undefined;
}

/** smux v1 server over the agent's Output stream; see the module comment. */
export class SmuxServer {
  private readonly decoder = new SmuxFrameDecoder();
  private readonly streams = new Map<number, ServerStream>();
  private readonly acceptQueue: ServerStream[] = [];
  private accepting = false;
  private closed = false;
  private forcedStall = false;
  private reading = true;
  /** Rotates which stream is resumed first by {@link setReading} (fairness between destinations). */
  private resumeTurn = 0;
  private frameSeen = false;
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly options: SmuxServerOptions,
    private readonly hooks: SmuxServerHooks,
    private readonly logger: Logger,
  ) {
    if (options.keepAlive) {
      const nop = setInterval(() => this.write(encodeFrame(SmuxCommand.NOP, 0)), options.keepAliveIntervalMs);
      const check = setInterval(() => {
        if (!this.frameSeen) this.fail('smux keep-alive timeout: no frame from the client');
        this.frameSeen = false;
      }, options.keepAliveTimeoutMs);
      nop.unref();
      check.unref();
      this.timers.push(nop, check);
    }
  }

  /** Streams currently known (accepting, connected or closing). */
  get streamCount(): number {
    return this.streams.size;
  }

  /** True once the session died or was closed. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Received bytes not yet handed to the kernel: held for dialling streams plus socket write queues. */
  get waitingBytes(): number {
    let total = 0;
    for (const stream of this.streams.values()) {
      total += stream.heldBytes + (stream.socket?.writableLength ?? 0);
    }
    return total;
  }

  /** True while the server would not read its input (spec §9.4 receive stall, or forced). */
  get receiveStalled(): boolean {
    return (
      this.forcedStall ||
      this.waitingBytes >= this.options.maxReceiveBufferBytes ||
      this.acceptQueue.length >= SMUX_SERVER.ACCEPT_BACKLOG
    );
  }

  /** Force the receive stall on or off (fault knob `receiveStall`). */
  setForcedStall(on: boolean): void {
    this.forcedStall = on;
    if (!on) this.hooks.maybeUnstalled();
  }

  /** Stop or resume reading every destination socket (outbound backpressure or paused publication). */
  setReading(on: boolean): void {
    this.reading = on;
    const streams = [...this.streams.values()];
    // Resume in a rotating order: a resumed socket with buffered bytes emits them first and can push the pump
    // over its mark, pausing the rest before they emit; a fixed order let one flooding stream starve the
    // others for ever, whereas the real agent reads each destination in its own goroutine.
    const first = streams.length > 0 ? this.resumeTurn++ % streams.length : 0;
    for (let i = 0; i < streams.length; i++) {
      const stream = streams[(first + i) % streams.length] as ServerStream;
      if (stream.socket === undefined) continue;
      if (on) stream.socket.resume();
      else stream.socket.pause();
    }
  }

  /**
   * Feed one Output payload (part of the client's smux byte stream). Frames are handled synchronously.
   * A protocol error fails the session; nothing is thrown. The server takes `payload` over: PSH data is
   * held and written as views of it, so the caller must not reuse the buffer (the agent feeds payloads of
   * frames the service copied for it).
   */
  feed(payload: Buffer): void {
    if (this.closed) return;
    let frames: SmuxFrame[];
    try {
      frames = this.decoder.push(payload);
    } catch (err) {
      this.fail(`smux protocol error: ${describeError(err)}`);
      return;
    }
    for (const frame of frames) {
      if (this.closed) return;
      this.frameSeen = true;
      this.handleFrame(frame);
    }
  }

  /** Close every destination socket and stop the timers; no FIN is sent. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const timer of this.timers) clearInterval(timer);
    for (const stream of this.streams.values()) {
      stream.writes?.flush();
      stream.socket?.destroy();
    }
    this.streams.clear();
    this.acceptQueue.length = 0;
  }

  /** Dispatch one decoded frame (state changes documented per case). */
  private handleFrame(frame: SmuxFrame): void {
    const stream = this.streams.get(frame.sid);
    switch (frame.cmd) {
      case SmuxCommand.SYN:
        if (stream !== undefined) {
          this.logger.debug('SYN for a live stream ignored', { sid: frame.sid });
          return;
        }
        this.open(frame.sid);
        return;
      case SmuxCommand.PSH:
        if (stream === undefined || stream.state === StreamState.Closing || stream.finReceived) {
          this.logger.debug('PSH for an unknown or finished stream dropped', {
            sid: frame.sid,
            bytes: frame.data.length,
          });
          return;
        }
        this.deliver(stream, frame.data);
        return;
      case SmuxCommand.FIN:
        if (stream === undefined) return;
        if (stream.state === StreamState.Accepting) stream.finReceived = true;
        else if (stream.state === StreamState.Connected) this.startClosing(stream);
        return;
      case SmuxCommand.NOP:
        return;
    }
  }

  /** SYN: create the stream in state Accepting and queue it for the accept loop. */
  private open(sid: number): void {
    const stream: ServerStream = {
      sid,
      state: StreamState.Accepting,
      held: [],
      heldBytes: 0,
      finReceived: false,
      socket: undefined,
      writes: undefined,
    };
    this.streams.set(sid, stream);
    this.acceptQueue.push(stream);
    this.hooks.streamOpened(sid);
    void this.acceptLoop();
  }

  private deliver(stream: ServerStream, data: Buffer): void {
    if (stream.socket === undefined) {
      stream.held.push(data);
      stream.heldBytes += data.length;
      return;
    }
    stream.writes?.hold();
    stream.socket.write(data);
    this.hooks.bytes(stream.sid, 'toDestination', data.length);
  }

  /** The accept loop: one dial at a time, in SYN order. */
  private async acceptLoop(): Promise<void> {
    if (this.accepting) return;
    this.accepting = true;
    try {
      for (;;) {
        const stream = this.acceptQueue.shift();
        if (stream === undefined || this.closed) return;
        let socket: net.Socket;
        try {
          socket = await this.hooks.dial(stream.sid);
        } catch (err) {
          if (this.closed) return;
          this.logger.info('destination dial failed', { sid: stream.sid, error: describeError(err) });
          this.hooks.dialFailed(stream.sid, err);
          this.write(encodeFrame(SmuxCommand.FIN, stream.sid));
          this.forget(stream);
          continue;
        }
        if (this.closed) {
          socket.destroy();
          return;
        }
        this.attach(stream, socket);
      }
    } finally {
      this.accepting = false;
    }
  }

  /** Dial succeeded: state Connected, write held data, then honour a FIN that arrived meanwhile. */
  private attach(stream: ServerStream, socket: net.Socket): void {
    stream.socket = socket;
    stream.writes = new WriteCoalescer(socket);
    stream.state = StreamState.Connected;
    socket.on('data', (chunk: Buffer) => this.fromDestination(stream, chunk));
    socket.on('end', () => this.finish(stream));
    socket.on('close', () => this.finish(stream));
    socket.on('error', (err) => {
      this.logger.debug('destination socket error', { sid: stream.sid, error: err.message });
      this.finish(stream);
    });
    socket.on('drain', () => this.hooks.maybeUnstalled());
    if (!this.reading) socket.pause();
    this.hooks.destinationConnected(stream.sid);
    const held = stream.held;
    stream.held = [];
    stream.heldBytes = 0;
    for (const data of held) this.deliver(stream, data);
    if (stream.finReceived) this.startClosing(stream);
    this.hooks.maybeUnstalled();
  }

  private fromDestination(stream: ServerStream, chunk: Buffer): void {
    if (stream.state !== StreamState.Connected && stream.state !== StreamState.Closing) return;
    this.hooks.bytes(stream.sid, 'fromDestination', chunk.length);
    for (let offset = 0; offset < chunk.length; offset += SMUX_SERVER.MAX_FRAME_DATA_BYTES) {
      const piece = chunk.subarray(offset, offset + SMUX_SERVER.MAX_FRAME_DATA_BYTES);
      this.write(encodeFrame(SmuxCommand.PSH, stream.sid, piece));
    }
  }

  /** FIN from the client on a connected stream: flush, then close fully (see {@link finish}). */
  private startClosing(stream: ServerStream): void {
    stream.state = StreamState.Closing;
    const socket = stream.socket as net.Socket;
    socket.end(() => this.finish(stream));
  }

  /** Close the destination fully, send FIN, forget the stream. Idempotent per stream. */
  private finish(stream: ServerStream): void {
    if (this.streams.get(stream.sid) !== stream) return;
    // Bytes written before this point were written; a cork must not turn them into lost data.
    stream.writes?.flush();
    stream.socket?.destroy();
    this.write(encodeFrame(SmuxCommand.FIN, stream.sid));
    this.forget(stream);
  }

  private forget(stream: ServerStream): void {
    if (this.streams.get(stream.sid) !== stream) return;
    this.streams.delete(stream.sid);
    this.hooks.streamClosed(stream.sid);
    this.hooks.maybeUnstalled();
  }

  private write(bytes: Buffer): void {
    if (!this.closed) this.hooks.writeOutbound(bytes);
  }

  private fail(reason: string): void {
    if (this.closed) return;
    this.logger.warn('smux session failed', { reason });
    this.close();
    this.hooks.failed(reason);
  }
}
