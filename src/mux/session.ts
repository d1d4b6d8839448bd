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
 * - PSH frames are cut when pulled, never longer than `maxFrameDataBytes` nor than the space left in the pull,
 *   so each pull normally holds whole frames and streams alternate frame by frame (round-robin) even inside
 *   one 1 KiB data-channel payload. Only when the next frame cannot fit and nothing was written yet (a pull
 *   smaller than a header) is a frame split across pulls; a pull may therefore come back a few bytes short of
 *   `maxBytes` rather than end in a header fragment.
 * - FIN after the agent's FIN is skipped: the agent forgets a stream when it sends FIN, so ours would only be
 *   dropped as unknown. A FIN already (partly) pulled is of course completed.
 * - Data written after the agent's FIN is discarded with a successful callback (like writing into a TCP
 *   connection the peer has closed): failing the write would destroy the stream and lose received bytes the
 *   local reader has not consumed yet.
 */
import { EventEmitter } from 'node:events';
import { ConfigError, ProtocolError, TunnelError } from '../errors.js';
import {
  SMUX_HEADER_BYTES,
  SMUX_FRAME_DATA_LIMIT_BYTES,
  SmuxCommand,
  SmuxFrameDecoder,
  describeFrame,
  writeFrameHeader,
} from './frame.js';
import { STREAM_READABLE_HIGH_WATER_BYTES } from './defaults.js';
import { StreamReceiveQueue } from './receive-queue.js';
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
   * Max PSH data bytes per frame when serialising (≤ `SMUX_FRAME_DATA_LIMIT_BYTES`; default
   * `SMUX_WRITE_FRAME_DATA_BYTES`, `src/mux/defaults.ts`).
   */
  maxFrameDataBytes: number;
}

/** Counters of one session, for metrics and tests. All counts are since the session was created. */
export interface SmuxSessionStats {
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

/** Outgoing state of a FIN frame for one stream. */
enum FinState {
  /** Not requested. */
  None,
  /** Requested (local `end()` or destroy) and not yet pulled. */
  Queued,
  /** At least its first byte was pulled. */
  Sent,
}

/** What the session knows about one open stream. */
interface StreamEntry {
  readonly id: number;
  readonly stream: SmuxStream;
  /** SYN not yet pulled; once false the agent knows (or will know) the stream. */
  synPending: boolean;
  /** In-flight write batch of the stream, not yet fully cut into frames. */
  batch: Buffer[] | undefined;
  /** Index in `batch` of the next chunk to cut. */
  batchIndex: number;
  /** Bytes of `batch[batchIndex]` already cut into frames. */
  batchOffset: number;
  /** Bytes of `batch` not yet cut into frames. */
  batchRemaining: number;
  /** Write callback of `batch`, or of the batch whose last frame is still being split across pulls. */
  writeCallback: SmuxWriteCallback | undefined;
  fin: FinState;
  /** `_final` callback waiting for FIN to be pulled. */
  finCallback: SmuxWriteCallback | undefined;
  /** FIN received from the agent. */
  remoteFin: boolean;
  /** Removed from the session map; frames for it are dropped. */
  forgotten: boolean;
  /** Bytes received and not yet taken by the local reader. */
  readonly queue: StreamReceiveQueue;
}

/** A frame cut across pulls: its serialised bytes and what completes when the last byte leaves. */
interface SplitFrame {
  readonly bytes: Buffer;
  offset: number;
  readonly entry: StreamEntry | undefined;
  readonly completes: 'write' | 'fin' | undefined;
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
  /** Streams with frames to send, in round-robin order (Set keeps insertion order; re-adding moves to the tail). */
  private readonly ready = new Set<StreamEntry>();
  /** Memory queued by every stream's receive queue, against `sessionReceiveBufferBytes`. */
  private readonly receiveMemory: ReceiveMemory;
  private readonly spill: SpillStore | undefined;
  private lastStreamId = SMUX_FIRST_STREAM_ID - 2;
  private isDestroyed = false;
  private split: SplitFrame | undefined;
  /** Queued NOPs; bounded at 1, since one keep-alive pending is as good as many. */
  private nopPending = false;
  /** Data bytes of in-flight batches not yet cut into frames. */
  private outgoingDataBytes = 0;
  /** In-flight batches with bytes not yet cut into frames. */
  private outgoingBatches = 0;
  /** SYN and FIN frames queued (NOP counted separately). */
  private outgoingControlFrames = 0;
  private outgoingScheduled = false;
  private dispatching = false;
  private readonly pendingChunks: Buffer[] = [];
  private readonly counters = {
    framesIn: 0,
    framesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
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
    this.options = Object.freeze({ ...options });
    this.logger = deps.logger;
    this.spill = deps.spill;
    this.receiveMemory = { bytes: 0, limitBytes: options.sessionReceiveBufferBytes };
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
    return !this.isDestroyed && (this.split !== undefined || this.nopPending || this.ready.size > 0);
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
      receiveBufferedBytes: memory,
      receiveSpilledBytes: spilled,
      spillFilesOpen: files,
      outgoingBufferedBytes:
        (this.split ? this.split.bytes.length - this.split.offset : 0) +
        this.outgoingDataBytes +
        SMUX_HEADER_BYTES * (this.outgoingControlFrames + (this.nopPending ? 1 : 0)),
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
      synPending: true,
      batch: undefined,
      batchIndex: 0,
      batchOffset: 0,
      batchRemaining: 0,
      writeCallback: undefined,
      fin: FinState.None,
      finCallback: undefined,
      remoteFin: false,
      forgotten: false,
      queue,
    };
    this.streams.set(id, entry);
    this.counters.streamsOpened++;
    this.outgoingControlFrames++;
    this.markReady(entry);
    if (this.logger.debugEnabled) this.logger.debug('stream opened', { sid: id });
    return stream;
  }

  /** Queue a NOP (keep-alive, sid 0). At most one is pending; ignored once destroyed. */
  sendNop(): void {
    if (this.isDestroyed || this.nopPending) return;
    const had = this.hasOutgoing;
    this.nopPending = true;
    if (!had) this.scheduleOutgoing();
  }

  /**
   * Up to `maxBytes` of the outgoing smux byte stream, serving streams round-robin one frame at a time;
   * undefined when nothing is pending, when `maxBytes` < 1 or once destroyed. The byte stream is continuous
   * across pulls; per stream the order SYN → PSH… → FIN is kept. Write callbacks of batches whose last byte is
   * in the result run before this returns. Allocates one buffer per call.
   */
  pullOutgoing(maxBytes: number): Buffer | undefined {
    if (!this.hasOutgoing || !(maxBytes >= 1)) return undefined;
    const size = Math.min(Math.floor(maxBytes), this.outgoingUpperBoundBytes());
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
    const size = Math.min(room, this.outgoingUpperBoundBytes());
    return this.fill(target, offset, offset + size) - offset;
  }

  /** Serialise pending frames into `out[start, end)`; returns the end position. Runs completed callbacks. */
  private fill(out: Buffer, start: number, end: number): number {
    const completed: SmuxWriteCallback[] = [];
    let pos = start;
    if (this.split) pos = this.continueSplit(out, start, end, completed);
    while (pos < end) {
      let next: number;
      if (this.nopPending) {
        next = this.emitFrame(out, start, end, pos, SmuxCommand.NOP, 0, undefined, 0, completed, undefined);
        if (next !== pos) this.nopPending = false;
      } else {
        const entry = this.firstReady();
        if (entry === undefined) break;
        next = this.emitFromStream(entry, out, start, end, pos, completed);
        if (next !== pos) {
          // Round-robin: one frame per turn, then to the back of the line if it has more.
          this.ready.delete(entry);
          if (this.hasPendingFrames(entry)) this.ready.add(entry);
        }
      }
      if (next === pos) break;
      pos = next;
    }
    this.counters.bytesOut += pos - start;
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
    this.ready.clear();
    this.split = undefined;
    this.nopPending = false;
    this.outgoingDataBytes = 0;
    this.outgoingBatches = 0;
    this.outgoingControlFrames = 0;
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
    const callbacks = this.dropPending(entry);
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

  private queueWrite(entry: StreamEntry, chunks: Buffer[], callback: SmuxWriteCallback): void {
    if (this.isDestroyed || entry.forgotten) {
      callback(new TunnelError('PF_ERR_STREAM_RESET', `smux stream ${entry.id} is closed`));
      return;
    }
    if (entry.remoteFin) {
      callback();
      return;
    }
    let bytes = 0;
    for (const chunk of chunks) bytes += chunk.length;
    entry.batch = chunks;
    entry.batchIndex = 0;
    entry.batchOffset = 0;
    entry.batchRemaining = bytes;
    entry.writeCallback = callback;
    this.outgoingDataBytes += bytes;
    this.outgoingBatches++;
    this.markReady(entry);
  }

  private queueFin(entry: StreamEntry, callback: SmuxWriteCallback): void {
    if (this.isDestroyed || entry.forgotten) {
      callback(new TunnelError('PF_ERR_STREAM_RESET', `smux stream ${entry.id} is closed`));
      return;
    }
    if (entry.remoteFin || entry.fin !== FinState.None) {
      callback();
      return;
    }
    entry.fin = FinState.Queued;
    entry.finCallback = callback;
    this.outgoingControlFrames++;
    this.markReady(entry);
  }

  /**
   * `_destroy()`: drop the stream's unsent data and forget it. If the agent knows the stream (SYN pulled) and
   * neither side has sent FIN, queue FIN; if SYN was never pulled, nothing about the stream is sent at all.
   */
  private onStreamDestroy(entry: StreamEntry, error: Error | null): void {
    if (entry.forgotten) return;
    const callbacks = this.dropPending(entry);
    if (!this.isDestroyed && !entry.synPending && !entry.remoteFin && entry.fin === FinState.None) {
      entry.fin = FinState.Queued;
      this.outgoingControlFrames++;
      this.markReady(entry);
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

  /**
   * Remove all not-yet-started output of a stream (SYN if still pending, data, FIN); a frame already split
   * across pulls is finished regardless. Returns the callbacks of what was dropped, for the caller to run.
   */
  private dropPending(entry: StreamEntry): SmuxWriteCallback[] {
    const callbacks: SmuxWriteCallback[] = [];
    const counted = !this.isDestroyed;
    const neverAnnounced = entry.synPending;
    if (entry.synPending) {
      entry.synPending = false;
      if (counted) this.outgoingControlFrames--;
    }
    if (entry.batch !== undefined) {
      if (counted) {
        this.outgoingDataBytes -= entry.batchRemaining;
        this.outgoingBatches--;
      }
      this.clearBatch(entry);
    }
    const splitting = this.split?.entry === entry;
    if (entry.writeCallback !== undefined && !splitting) {
      callbacks.push(entry.writeCallback);
      entry.writeCallback = undefined;
    }
    if (entry.fin === FinState.Queued) {
      if (counted) this.outgoingControlFrames--;
      entry.fin = FinState.None;
    }
    if (entry.finCallback !== undefined && !splitting) {
      callbacks.push(entry.finCallback);
      entry.finCallback = undefined;
    }
    // The agent never heard of this stream, so it must not hear a FIN for it either.
    if (neverAnnounced) entry.fin = FinState.Sent;
    this.ready.delete(entry);
    return callbacks;
  }

  private clearBatch(entry: StreamEntry): void {
    entry.batch = undefined;
    entry.batchIndex = 0;
    entry.batchOffset = 0;
    entry.batchRemaining = 0;
  }

  private forget(entry: StreamEntry): void {
    if (entry.forgotten) return;
    entry.forgotten = true;
    this.streams.delete(entry.id);
    entry.queue.destroy();
    this.counters.streamsClosed++;
    if (this.logger.debugEnabled) this.logger.debug('stream forgotten', { sid: entry.id });
    this.emit('streamClosed', entry.id);
  }

  private markReady(entry: StreamEntry): void {
    if (this.ready.has(entry)) return;
    const had = this.hasOutgoing;
    this.ready.add(entry);
    if (!had) this.scheduleOutgoing();
  }

  private scheduleOutgoing(): void {
    if (this.outgoingScheduled) return;
    this.outgoingScheduled = true;
    queueMicrotask(() => {
      this.outgoingScheduled = false;
      if (this.hasOutgoing) this.emit('outgoing');
    });
  }

  private firstReady(): StreamEntry | undefined {
    for (const entry of this.ready) return entry;
    return undefined;
  }

  private hasPendingFrames(entry: StreamEntry): boolean {
    return entry.synPending || entry.batch !== undefined || entry.fin === FinState.Queued;
  }

  /**
   * Bytes the next pull can produce at most: everything queued plus one header per frame it may cut (one per
   * batch end, one per full-size frame, one for the frame that fills the pull).
   */
  private outgoingUpperBoundBytes(): number {
    const frames =
      this.outgoingControlFrames +
      (this.nopPending ? 1 : 0) +
      this.outgoingBatches +
      Math.floor(this.outgoingDataBytes / this.options.maxFrameDataBytes) +
      1;
    const splitBytes = this.split ? this.split.bytes.length - this.split.offset : 0;
    return splitBytes + this.outgoingDataBytes + SMUX_HEADER_BYTES * frames;
  }

  private continueSplit(out: Buffer, start: number, end: number, completed: SmuxWriteCallback[]): number {
    const split = this.split as SplitFrame;
    const n = split.bytes.copy(
      out,
      start,
      split.offset,
      Math.min(split.bytes.length, split.offset + (end - start)),
    );
    split.offset += n;
    if (split.offset === split.bytes.length) {
      this.split = undefined;
      if (split.entry !== undefined) this.completeFrame(split.entry, split.completes, completed);
    }
    return start + n;
  }

  /** Emit the next frame of one stream at `pos` (pull region `[start, end)`); returns `pos` if it does not fit. */
  private emitFromStream(
    entry: StreamEntry,
    out: Buffer,
    start: number,
    end: number,
    pos: number,
    completed: SmuxWriteCallback[],
  ): number {
    if (entry.synPending) {
      const next = this.emitFrame(
        out,
        start,
        end,
        pos,
        SmuxCommand.SYN,
        entry.id,
        undefined,
        0,
        completed,
        undefined,
      );
      if (next !== pos) {
        entry.synPending = false;
        this.outgoingControlFrames--;
      }
      return next;
    }
    if (entry.batch !== undefined) {
      const space = end - pos;
      let length = Math.min(entry.batchRemaining, this.options.maxFrameDataBytes);
      if (space > SMUX_HEADER_BYTES) length = Math.min(length, space - SMUX_HEADER_BYTES);
      else if (pos > start) return pos;
      const last = length === entry.batchRemaining;
      const next = this.emitFrame(
        out,
        start,
        end,
        pos,
        SmuxCommand.PSH,
        entry.id,
        entry,
        length,
        completed,
        last ? entry : undefined,
      );
      if (next === pos) return pos;
      this.outgoingDataBytes -= length;
      if (last) {
        this.clearBatch(entry);
        this.outgoingBatches--;
      }
      return next;
    }
    if (entry.fin === FinState.Queued) {
      const next = this.emitFrame(
        out,
        start,
        end,
        pos,
        SmuxCommand.FIN,
        entry.id,
        undefined,
        0,
        completed,
        entry,
      );
      if (next !== pos) this.outgoingControlFrames--;
      return next;
    }
    return pos;
  }

  /**
   * Serialise one frame at `pos`, taking `dataLength` data bytes from `source`'s batch. If the frame does not
   * fit and something was already written, return `pos`; if nothing was written, split it across pulls.
   * `completes` is the stream whose write (PSH) or FIN callback fires when the frame's last byte is pulled.
   */
  private emitFrame(
    out: Buffer,
    start: number,
    end: number,
    pos: number,
    cmd: SmuxCommand,
    sid: number,
    source: StreamEntry | undefined,
    dataLength: number,
    completed: SmuxWriteCallback[],
    completes: StreamEntry | undefined,
  ): number {
    const frameBytes = SMUX_HEADER_BYTES + dataLength;
    const space = end - pos;
    if (frameBytes > space && pos > start) return pos;
    const kind = completes === undefined ? undefined : cmd === SmuxCommand.FIN ? 'fin' : 'write';
    if (kind === 'fin') (completes as StreamEntry).fin = FinState.Sent;
    this.counters.framesOut++;
    if (frameBytes <= space) {
      writeFrameHeader(out, pos, cmd, sid, dataLength);
      if (source !== undefined) this.copyBatch(source, out, pos + SMUX_HEADER_BYTES, dataLength);
      if (completes !== undefined) this.completeFrame(completes, kind, completed);
      return pos + frameBytes;
    }
    const bytes = Buffer.allocUnsafe(frameBytes);
    writeFrameHeader(bytes, 0, cmd, sid, dataLength);
    if (source !== undefined) this.copyBatch(source, bytes, SMUX_HEADER_BYTES, dataLength);
    bytes.copy(out, pos, 0, space);
    this.split = { bytes, offset: space, entry: completes, completes: kind };
    return end;
  }

  /** Copy the next `length` bytes of a stream's batch to `target` at `offset`, advancing the batch. */
  private copyBatch(entry: StreamEntry, target: Buffer, offset: number, length: number): void {
    const batch = entry.batch as Buffer[];
    let copied = 0;
    while (copied < length) {
      const chunk = batch[entry.batchIndex] as Buffer;
      const take = Math.min(chunk.length - entry.batchOffset, length - copied);
      chunk.copy(target, offset + copied, entry.batchOffset, entry.batchOffset + take);
      copied += take;
      entry.batchOffset += take;
      if (entry.batchOffset === chunk.length) {
        entry.batchIndex++;
        entry.batchOffset = 0;
      }
    }
    entry.batchRemaining -= length;
  }

  private completeFrame(
    entry: StreamEntry,
    kind: 'write' | 'fin' | undefined,
    completed: SmuxWriteCallback[],
  ): void {
    const callback = kind === 'fin' ? entry.finCallback : kind === 'write' ? entry.writeCallback : undefined;
    if (kind === 'fin') entry.finCallback = undefined;
    else if (kind === 'write') entry.writeCallback = undefined;
    if (callback !== undefined) completed.push(callback);
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
