/**
 * Basic (non-multiplexed) mode relay (spec §9.3): one local connection at a time, raw bytes both ways as
 * Output payloads. Each connection gets a {@link BasicStream}, a Duplex like an smux stream, so the front
 * end never branches on the mode (docs/architecture.md, "The forward layer"). Streams queue behind the
 * active one; when the active stream ends (our `end()` or a destroy) we send Flag DisconnectToPort and
 * serve the next one; the agent redials its destination when our next data arrives.
 *
 * Agent Output carries no connection id, so the boundary between one connection's data and the next is
 * taken from the order of events on the data channel (spec §9.3; emulated agent `agent-basic.ts`
 * `disconnect()`): the agent handles our messages in sequence order, closes the destination and drops what
 * it read but had not sent when it handles DisconnectToPort, acks the flag, and dials again only for our
 * next Output. So every Output it sent for the old connection went out before the flag's ack, on the same
 * ordered WebSocket, and every Output for the next connection after it, with higher sequence numbers.
 * The rule: from sending DisconnectToPort until its ack arrives, delivered Output is discarded; when the
 * ack arrives, Output with a sequence number up to the highest one received by then (delivered, waiting
 * for reorder, or dropped and to be resent) is discarded too. Everything later belongs to the next
 * connection. Limitation: if the link drops and the flag's ack is lost with it, the next connection's
 * first bytes may reach us on the new link before the re-ack and be discarded (lost, never misdelivered).
 */
import { Duplex } from 'node:stream';
import { FlagCode, MAX_OUTPUT_PAYLOAD_BYTES } from '../datachannel/constants.js';
import { TunnelError } from '../errors.js';
import type { Logger } from '../log.js';

/** What the relay needs from its session. */
export interface BasicRelayDeps {
  /** Commit one Output payload; false = send window full (hold the writer until resume()). */
  send(payload: Buffer): boolean;
  /** Commit one Flag message; returns the sequence number it was given. */
  sendFlag(flag: FlagCode): number;
  /** Ask the reliable channel to offer refused messages again. */
  retryDelivery(): void;
  logger: Logger;
}

/** Local connections waiting for their turn, at most (our default; older ones are served first). */
export const BASIC_QUEUE_LIMIT = 64;

/**
 * Buffer of each side of a {@link BasicStream}, bytes (our default, Node's own default for sockets): agent
 * Output past it is refused (the reliable channel re-offers it on `retryDelivery`), local bytes past it
 * pause the writer.
 */
export const BASIC_STREAM_BUFFER_BYTES = 16 * 1024;

/** The relay's counters, for the stats tree (`src/stats.ts`). */
export interface BasicRelayStats {
  /** Connections served so far (the active one included). */
  served: number;
  /** Connections waiting behind the active one (at most {@link BASIC_QUEUE_LIMIT}). */
  queued: number;
  /** Bytes of agent Output discarded because their connection had ended (never given to the next), bytes. */
  discardedBytes: number;
}

/** A write the relay has not finished: not this stream's turn yet, or the send window is full. */
interface HeldWrite {
  /** Bytes still to send; undefined once sent (only the callback waits, for the window). */
  chunk: Buffer | undefined;
  callback: (err?: Error | null) => void;
}

/**
 * One local connection's bytes over a basic-mode session: write = towards the destination, read = from it,
 * `end()` = the connection is over (DisconnectToPort), after which the readable side ends too. Queued
 * streams hold their first write until their turn.
 */
export class BasicStream extends Duplex {
  /** Held write, or undefined. Read and written only by the relay. */
  held: HeldWrite | undefined;

  constructor(
    /** 1-based number of this connection on its session (for logs). */
    readonly id: number,
    private readonly relay: BasicRelay,
  ) {
    super({
      allowHalfOpen: true,
      readableHighWaterMark: BASIC_STREAM_BUFFER_BYTES,
      writableHighWaterMark: BASIC_STREAM_BUFFER_BYTES,
    });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.held = { chunk, callback };
    this.relay.flush(this);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.relay.finish(this);
    callback();
  }

  override _read(): void {
    this.relay.readable(this);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.relay.finish(this);
    callback(err);
  }
}

/** Serialises local connections over one basic-mode session. */
export class BasicRelay {
  private active: BasicStream | undefined;
  private readonly waiting: BasicStream[] = [];
  /** The send window was full at the latest write; the active stream's write waits for resume(). */
  private windowFull = false;
  /** The active stream's readable buffer is full (push() said false) until its next _read(). */
  private readFull = false;
  private destroyed = false;
  /** Sequence number of the latest DisconnectToPort not yet acked by the agent. */
  private pendingDisconnectSeq: number | undefined;
  /** Agent Output below this sequence number belongs to a connection that has ended. */
  private discardBelowSeq = 0;
  /** Streams handed out (numbers them). */
  private opened = 0;
  /** Connections served so far. */
  served = 0;
  /** Bytes of agent Output discarded because their connection had ended (never given to the next). */
  discardedBytes = 0;

  constructor(private readonly deps: BasicRelayDeps) {}

  /**
   * A stream for one more connection, served when the ones before it have ended.
   * @throws TunnelError `PF_ERR_SESSION_CLOSED` once the session ended, `PF_ERR_QUEUE_FULL` when
   * {@link BASIC_QUEUE_LIMIT} connections already wait.
   */
  open(): BasicStream {
    if (this.destroyed) throw new TunnelError('PF_ERR_SESSION_CLOSED', 'session is not open for new streams');
    if (this.waiting.length >= BASIC_QUEUE_LIMIT) {
      this.deps.logger.warn(
        `basic mode: ${BASIC_QUEUE_LIMIT} connections already waiting; closing a new one`,
      );
      throw new TunnelError(
        'PF_ERR_QUEUE_FULL',
        `basic mode: ${BASIC_QUEUE_LIMIT} connections already wait for this session (BASIC_QUEUE_LIMIT)`,
      );
    }
    const stream = new BasicStream(++this.opened, this);
    this.waiting.push(stream);
    if (!this.active) this.serveNext();
    return stream;
  }

  /** Connections waiting behind the active one. */
  get queued(): number {
    return this.waiting.length;
  }

  /** The relay's branch of the stats tree: a fresh snapshot per read. */
  get stats(): BasicRelayStats {
    return { served: this.served, queued: this.waiting.length, discardedBytes: this.discardedBytes };
  }

  private serveNext(): void {
    const stream = this.waiting.shift();
    if (!stream) return;
    this.active = stream;
    this.readFull = false;
    this.served++;
    this.flush(stream);
    // Data the agent sent while nobody was connected was refused; offer it to this connection.
    this.deps.retryDelivery();
  }

  /** Send what `stream` holds, if it is its turn and the window has room (called by the stream and resume()). */
  flush(stream: BasicStream): void {
    const held = stream.held;
    if (stream !== this.active || this.windowFull || !held) return;
    const chunk = held.chunk;
    held.chunk = undefined;
    if (chunk) {
      for (let offset = 0; offset < chunk.length; offset += MAX_OUTPUT_PAYLOAD_BYTES) {
        if (!this.deps.send(chunk.subarray(offset, offset + MAX_OUTPUT_PAYLOAD_BYTES)))
          this.windowFull = true;
      }
    }
    // The payloads are committed either way; a full window holds the writer (backpressure) until resume().
    if (this.windowFull) return;
    stream.held = undefined;
    held.callback();
  }

  /** The send window has room again. */
  resume(): void {
    this.windowFull = false;
    if (this.active) this.flush(this.active);
  }

  /** `stream` wants more: offer the agent Output refused while its buffer was full. */
  readable(stream: BasicStream): void {
    if (stream !== this.active || !this.readFull) return;
    this.readFull = false;
    this.deps.retryDelivery();
  }

  /**
   * True when the in-order agent Output `seq` belongs to a connection that has ended: the caller consumes
   * (acks) it and drops it, and it is counted in {@link discardedBytes}.
   */
  discards(seq: number, bytes: number): boolean {
    if (this.pendingDisconnectSeq === undefined && seq >= this.discardBelowSeq) return false;
    this.discardedBytes += bytes;
    return true;
  }

  /**
   * The agent acked our message `seq`; `highestReceivedSeq` is the highest agent sequence number received
   * so far. The ack of the latest DisconnectToPort sets the connection boundary (see the module comment).
   */
  acked(seq: number, highestReceivedSeq: number): void {
    if (seq !== this.pendingDisconnectSeq) return;
    this.pendingDisconnectSeq = undefined;
    this.discardBelowSeq = Math.max(this.discardBelowSeq, highestReceivedSeq + 1);
  }

  /**
   * Agent data for the active connection; false refuses it (no connection, or its buffer is full: push()
   * said false, and the stream's next read re-offers it through `retryDelivery`).
   */
  deliver(payload: Buffer): boolean {
    const stream = this.active;
    if (!stream || this.readFull || stream.destroyed) return false;
    if (!stream.push(payload)) this.readFull = true;
    return true;
  }

  /**
   * `stream` is over (its `end()`, or it was destroyed): a waiting one leaves the queue; the active one
   * ends its readable side, DisconnectToPort tells the agent, and the next connection is served.
   */
  finish(stream: BasicStream): void {
    const index = this.waiting.indexOf(stream);
    if (index >= 0) {
      this.waiting.splice(index, 1);
      if (!stream.destroyed) stream.push(null);
      return;
    }
    if (this.active !== stream) return;
    this.active = undefined;
    this.readFull = false;
    if (!stream.destroyed) stream.push(null);
    if (!this.destroyed) this.pendingDisconnectSeq = this.deps.sendFlag(FlagCode.DisconnectToPort);
    this.serveNext();
  }

  /** Reset every connection with `err` (the session ended). */
  destroy(err: Error): void {
    this.destroyed = true;
    const streams = [...(this.active ? [this.active] : []), ...this.waiting.splice(0)];
    this.active = undefined;
    for (const stream of streams) stream.destroy(err);
  }
}
