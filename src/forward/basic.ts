/**
 * Basic (non-multiplexed) mode relay (spec §9.3): one local connection at a time, raw bytes both ways as
 * Output payloads. When the local connection ends we send Flag DisconnectToPort and serve the next one;
 * the agent redials its destination when our next data arrives.
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
import type { Socket } from 'node:net';
import { FlagCode, MAX_OUTPUT_PAYLOAD_BYTES } from '../datachannel/constants.js';
import type { Logger } from '../log.js';

/** What the relay needs from its session. */
export interface BasicRelayDeps {
  /** Commit one Output payload; false = send window full (pause the source until resume()). */
  send(payload: Buffer): boolean;
  /** Commit one Flag message; returns the sequence number it was given. */
  sendFlag(flag: FlagCode): number;
  /** Ask the reliable channel to offer refused messages again. */
  retryDelivery(): void;
  logger: Logger;
}

/** Local connections waiting for their turn, at most (our default; older ones are served first). */
export const BASIC_QUEUE_LIMIT = 64;

/** Serialises local connections over one basic-mode session. */
export class BasicRelay {
  private active: Socket | undefined;
  private readonly waiting: Socket[] = [];
  private windowFull = false;
  private socketFull = false;
  private destroyed = false;
  /** Sequence number of the latest DisconnectToPort not yet acked by the agent. */
  private pendingDisconnectSeq: number | undefined;
  /** Agent Output below this sequence number belongs to a connection that has ended. */
  private discardBelowSeq = 0;
  /** Connections served so far. */
  served = 0;
  /** Bytes of agent Output discarded because their connection had ended (never given to the next). */
  discardedBytes = 0;

  constructor(private readonly deps: BasicRelayDeps) {}

  /** Queue a local connection; it is served when the previous one ends. Over the limit it is closed. */
  attach(socket: Socket): void {
    if (this.destroyed) {
      socket.destroy();
      return;
    }
    if (this.waiting.length >= BASIC_QUEUE_LIMIT) {
      this.deps.logger.warn(
        `basic mode: ${BASIC_QUEUE_LIMIT} connections already waiting; closing a new one`,
      );
      socket.destroy();
      return;
    }
    socket.pause();
    this.waiting.push(socket);
    socket.once('close', () => {
      const index = this.waiting.indexOf(socket);
      if (index >= 0) this.waiting.splice(index, 1);
    });
    if (!this.active) this.serveNext();
  }

  /** Connections waiting behind the active one. */
  get queued(): number {
    return this.waiting.length;
  }

  private serveNext(): void {
    const socket = this.waiting.shift();
    if (!socket) return;
    this.active = socket;
    this.served++;
    socket.on('data', (chunk: Buffer) => this.onLocalData(chunk));
    socket.once('end', () => this.finishActive(socket));
    socket.once('close', () => this.finishActive(socket));
    socket.on('error', (err) => this.deps.logger.debug(`local connection error: ${err.message}`));
    socket.on('drain', () => {
      this.socketFull = false;
      this.deps.retryDelivery();
    });
    if (!this.windowFull) socket.resume();
    // Data the agent sent while nobody was connected was refused; offer it to this connection.
    this.deps.retryDelivery();
  }

  private onLocalData(chunk: Buffer): void {
    for (let offset = 0; offset < chunk.length; offset += MAX_OUTPUT_PAYLOAD_BYTES) {
      const piece = chunk.subarray(offset, offset + MAX_OUTPUT_PAYLOAD_BYTES);
      if (!this.deps.send(piece)) this.windowFull = true;
    }
    if (this.windowFull) this.active?.pause();
  }

  /** The send window has room again. */
  resume(): void {
    this.windowFull = false;
    this.active?.resume();
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

  /** Agent data for the active connection; false refuses it (no connection, or the socket is full). */
  deliver(payload: Buffer): boolean {
    const socket = this.active;
    if (!socket || this.socketFull || socket.destroyed || !socket.writable) return false;
    if (!socket.write(payload)) this.socketFull = true;
    return true;
  }

  private finishActive(socket: Socket): void {
    if (this.active !== socket) return;
    this.active = undefined;
    this.socketFull = false;
    socket.removeAllListeners('data');
    socket.removeAllListeners('drain');
    if (!socket.destroyed) socket.end();
    if (!this.destroyed) this.pendingDisconnectSeq = this.deps.sendFlag(FlagCode.DisconnectToPort);
    this.serveNext();
  }

  /** Close every connection (session ended). */
  destroy(): void {
    this.destroyed = true;
    this.active?.destroy();
    this.active = undefined;
    for (const socket of this.waiting.splice(0)) socket.destroy();
  }
}
