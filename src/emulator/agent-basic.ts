/**
 * Basic (single-connection) port forwarding of the emulated agent (spec §9.3; reference agent
 * `agent/session/plugins/port/port_basic.go`):
 * - the destination is dialled at start; a failure there ends the session (the caller fails it);
 * - Output payloads are written to the destination as raw bytes;
 * - Flag DisconnectToPort closes the destination; the next Output redials it, and that message waits for
 *   the dial (a failed redial leaves it neither acked nor consumed, so the client's resend retries);
 * - when the destination closes first the agent forgets the socket silently and redials on the next Output.
 */
import type net from 'node:net';
import type { Logger } from '../log.js';
import { describeError } from '../errors.js';
import type { DeliveryResult } from './agent-reliability.js';
import type { DestinationDialer, OutboundPump } from './port.js';

/** What the basic port needs from the agent. */
export interface BasicPortDeps {
  dialer: DestinationDialer;
  /** The agent's read loop; destination bytes go here. */
  pump: OutboundPump;
  /** Bytes moved to or from the destination. */
  bytes(direction: 'toDestination' | 'fromDestination', count: number): void;
  destinationConnected(): void;
  /** The destination socket drained or went away: a receive stall may have ended. */
  maybeUnstalled(): void;
  /** Destination bytes queued in the socket above which Output is not consumed, bytes. */
  maxReceiveBufferBytes: number;
  logger: Logger;
}

/** One destination connection at a time, redialled on demand. */
export class BasicPort {
  private socket: net.Socket | undefined;
  private reading = true;
  private closed = false;

  constructor(private readonly deps: BasicPortDeps) {}

  /** True while a destination socket is connected. */
  get connected(): boolean {
    return this.socket !== undefined;
  }

  /** True while the destination's write queue holds the receive-buffer limit or more. */
  get receiveStalled(): boolean {
    return (this.socket?.writableLength ?? 0) >= this.deps.maxReceiveBufferBytes;
  }

  /** Initial dial (spec §9.3). Rejects when it fails; the agent then fails the session. */
  async start(): Promise<void> {
    this.attach(await this.deps.dialer.dial(undefined));
  }

  /** One Output payload: write it, redialling first when there is no destination. */
  write(payload: Buffer): DeliveryResult {
    if (this.closed) return true;
    if (this.socket !== undefined) {
      this.writeNow(this.socket, payload);
      return true;
    }
    return this.deps.dialer.dial(undefined).then(
      (socket) => {
        if (this.closed) {
          socket.destroy();
          return true;
        }
        this.attach(socket);
        this.writeNow(socket, payload);
        return true;
      },
      (err: unknown) => {
        this.deps.logger.info('redial failed; Output not consumed', { error: describeError(err) });
        return false;
      },
    );
  }

  /** Flag DisconnectToPort: close the destination and drop what was read but not yet sent. */
  disconnect(): void {
    const socket = this.socket;
    this.socket = undefined;
    socket?.destroy();
    this.deps.pump.clear();
  }

  /** Stop or resume reading the destination. */
  setReading(on: boolean): void {
    this.reading = on;
    if (on) this.socket?.resume();
    else this.socket?.pause();
  }

  /** Close the destination for good. */
  close(): void {
    this.closed = true;
    this.socket?.destroy();
    this.socket = undefined;
  }

  private attach(socket: net.Socket): void {
    this.socket = socket;
    const gone = (): void => {
      if (this.socket !== socket) return;
      this.deps.logger.debug('destination closed; will redial on next Output');
      this.socket = undefined;
      socket.destroy();
      this.deps.maybeUnstalled();
    };
    socket.on('data', (chunk: Buffer) => {
      if (this.socket !== socket) return;
      this.deps.bytes('fromDestination', chunk.length);
      this.deps.pump.push(chunk);
    });
    socket.on('end', gone);
    socket.on('close', gone);
    socket.on('error', (err) => {
      this.deps.logger.debug('destination socket error', { error: err.message });
      gone();
    });
    socket.on('drain', () => this.deps.maybeUnstalled());
    if (!this.reading) socket.pause();
    this.deps.destinationConnected();
  }

  private writeNow(socket: net.Socket, payload: Buffer): void {
    socket.write(payload);
    this.deps.bytes('toDestination', payload.length);
  }
}
