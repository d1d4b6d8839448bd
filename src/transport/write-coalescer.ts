/**
 * Socket-level write batching shared by the client's data-channel WebSocket and the emulator (issues 7 and
 * 16). It changes how bytes reach the kernel, never which bytes: every frame is still written whole and in
 * order, only several of them may leave in one `writev` instead of one syscall each.
 *
 * Neutral on purpose: it knows nothing of the data channel, smux or the emulator, so both the product and the
 * emulator may import it without one importing the other.
 */
import type WebSocket from 'ws';
import { currentTickEpoch } from './tick.js';

/** The part of a `net.Socket` a {@link WriteCoalescer} uses. */
export interface CorkableSocket {
  cork(): void;
  uncork(): void;
  /** Bytes the stream holds not yet handed to the kernel (`Writable#writableLength`). */
  readonly writableLength?: number;
}

/** The part of a `net.Socket` that lets a coalescer see its reads ({@link WriteCoalescer.watchReads}). */
export interface ReadableSocket {
  prependListener(event: 'data', listener: () => void): unknown;
  on(event: 'data', listener: () => void): unknown;
  removeListener(event: 'data', listener: () => void): unknown;
}

function isCorkable(value: unknown): value is CorkableSocket {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Partial<CorkableSocket>).cork === 'function' &&
    typeof (value as Partial<CorkableSocket>).uncork === 'function'
  );
}

function isReadable(value: unknown): value is ReadableSocket {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Partial<ReadableSocket>).prependListener === 'function' &&
    typeof (value as Partial<ReadableSocket>).on === 'function' &&
    typeof (value as Partial<ReadableSocket>).removeListener === 'function'
  );
}

/** The raw `_socket` field of a `ws` WebSocket (see {@link underlyingSocketOf}). */
function rawSocketOf(ws: WebSocket): unknown {
  return (ws as unknown as { _socket?: unknown })._socket;
}

/**
 * The TCP (or TLS) socket under a `ws` WebSocket, or undefined. `ws` has no public API for it; ws 8 keeps it
 * in the private `_socket` field from the upgrade on (`WebSocket#setSocket`). Read through this one narrow,
 * guarded accessor so a future ws without the field only loses write coalescing, never correctness.
 */
export function underlyingSocketOf(ws: WebSocket): (CorkableSocket & Partial<ReadableSocket>) | undefined {
  const socket = rawSocketOf(ws);
  return isCorkable(socket) ? socket : undefined;
}

/**
 * Coalesces the socket writes of one synchronous burst into one `writev`, and leaves a lone write alone:
 *
 * - **Idle link**: the first write of a tick, with nothing queued in the socket, goes out at once: no cork,
 *   no `nextTick` hop before the bytes reach the kernel (a ping-pong reply or a lone ack pays nothing).
 * - **Under load**: a second write in the same tick, or any write while the socket still holds unwritten
 *   bytes, corks the socket and schedules the uncork for `process.nextTick`, i.e. right after the event that
 *   caused the burst (an ack opening the window, a local read filling many messages) has been handled.
 * - **During a read** ({@link watchReads}): every write made while the socket's `'data'` event is being
 *   handled — for a WebSocket, all acks and data frames produced by the messages of one read — is corked from
 *   the first, so they leave in one `writev`.
 *
 * `cork()` is counted, so the cork/uncork pairs ws's Sender issues per frame nest inside ours. Adds no timer.
 */
export class WriteCoalescer {
  private corked = false;
  /** Epoch of the tick of the latest uncorked write. */
  private lastWriteEpoch = -1;
  /** True while the watched socket's `'data'` listeners run (see {@link watchReads}). */
  private inRead = false;
  private readonly readStarts = (): void => {
    this.inRead = true;
  };
  private readonly readEnds = (): void => {
    this.inRead = false;
  };
  private watched: ReadableSocket | undefined;
  /** Writes that went out at once (idle link). */
  immediateWrites = 0;
  /** Bursts corked and written out together. */
  bursts = 0;

  constructor(private readonly socket: CorkableSocket | undefined) {}

  /**
   * Treat every write made while `socket` (this coalescer's socket, or the one under it) emits `'data'` as one
   * burst. Call after the reader (e.g. ws) has attached its own `'data'` listener: ours run just before and just
   * after it, so the burst spans exactly the handling of one read.
   */
  watchReads(socket: unknown): void {
    if (!isReadable(socket) || this.watched !== undefined) return;
    this.watched = socket;
    socket.prependListener('data', this.readStarts);
    socket.on('data', this.readEnds);
  }

  /** Stop watching reads (the socket is being handed back or closed). */
  unwatchReads(): void {
    const socket = this.watched;
    if (socket === undefined) return;
    this.watched = undefined;
    this.inRead = false;
    socket.removeListener('data', this.readStarts);
    socket.removeListener('data', this.readEnds);
  }

  /** Call before each write; decides whether this write goes out at once or joins a corked burst. */
  hold(): void {
    const socket = this.socket;
    if (this.corked || socket === undefined) return;
    if (!this.inRead && (socket.writableLength ?? 0) === 0) {
      const epoch = currentTickEpoch();
      if (epoch !== this.lastWriteEpoch) {
        this.lastWriteEpoch = epoch;
        this.immediateWrites++;
        return;
      }
    }
    this.corked = true;
    this.bursts++;
    socket.cork();
    process.nextTick(this.release);
  }

  /**
   * Write out what the current burst holds back, now. Call before anything that may destroy the socket
   * (`terminate()`), which would otherwise discard corked bytes that a plain write would have delivered.
   */
  flush(): void {
    this.release();
  }

  private readonly release = (): void => {
    if (!this.corked) return;
    this.corked = false;
    this.socket?.uncork();
  };
}
