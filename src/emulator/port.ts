/**
 * The emulated agent's port plugin plumbing (spec §9.2, §9.3): where the destination is, dialling it with
 * the fault knobs applied, and the paced pump that turns bytes read from the destination side into Output
 * messages of at most `chunkSize` bytes with a sleep after each, like the reference agent's read loop
 * (`agent/session/plugins/port/port_mux.go` / `port_basic.go`: 1024-byte reads, 1 ms sleep per message).
 */
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Logger } from '../log.js';

/** Port-plugin constants. */
export const PORT_PLUGIN = {
  /**
   * Address dialled for `localhost` (emulator choice): the reference agent dials `localhost`, which may
   * resolve to `::1` first; test destinations listen on 127.0.0.1, so the emulator pins IPv4.
   */
  LOCALHOST_ADDRESS: '127.0.0.1',
  /**
   * Bytes read from the destination side but not yet cut into Output messages above which the emulator
   * stops reading its destinations (emulator choice): stands in for the kernel socket buffer and the
   * blocking pipe between the reference agent's smux server and its reader.
   */
  PUMP_HIGH_WATER_BYTES: 64 * 1024,
  /** With pacing 0, yield to the event loop after this many messages so sockets and timers still run. */
  UNPACED_BATCH_MESSAGES: 64,
} as const;

/** Where the agent connects for every stream (basic: the one connection). */
export interface Destination {
  /** Address passed to `net.connect`. */
  address: string;
  /** TCP port, 1–65535. */
  port: number;
}

/**
 * Destination from the document properties (spec §9.2): `host` (mapped through `resolveHost`) or localhost,
 * at `portNumber`. Returns a reason string when `portNumber` is not a valid port.
 */
export function resolveDestination(
  properties: Record<string, string>,
  resolveHost: (host: string) => string,
): Destination | string {
  const portText = properties['portNumber'] ?? '';
  const port = /^\d+$/.test(portText) ? Number(portText) : NaN;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    return `invalid portNumber ${JSON.stringify(portText)}`;
  }
  const host = properties['host'];
  if (host === undefined || host === '' || host === 'localhost') {
    return { address: PORT_PLUGIN.LOCALHOST_ADDRESS, port };
  }
  return { address: resolveHost(host), port };
}

/** Fault knobs that affect dialling (spec §12.2 `dialFail`, `dialDelayMs`). */
export interface DialFaults {
  /** smux stream ids whose dial fails without connecting. */
  dialFailStreamIds: readonly number[];
  /** The next this-many dials fail without connecting. */
  dialFailCount: number;
  /** Delay before every dial, ms. */
  dialDelayMs: number;
}

/** Dials the destination, applying the fault knobs; one instance per agent (the fail count is shared). */
export class DestinationDialer {
  private failuresLeft: number;
  private readonly failSids: ReadonlySet<number>;
  private closed = false;

  /**
   * @param refusal - the agent's denylist answer for this destination (`denylist.ts`); set ⇒ every dial
   *   fails with it, as the agent refuses before connecting
   */
  constructor(
    private readonly destination: Destination,
    private readonly faults: DialFaults,
    private readonly logger: Logger,
    private readonly refusal?: string,
  ) {
    this.failuresLeft = faults.dialFailCount;
    this.failSids = new Set(faults.dialFailStreamIds);
  }

  /**
   * Connect to the destination for smux stream `sid` (undefined in basic mode). Resolves with a connected
   * socket; rejects with an `Error` when the dial fails, is made to fail, or the dialer was closed meanwhile.
   */
  async dial(sid: number | undefined): Promise<net.Socket> {
    if (this.faults.dialDelayMs > 0) await sleep(this.faults.dialDelayMs);
    if (this.closed) throw new Error('port plugin closed');
    if (this.refusal !== undefined) throw new Error(this.refusal);
    if (sid !== undefined && this.failSids.has(sid)) {
      throw new Error(`dial for stream ${sid} failed (injected)`);
    }
    if (this.failuresLeft > 0) {
      this.failuresLeft--;
      throw new Error('dial failed (injected)');
    }
    const { address, port } = this.destination;
    this.logger.debug('dialling destination', { address, port, sid });
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: address, port });
      const onError = (err: Error): void => reject(err);
      s.once('error', onError);
      s.once('connect', () => {
        s.off('error', onError);
        resolve(s);
      });
    });
    socket.setNoDelay(true);
    if (this.closed) {
      socket.destroy();
      throw new Error('port plugin closed');
    }
    return socket;
  }

  /** Make pending and later dials fail. */
  close(): void {
    this.closed = true;
  }
}

/** FIFO of byte chunks with a running length; `take` copies only when a chunk boundary is crossed. */
class ByteQueue {
  private readonly chunks: Buffer[] = [];
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.chunks.push(bytes);
    this.total += bytes.length;
  }

  /** Remove and return up to `max` bytes from the front. */
  take(max: number): Buffer {
    const head = this.chunks[0];
    if (head === undefined) return Buffer.alloc(0);
    if (head.length >= max) {
      const out = head.subarray(0, max);
      if (head.length === max) this.chunks.shift();
      else this.chunks[0] = head.subarray(max);
      this.total -= out.length;
      return out;
    }
    const size = Math.min(max, this.total);
    const out = Buffer.allocUnsafe(size);
    let filled = 0;
    while (filled < size) {
      const chunk = this.chunks[0] as Buffer;
      const n = Math.min(chunk.length, size - filled);
      chunk.copy(out, filled, 0, n);
      filled += n;
      if (n === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(n);
    }
    this.total -= size;
    return out;
  }

  clear(): void {
    this.chunks.length = 0;
    this.total = 0;
  }
}

/** Pacing of the pump. */
export interface OutboundPumpOptions {
  /** Largest Output payload, bytes (default 1024). */
  chunkSize: number;
  /** Sleep after each message, ms; 0 = unpaced. */
  pacingMs: number;
  /** Queue length above which `onHigh` fires, bytes. */
  highWaterBytes: number;
}

/** What the pump drives. */
export interface OutboundPumpDeps {
  /** Send one chunk as an Output message. */
  emit(chunk: Buffer): void;
  /** False while the pump must not read (paused publication, terminating, closed). */
  canRun(): boolean;
  /** The queue went above the high-water mark: stop reading destinations. */
  onHigh(): void;
  /** The queue drained below the high-water mark: resume reading destinations. */
  onLow(): void;
}

/**
 * The agent's read loop: bytes from the destination side go in with {@link push}; a single async loop cuts
 * them into ≤ `chunkSize` Output messages and sleeps `pacingMs` after each. One instance per destination
 * byte stream (the basic-mode socket, or the smux server's outbound stream in mux mode).
 */
export class OutboundPump {
  private readonly queue = new ByteQueue();
  private running = false;
  private high = false;
  private stopped = false;

  constructor(
    private readonly options: OutboundPumpOptions,
    private readonly deps: OutboundPumpDeps,
  ) {}

  /** Bytes waiting to be sent. */
  get queuedBytes(): number {
    return this.queue.length;
  }

  /** True while the loop is running (sending or sleeping between messages). */
  get busy(): boolean {
    return this.running;
  }

  /** Queue bytes read from the destination side and start the loop if it is idle. */
  push(bytes: Buffer): void {
    if (this.stopped) return;
    this.queue.push(bytes);
    if (!this.high && this.queue.length > this.options.highWaterBytes) {
      this.high = true;
      this.deps.onHigh();
    }
    this.kick();
  }

  /** Drop everything queued (basic mode: the destination socket was closed on DisconnectToPort). */
  clear(): void {
    this.queue.clear();
    this.checkLow();
  }

  /** Start the loop if there is something to send and it may run. */
  kick(): void {
    if (this.running || this.stopped || this.queue.length === 0 || !this.deps.canRun()) return;
    this.running = true;
    void this.loop();
  }

  /** Stop for good and drop the queue. */
  stop(): void {
    this.stopped = true;
    this.queue.clear();
  }

  private async loop(): Promise<void> {
    // `running` is cleared inside the loop's own frame: when the loop ends without awaiting, bytes pushed
    // right after it (in the same turn) must find the pump idle and restart it, not wait for a later push.
    try {
      let unpaced = 0;
      while (!this.stopped && this.queue.length > 0 && this.deps.canRun()) {
        this.deps.emit(this.queue.take(this.options.chunkSize));
        this.checkLow();
        if (this.options.pacingMs > 0) {
          await sleep(this.options.pacingMs);
        } else if (++unpaced % PORT_PLUGIN.UNPACED_BATCH_MESSAGES === 0) {
          await yieldToLoop();
        }
      }
    } finally {
      this.running = false;
    }
  }

  private checkLow(): void {
    if (this.high && this.queue.length <= this.options.highWaterBytes) {
      this.high = false;
      this.deps.onLow();
    }
  }
}
