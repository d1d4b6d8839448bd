/**
 * smux v1 client session (spec §9.4, §9.6; xtaci/smux `session.go`): opens streams, demultiplexes the agent's
 * frames onto them and serialises their frames into one outgoing byte stream that the data-channel pump pulls
 * at its own pace. The session does no I/O and owns no timers; the pump feeds {@link SmuxClientSession.receive}
 * and drains {@link SmuxClientSession.pullOutgoing}.
 *
 * Buffers, each bounded, named and counted in {@link SmuxSessionStats}:
 * - outgoing: at most one in-flight write batch per stream (Node's Writable serialises `_write`/`_writev`, and
 *   the batch came out of a Writable buffer bounded by `streamWriteBufferBytes`), plus one pending SYN and FIN
 *   per stream, one pending NOP, and at most one frame cut across pulls (`outgoingBufferedBytes`).
 * - send budget: what all streams together have accepted and not yet seen pulled, plus the read reserves
 *   of the sockets reading now, is bounded by `sendBudgetBytes` (`src/mux/send-budget.ts`: streams beyond
 *   it are held, their sources paused; `sendQueuedBytes`, `sendHeldStreams`).
 * - receive: never refused (spec §9.6: smux v1 has no window, and refusing one stream's bytes would stall every
 *   stream). Each stream's {@link StreamReceiveQueue} keeps what its reader has not taken: its Readable buffer
 *   ({@link STREAM_READABLE_HIGH_WATER_BYTES}), then memory up to `streamReceiveBufferBytes` per stream and
 *   `sessionReceiveBufferBytes` per session (`receiveBufferedBytes`), then the injected daemon-wide spill store
 *   (`receiveSpilledBytes`, `spillFilesOpen`). Past `streamBacklogLimitBytes` waiting, or when spilling fails,
 *   that one stream is destroyed with `PF_ERR_STREAM_BACKLOG` (`backlogResets`); the others are untouched.
 * - the frame decoder's reassembly buffer: at most one partial frame (≤ 65,543 bytes) plus the rest of the
 *   last chunk.
 *
 * Choices:
 * - The order of outgoing frames (NOP first, streams round-robin one frame per turn, PSH cut when pulled) is
 *   the send scheduler's, `src/mux/scheduler.ts`; a pull may come back a few bytes short of `maxBytes` rather
 *   than end in a header fragment.
 * - FIN after the agent's FIN is skipped: the agent forgets a stream when it sends FIN, so ours would only be
 *   dropped as unknown. A FIN already (partly) pulled is of course completed.
 * - Data written after the agent's FIN is discarded with a successful callback (like writing into a TCP
 *   connection the peer has closed): failing the write would destroy the stream and lose received bytes the
 *   local reader has not consumed yet.
 */
import { EventEmitter } from 'node:events';
import { ConfigError, ProtocolError, TunnelError } from '../errors.js';
import { SMUX_FRAME_DATA_LIMIT_BYTES, SmuxCommand, SmuxFrameDecoder, describeFrame } from './frame.js';
import { SEND_READ_RESERVE_BYTES, STREAM_READABLE_HIGH_WATER_BYTES } from './defaults.js';
import { StreamReceiveQueue } from './receive-queue.js';
import { SendBudget, afterPoll } from './send-budget.js';
import type { BudgetMember, SendBudgetStats } from './send-budget.js';
import { FinState, SmuxSendScheduler } from './scheduler.js';
import type { OutgoingStream } from './scheduler.js';
import type { ReceiveMemory } from './receive-queue.js';
import type { SpillStore } from './spill.js';
import { SmuxStream } from './stream.js';
import type { Logger } from '../log.js';
import type { SmuxFrame } from './frame.js';
import type { SmuxStreamHooks, SmuxWriteCallback } from './stream.js';

/**
 * Session buffer bounds; resolved and validated by the caller's config (see docs/architecture.md,
 * Conventions).
 */
export interface SmuxSessionOptions {
  /** Bytes kept in memory for one stream's slow local reader before spilling (spec §9.6, default 4 MiB, passed in). */
  streamReceiveBufferBytes: number;
  /** Bytes kept in memory across all streams before any stream spills (default 64 MiB, passed in). */
  sessionReceiveBufferBytes: number;
  /**
   * Bytes that may wait for one stream's reader in total (memory + spill) before that stream is reset
   * (default 512 MiB, passed in; ≥ `streamReceiveBufferBytes`).
   */
  streamBacklogLimitBytes: number;
  /** Writable highWaterMark of each stream, bytes (default `STREAM_WRITE_BUFFER_BYTES`, `src/mux/defaults.ts`). */
  streamWriteBufferBytes: number;
  /**
   * Most bytes the session's streams may have accepted and not yet seen pulled, plus the read reserves of
   * the sources reading now (`src/mux/send-budget.ts`), bytes; ≥ `SEND_READ_RESERVE_BYTES` (default
   * `SESSION_SEND_BUDGET_BYTES`, `src/mux/defaults.ts`).
   */
  sendBudgetBytes: number;
  /**
   * Max PSH data bytes per frame when serialising (≤ `SMUX_FRAME_DATA_LIMIT_BYTES`; default
   * `SMUX_WRITE_FRAME_DATA_BYTES`, `src/mux/defaults.ts`).
   */
  maxFrameDataBytes: number;
}

/** Counters of one session, for metrics and tests. All counts are since the session was created. */
export interface SmuxSessionStats extends SendBudgetStats {
  /** Frames decoded from the agent (all commands). */
  framesIn: number;
  /** Frames serialised into pulled bytes (a frame split across pulls counts once). */
  framesOut: number;
  /** smux bytes passed to `receive()`. */
  bytesIn: number;
  /** smux bytes returned by `pullOutgoing()`. */
  bytesOut: number;
  /** Streams opened with `openStream()`. */
  streamsOpened: number;
  /** Streams forgotten (finished both ways, destroyed, or reset with the session). */
  streamsClosed: number;
  /**
   * Frames ignored: PSH or FIN for an unknown or forgotten stream, PSH after the agent's FIN, and SYN from the
   * agent (the client opens every stream in this protocol).
   */
  unknownStreamFrames: number;
  /** Received bytes held in memory for local readers (Readable buffers, queues, spill write-behind), bytes. */
  receiveBufferedBytes: number;
  /** Received bytes held in spill files for local readers, bytes. */
  receiveSpilledBytes: number;
  /** Spill files open for this session's streams. */
  spillFilesOpen: number;
  /** Streams reset because their reader left more than the bound waiting, or spilling failed. */
  backlogResets: number;
  /** Bytes queued in the session and not yet pulled: data, control frames and the rest of a split frame. */
  outgoingBufferedBytes: number;
}

/** Events of {@link SmuxClientSession}. */
export interface SmuxSessionEvents {
  /**
   * Data became available to pull after `hasOutgoing` was false. Coalesced to at most one per microtask
   * turn; not repeated while `hasOutgoing` stays true, so the puller keeps pulling until it is false.
   */
  outgoing: [];
  /** The agent broke the smux wire format; the session is destroyed and `'close'` follows. */
  error: [error: Error];
  /** The session was destroyed; emitted once, on the tick after `destroy()`. */
  close: [];
  /** A stream was forgotten by the session (argument: its id). */
  streamClosed: [id: number];
}

/** Dependencies of a session (see docs/architecture.md, Conventions). */
export interface SmuxSessionDeps {
  /** Logger scoped to this session, e.g. `mux`. */
  logger: Logger;
  /** Daemon-wide spill store for slow readers; undefined = memory only (a stream is reset when it is full). */
  spill?: SpillStore | undefined;
}

/** First client stream id: the counter starts at 1 and is incremented by 2 before use (spec §9.4). */
const SMUX_FIRST_STREAM_ID = 3;
/** Largest stream id the u32 sid field holds (protocol). */
const SMUX_MAX_STREAM_ID = 0xffffffff;

/** What the session knows about one open stream. */
interface StreamEntry {
  readonly id: number;
  readonly stream: SmuxStream;
  /** The stream's send side, in the scheduler's queue. */
  readonly send: OutgoingStream;
  /** FIN received from the agent. */
  remoteFin: boolean;
  /** Removed from the session map; frames for it are dropped. */
  forgotten: boolean;
  /** Bytes received and not yet taken by the local reader. */
  readonly queue: StreamReceiveQueue;
  /** The stream's share of the session's send budget. */
  readonly budget: BudgetMember;
}

/**
 * Client side of an smux v1 session (spec §9.4): the client opens every stream (ids 3, 5, 7, …), sends SYN then
 * data without waiting, and reads frames from the agent's smux server. See the module comment for buffers and
 * choices.
 */
export class SmuxClientSession extends EventEmitter<SmuxSessionEvents> {
  private readonly options: Readonly<SmuxSessionOptions>;
  private readonly logger: Logger;
  private readonly decoder = new SmuxFrameDecoder();
  private readonly streams = new Map<number, StreamEntry>();
  /** The frames to send and their order (`src/mux/scheduler.ts`). */
  private readonly scheduler: SmuxSendScheduler;
  /** Memory queued by every stream's receive queue, against `sessionReceiveBufferBytes`. */
  private readonly receiveMemory: ReceiveMemory;
  /** Bytes the streams' sources may have read and not yet seen pulled (`src/mux/send-budget.ts`). */
  private readonly sendBudget: SendBudget;
  private readonly spill: SpillStore | undefined;
  private lastStreamId = SMUX_FIRST_STREAM_ID - 2;
  private isDestroyed = false;
  private outgoingScheduled = false;
  private dispatching = false;
  private readonly pendingChunks: Buffer[] = [];
  private readonly counters = {
    framesIn: 0,
    bytesIn: 0,
    streamsOpened: 0,
    streamsClosed: 0,
    unknownStreamFrames: 0,
    backlogResets: 0,
  };

  /** @throws ConfigError `PF_ERR_CONFIG` if an option is not a positive integer or the frame size exceeds 65535. */
  constructor(options: SmuxSessionOptions, deps: SmuxSessionDeps) {
    super();
    for (const key of [
      'streamReceiveBufferBytes',
      'sessionReceiveBufferBytes',
      'streamBacklogLimitBytes',
      'streamWriteBufferBytes',
      'maxFrameDataBytes',
      'sendBudgetBytes',
    ] as const) {
      const value = options[key];
      if (!Number.isSafeInteger(value) || value < 1) {
        throw new ConfigError('PF_ERR_CONFIG', `smux ${key} must be a positive integer, got ${value}`);
      }
    }
    if (options.maxFrameDataBytes > SMUX_FRAME_DATA_LIMIT_BYTES) {
      throw new ConfigError(
        'PF_ERR_CONFIG',
        `smux maxFrameDataBytes must be at most ${SMUX_FRAME_DATA_LIMIT_BYTES}, got ${options.maxFrameDataBytes}`,
      );
    }
    if (options.sendBudgetBytes < SEND_READ_RESERVE_BYTES) {
      throw new ConfigError(
        'PF_ERR_CONFIG',
        `smux sendBudgetBytes must be at least ${SEND_READ_RESERVE_BYTES} (one socket read), got ${options.sendBudgetBytes}`,
      );
    }
    this.options = Object.freeze({ ...options });
    this.sendBudget = new SendBudget({
      limitBytes: options.sendBudgetBytes,
      readReserveBytes: SEND_READ_RESERVE_BYTES,
      afterPoll,
    });
    this.logger = deps.logger;
    this.spill = deps.spill;
    this.receiveMemory = { bytes: 0, limitBytes: options.sessionReceiveBufferBytes };
    this.scheduler = new SmuxSendScheduler({
      maxFrameDataBytes: options.maxFrameDataBytes,
      onReady: () => this.scheduleOutgoing(),
    });
  }

  /** True once the session was destroyed (explicitly or by a protocol error). */
  get destroyed(): boolean {
    return this.isDestroyed;
  }

  /** Streams the session still tracks (not yet finished both ways nor destroyed). */
  get streamCount(): number {
    return this.streams.size;
  }

  /** True while `pullOutgoing()` would return bytes. */
  get hasOutgoing(): boolean {
    return !this.isDestroyed && this.scheduler.hasOutgoing;
  }

  /** A snapshot of the session's counters (walks the streams for the receive figures). */
  get stats(): SmuxSessionStats {
    let memory = 0;
    let spilled = 0;
    let files = 0;
    for (const entry of this.streams.values()) {
      const queue = entry.queue.stats;
      memory += entry.stream.readableLength + queue.memoryBytes;
      spilled += queue.spilledBytes;
      files += queue.spillFilesOpen;
    }
    return {
      ...this.counters,
      ...this.sendBudget.stats,
      framesOut: this.scheduler.framesOut,
      bytesOut: this.scheduler.bytesOut,
      receiveBufferedBytes: memory,
      receiveSpilledBytes: spilled,
      spillFilesOpen: files,
      outgoingBufferedBytes: this.scheduler.queuedBytes,
    };
  }

  /**
   * Open a new stream: ids are odd, starting at 3 (3,5,7,…), never reused; queues SYN.
   * @throws TunnelError `PF_ERR_STREAM_RESET` if the session is destroyed or stream ids are exhausted.
   */
  openStream(): SmuxStream {
    if (this.isDestroyed) throw new TunnelError('PF_ERR_STREAM_RESET', 'smux session is destroyed');
    if (this.lastStreamId + 2 > SMUX_MAX_STREAM_ID) {
      throw new TunnelError('PF_ERR_STREAM_RESET', 'smux stream ids are exhausted for this session');
    }
    this.lastStreamId += 2;
    const id = this.lastStreamId;
    // The hooks run only after construction, so they may refer to `entry` declared below.
    const hooks: SmuxStreamHooks = {
      write: (chunks, callback) => this.queueWrite(entry, chunks, callback),
      end: (callback) => this.queueFin(entry, callback),
      read: () => this.onStreamRead(entry),
      destroy: (error) => this.onStreamDestroy(entry, error),
      wrote: (bytes) => this.sendBudget.wrote(entry.budget, bytes),
      held: () => entry.budget.held,
    };
    const stream = new SmuxStream(
      id,
      {
        readableHighWaterMark: STREAM_READABLE_HIGH_WATER_BYTES,
        writableHighWaterMark: this.options.streamWriteBufferBytes,
      },
      hooks,
    );
    const queue = new StreamReceiveQueue(
      {
        memoryBytes: this.options.streamReceiveBufferBytes,
        backlogLimitBytes: this.options.streamBacklogLimitBytes,
      },
      {
        memory: this.receiveMemory,
        spill: this.spill,
        push: (chunk) => stream.push(chunk),
        readableBytes: () => stream.readableLength,
        end: () => stream.handleRemoteFin(),
        fail: (error) => this.onBacklogFailure(entry, error),
      },
    );
    const entry: StreamEntry = {
      id,
      stream,
      send: this.scheduler.open(id),
      remoteFin: false,
      forgotten: false,
      queue,
      // A stream that must wait starts held: writableNeedDrain is true, so pipe() leaves its source paused.
      budget: this.sendBudget.join(() => stream.release()),
    };
    this.streams.set(id, entry);
    this.counters.streamsOpened++;
    if (this.logger.debugEnabled) this.logger.debug('stream opened', { sid: id });
    return stream;
  }

  /**
   * True while stream `id`'s SYN waits in the send queue, not yet pulled; false once pulled and for an id
   * the session does not track (never opened, or forgotten). Lets the puller tell which pull carried it.
   */
  synQueued(id: number): boolean {
    return this.streams.get(id)?.send.synPending === true;
  }

  /** Queue a NOP (keep-alive, sid 0). At most one is pending; ignored once destroyed. */
  sendNop(): void {
    if (this.isDestroyed) return;
    this.scheduler.queueNop();
  }

  /**
   * Up to `maxBytes` of the outgoing smux byte stream, serving streams round-robin one frame at a time;
   * undefined when nothing is pending, when `maxBytes` < 1 or once destroyed. The byte stream is continuous
   * across pulls; per stream the order SYN → PSH… → FIN is kept. Write callbacks of batches whose last byte is
   * in the result run before this returns. Allocates one buffer per call.
   */
  pullOutgoing(maxBytes: number): Buffer | undefined {
    if (!this.hasOutgoing || !(maxBytes >= 1)) return undefined;
    const size = Math.min(Math.floor(maxBytes), this.scheduler.pullBoundBytes);
    const out = Buffer.allocUnsafe(size);
    const pos = this.fill(out, 0, size);
    return pos === size ? out : out.subarray(0, pos);
  }

  /**
   * Like {@link pullOutgoing}, but writes the bytes straight into `target` at `offset` (at most `maxBytes`, and
   * never past the end of `target`) and returns how many it wrote: 0 when nothing is pending, when there is no
   * room or once destroyed. Lets the data-channel pump fill an Output frame in place, without an intermediate
   * buffer (issue 7). Produces exactly the bytes `pullOutgoing(maxBytes)` would.
   */
  pullOutgoingInto(target: Buffer, offset: number, maxBytes: number): number {
    const room = Math.min(Math.floor(maxBytes), target.length - offset);
    if (!this.hasOutgoing || !(room >= 1) || !(offset >= 0)) return 0;
    // No need to bound the region by what is queued: the scheduler stops when it runs out of frames, and a
    // frame is only split when it does not fit the room, exactly as in pullOutgoing's smaller buffer.
    return this.fill(target, offset, offset + room) - offset;
  }

  /** Serialise pending frames into `out[start, end)`; returns the end position. Runs completed callbacks. */
  private fill(out: Buffer, start: number, end: number): number {
    const completed: SmuxWriteCallback[] = [];
    const pos = this.scheduler.fill(out, start, end, completed);
    this.runCallbacks(completed);
    return pos;
  }

  /**
   * Feed smux bytes received from the agent, in order. A protocol error (bad version/cmd) destroys the
   * session: every stream reset, `'error'` emitted with the ProtocolError, then `'close'`. Ignored once
   * destroyed. Never throws; an exception from a stream's `'data'` listener destroys only that stream.
   */
  receive(chunk: Buffer): void {
    if (this.isDestroyed) return;
    if (this.dispatching) {
      // Re-entered from a listener (e.g. a reader resumed by a pushed chunk fed the pump): keep byte order.
      this.pendingChunks.push(chunk);
      return;
    }
    this.dispatching = true;
    try {
      let next: Buffer | undefined = chunk;
      while (next !== undefined && !this.isDestroyed) {
        this.receiveChunk(next);
        next = this.pendingChunks.shift();
      }
    } finally {
      this.dispatching = false;
      this.pendingChunks.length = 0;
    }
  }

  /**
   * Reset every stream with TunnelError('PF_ERR_STREAM_RESET') (or the given error) and refuse further use;
   * emits `'close'` once, on the next tick. Idempotent. Unlike a protocol error found by `receive()`, an
   * explicit destroy does not emit `'error'`: the caller already knows why.
   */
  destroy(err?: Error): void {
    this.shutdown(err ?? new TunnelError('PF_ERR_STREAM_RESET', 'smux session destroyed'), undefined);
  }

  private shutdown(streamError: Error, sessionError: Error | undefined): void {
    if (this.isDestroyed) return;
    this.isDestroyed = true;
    this.scheduler.clear();
    for (const entry of [...this.streams.values()]) {
      entry.stream.destroy(streamError);
      // _destroy() forgets the stream synchronously; this covers a stream Node had already marked destroyed.
      this.forget(entry);
    }
    this.logger.debug('smux session destroyed', { reason: streamError.message });
    process.nextTick(() => {
      if (sessionError && this.listenerCount('error') > 0) this.emit('error', sessionError);
      this.emit('close');
    });
  }

  // ---- receive path ----

  private receiveChunk(chunk: Buffer): void {
    this.counters.bytesIn += chunk.length;
    let frames: SmuxFrame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      const error =
        err instanceof ProtocolError
          ? err
          : new ProtocolError('PF_ERR_SMUX_FRAME', 'smux decoder failed', { cause: err });
      this.logger.warn('smux protocol error; session destroyed', { error: error.message, code: error.code });
      this.shutdown(
        new TunnelError('PF_ERR_STREAM_RESET', `smux session failed: ${error.message}`, { cause: error }),
        error,
      );
      return;
    }
    for (const frame of frames) {
      this.counters.framesIn++;
      this.handleFrame(frame);
      if (this.isDestroyed) return;
    }
  }

  /** Dispatch one frame from the agent; may push to, end or destroy a stream. */
  private handleFrame(frame: SmuxFrame): void {
    switch (frame.cmd) {
      case SmuxCommand.NOP:
        return;
      case SmuxCommand.SYN:
        // The client opens every stream here (spec §9.4); a server-opened stream is not supported.
        this.ignoreFrame(frame);
        return;
      case SmuxCommand.PSH: {
        const entry = this.streams.get(frame.sid);
        if (entry === undefined || entry.remoteFin) {
          this.ignoreFrame(frame);
          return;
        }
        if (frame.data.length === 0) return;
        try {
          entry.queue.append(frame.data);
        } catch (err) {
          this.listenerThrew(entry, err);
        }
        return;
      }
      case SmuxCommand.FIN: {
        const entry = this.streams.get(frame.sid);
        if (entry === undefined || entry.remoteFin) {
          this.ignoreFrame(frame);
          return;
        }
        this.onRemoteFin(entry);
        return;
      }
    }
  }

  private ignoreFrame(frame: SmuxFrame): void {
    this.counters.unknownStreamFrames++;
    if (this.logger.debugEnabled) this.logger.debug('smux frame ignored', { frame: describeFrame(frame) });
  }

  /**
   * A stream listener threw inside `push()`: reset that stream only (docs/architecture.md, Conventions: fatal
   * and local failures).
   */
  private listenerThrew(entry: StreamEntry, err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    this.logger.warn('stream listener threw; stream destroyed', { sid: entry.id, error: error.message });
    entry.stream.destroy(error);
  }

  /**
   * FIN from the agent: the destination is closed for good (no half-close in v1). Drops whatever of ours is
   * not on the wire yet (a pending FIN of ours included, see the module comment), then ends the Readable side.
   */
  private onRemoteFin(entry: StreamEntry): void {
    entry.remoteFin = true;
    const callbacks = this.scheduler.drop(entry.send);
    if (this.logger.debugEnabled) this.logger.debug('stream FIN from agent', { sid: entry.id });
    try {
      // Ends the reader after every byte queued before the FIN (memory and spill) has been handed over.
      entry.queue.end();
    } catch (err) {
      this.listenerThrew(entry, err);
    }
    this.runCallbacks(callbacks);
  }

  /** `_read()`: the local reader made room; hand it what its queue holds. */
  private onStreamRead(entry: StreamEntry): void {
    if (entry.forgotten) return;
    entry.queue.resume();
  }

  /**
   * A stream's queue cannot keep its bytes (bound passed, spill limit spent or a spill file failed): reset that
   * stream alone; its FIN tells the agent to close the destination. The forward logs the warn line, since it
   * knows which local connection this is.
   */
  private onBacklogFailure(entry: StreamEntry, error: TunnelError): void {
    if (entry.forgotten) return;
    this.counters.backlogResets++;
    this.logger.debug('stream reset: receive backlog', { sid: entry.id, reason: error.message });
    entry.stream.destroy(error);
  }

  // ---- send path ----

  private queueWrite(entry: StreamEntry, chunks: Buffer[], written: SmuxWriteCallback): void {
    let bytes = 0;
    for (const chunk of chunks) bytes += chunk.length;
    // The batch's bytes leave the send budget when its callback runs: pulled, discarded or failed.
    const callback: SmuxWriteCallback = (error) => {
      this.sendBudget.done(entry.budget, bytes);
      written(error);
    };
    if (this.isDestroyed || entry.forgotten) {
      callback(new TunnelError('PF_ERR_STREAM_RESET', `smux stream ${entry.id} is closed`));
      return;
    }
    if (entry.remoteFin) {
      callback();
      return;
    }
    this.scheduler.queueWrite(entry.send, chunks, callback);
  }

  private queueFin(entry: StreamEntry, callback: SmuxWriteCallback): void {
    if (this.isDestroyed || entry.forgotten) {
      callback(new TunnelError('PF_ERR_STREAM_RESET', `smux stream ${entry.id} is closed`));
      return;
    }
    if (entry.remoteFin || entry.send.fin !== FinState.None) {
      callback();
      return;
    }
    this.scheduler.queueFin(entry.send, callback);
  }

  /**
   * `_destroy()`: drop the stream's unsent data and forget it. If the agent knows the stream (SYN pulled) and
   * neither side has sent FIN, queue FIN; if SYN was never pulled, nothing about the stream is sent at all.
   */
  private onStreamDestroy(entry: StreamEntry, error: Error | null): void {
    if (entry.forgotten) return;
    // drop() marks a stream whose SYN never left as FIN-sent, so the agent hears nothing about it at all.
    const callbacks = this.scheduler.drop(entry.send);
    if (!this.isDestroyed && !entry.remoteFin && entry.send.fin === FinState.None) {
      this.scheduler.queueFin(entry.send);
    }
    this.forget(entry);
    entry.queue.destroy();
    if (callbacks.length > 0) {
      // Node fails the writes still buffered behind this one with the same error; the data never left.
      const reason =
        error ??
        new TunnelError('PF_ERR_STREAM_RESET', `smux stream ${entry.id} destroyed before its data was sent`);
      process.nextTick(() => {
        for (const callback of callbacks) callback(reason);
      });
    }
  }

  private forget(entry: StreamEntry): void {
    if (entry.forgotten) return;
    entry.forgotten = true;
    this.streams.delete(entry.id);
    entry.queue.destroy();
    this.sendBudget.leave(entry.budget);
    this.counters.streamsClosed++;
    if (this.logger.debugEnabled) this.logger.debug('stream forgotten', { sid: entry.id });
    this.emit('streamClosed', entry.id);
  }

  private scheduleOutgoing(): void {
    if (this.outgoingScheduled) return;
    this.outgoingScheduled = true;
    queueMicrotask(() => {
      this.outgoingScheduled = false;
      if (this.hasOutgoing) this.emit('outgoing');
    });
  }

  /** Run completion callbacks; one that throws must not strand the others or lose a pulled buffer. */
  private runCallbacks(callbacks: SmuxWriteCallback[]): void {
    for (const callback of callbacks) {
      try {
        callback();
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
