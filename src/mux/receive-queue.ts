/**
 * What one smux stream holds for a local reader that does not keep up (spec §9.6, issue 10 item 1).
 *
 * The agent has no window and v1 carries none, so the session must accept every byte for every stream at
 * once; refusing would stall every other stream of the session (the next message may belong to any of them).
 * A {@link StreamReceiveQueue} therefore takes each PSH payload immediately and keeps it, in order:
 * 1. in the stream's Readable buffer while `push()` says there is room (the Node stream contract: after
 *    `push()` returns false nothing more is pushed until `_read()`);
 * 2. then in memory, up to `memoryBytes` for this stream and while the session-wide {@link ReceiveMemory}
 *    account is below its limit;
 * 3. then in {@link SpillFile}s of the shared {@link SpillStore}, once memory is full.
 * The queue is a FIFO of segments (memory runs and files), appended at the tail only, so order holds across
 * every transition. While the tail is a file, new bytes go to that file, until the reader has caught up with
 * it (the file is the oldest segment and less than {@link SPILL_READ_BYTES} of it is unread): then they go to
 * memory again, behind it. A file is closed, its space given back, once read to the end.
 * Past `backlogLimitBytes` waiting in total (memory + files), or when the store's daemon-wide limit is spent,
 * or when a spill file fails, the queue calls `fail()` once and the session resets that stream alone.
 *
 * Bounds, each counted (see {@link StreamReceiveQueue.stats}): memory ≤ `memoryBytes` (+ one chunk); bytes
 * waiting ≤ `backlogLimitBytes`; spill writes not yet on disk ≤ {@link SPILL_WRITE_BEHIND_BYTES}; one read
 * of ≤ {@link SPILL_READ_BYTES} in flight.
 */
import { TunnelError } from '../errors.js';
import { SPILL_FILE_ROTATE_BYTES } from './spill.js';
import type { SpillFile, SpillStore } from './spill.js';

/** Bytes read back from a spill file per read, bytes (our default: a few socket writes' worth). */
export const SPILL_READ_BYTES = 256 * 1024;
/**
 * Most bytes handed to spill-file writes and not yet on disk for one stream, bytes (our default). Only a disk
 * slower than the agent (≤ ~1 MiB/s per session with the real agent's pacing) can fill it; then the stream is
 * reset rather than let memory grow without bound.
 */
export const SPILL_WRITE_BEHIND_BYTES = 16 * 1024 * 1024;

/** The session-wide memory account shared by the queues of one session. */
export interface ReceiveMemory {
  /** Bytes queued in memory by every stream of the session (not counting Readable buffers), bytes. */
  bytes: number;
  /** Above this, new bytes of any stream go to spill files instead of memory, bytes. */
  readonly limitBytes: number;
}

/** Bounds of one queue, resolved by the session from its options. */
export interface StreamReceiveLimits {
  /** Bytes this stream may queue in memory before spilling, bytes (`streamReceiveBufferBytes`). */
  memoryBytes: number;
  /** Bytes that may wait in total (Readable buffer + memory + files) before the stream is reset, bytes. */
  backlogLimitBytes: number;
}

/** Narrow functions and shared objects a queue uses (see docs/architecture.md, Conventions). */
export interface StreamReceiveDeps {
  /** Session-wide memory account. */
  memory: ReceiveMemory;
  /** Daemon-wide spill store; undefined = no spilling (the stream is reset when memory is full). */
  spill: SpillStore | undefined;
  /** Hand one chunk to the reader (`Readable.push`); false = stop until {@link StreamReceiveQueue.resume}. */
  push(chunk: Buffer): boolean;
  /** Bytes in the reader's Readable buffer now (`readableLength`). */
  readableBytes(): number;
  /** Every byte was handed over after {@link StreamReceiveQueue.end}: end the reader. */
  end(): void;
  /** The stream cannot keep its bytes (bound passed, store full, file error): reset it. Called at most once. */
  fail(error: TunnelError): void;
}

/** Counters of one queue. */
export interface StreamReceiveStats {
  /** Bytes queued in memory, including spill writes not yet on disk and a read-back chunk, bytes. */
  memoryBytes: number;
  /** Bytes in spill files not read back yet, bytes. */
  spilledBytes: number;
  /** Spill files open. */
  spillFilesOpen: number;
}

/** Render a byte count for log lines: `12.3 MiB`. */
export function describeBytes(bytes: number): string {
  if (bytes >= 1024 * 1024) return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${bytes} B`;
}

/** A run of chunks kept in memory, oldest first, from `head` on (the array is compacted lazily). */
class MemorySegment {
  chunks: Buffer[] = [];
  head = 0;
  bytes = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
  }

  shift(): Buffer | undefined {
    if (this.head >= this.chunks.length) return undefined;
    const chunk = this.chunks[this.head] as Buffer;
    this.chunks[this.head] = EMPTY;
    this.head++;
    if (this.head === this.chunks.length || this.head > 1024) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
    this.bytes -= chunk.length;
    return chunk;
  }
}

type Segment = MemorySegment | SpillFile;

/** The receive side of one stream: see the module comment. */
export class StreamReceiveQueue {
  private readonly limits: StreamReceiveLimits;
  private readonly deps: StreamReceiveDeps;
  /** Memory runs and spill files, oldest first; appends go to the last one (or a new one). */
  private segments: Segment[] = [];
  /** Bytes in memory segments, bytes. */
  private memoryBytes = 0;
  /** Bytes read back from the oldest file, not pushed yet. */
  private readBack: Buffer | undefined;
  /** The reader accepts more: the last `push()` returned true, or `_read()` was called since. */
  private flowing = true;
  private pumping = false;
  private ending = false;
  private ended = false;
  private failed = false;
  private destroyed = false;

  constructor(limits: StreamReceiveLimits, deps: StreamReceiveDeps) {
    this.limits = limits;
    this.deps = deps;
  }

  /** Counters now. */
  get stats(): StreamReceiveStats {
    let spilled = 0;
    let pendingWrites = 0;
    let files = 0;
    for (const segment of this.segments) {
      if (segment instanceof MemorySegment) continue;
      files++;
      spilled += segment.unreadBytes;
      pendingWrites += segment.pendingWriteBytes;
    }
    return {
      memoryBytes: this.memoryBytes + pendingWrites + (this.readBack?.length ?? 0),
      spilledBytes: spilled - pendingWrites,
      spillFilesOpen: files,
    };
  }

  /** Bytes waiting for the reader: Readable buffer, memory, read-back chunk and files, bytes. */
  get waitingBytes(): number {
    let waiting = this.deps.readableBytes() + this.memoryBytes + (this.readBack?.length ?? 0);
    for (const segment of this.segments)
      if (!(segment instanceof MemorySegment)) waiting += segment.unreadBytes;
    return waiting;
  }

  /** Accept the next bytes of the stream (in order). Never refuses: past a bound it calls `fail()`. */
  append(chunk: Buffer): void {
    if (this.destroyed || this.failed || this.ending || chunk.length === 0) return;
    const waiting = this.waitingBytes;
    if (waiting + chunk.length > this.limits.backlogLimitBytes) {
      this.fail(
        `${describeBytes(waiting + chunk.length)} waiting for a local reader that stopped reading, past the ` +
          `per-connection bound of ${describeBytes(this.limits.backlogLimitBytes)} (tuning.streamBacklogLimitBytes)`,
      );
      return;
    }
    const last = this.segments[this.segments.length - 1];
    if (last === undefined && this.flowing && this.readBack === undefined && !this.pumping) {
      this.flowing = this.deps.push(chunk);
      return;
    }
    if (last === undefined || last instanceof MemorySegment || this.caughtUp(last)) {
      const memory = this.deps.memory;
      if (
        this.memoryBytes + chunk.length <= this.limits.memoryBytes &&
        memory.bytes + chunk.length <= memory.limitBytes
      ) {
        let segment = last;
        if (!(segment instanceof MemorySegment)) {
          segment = new MemorySegment();
          this.segments.push(segment);
        }
        segment.push(chunk);
        this.memoryBytes += chunk.length;
        memory.bytes += chunk.length;
        return;
      }
    }
    this.spill(chunk, waiting, last);
  }

  /** The agent sent FIN: end the reader once every queued byte has been handed over. */
  end(): void {
    if (this.destroyed || this.ending) return;
    this.ending = true;
    this.pump();
  }

  /** The reader wants more (`_read()`). */
  resume(): void {
    this.flowing = true;
    this.pump();
  }

  /** Drop everything and close the files (stream destroyed). Idempotent. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.deps.memory.bytes -= this.memoryBytes;
    this.memoryBytes = 0;
    this.readBack = undefined;
    for (const segment of this.segments) if (!(segment instanceof MemorySegment)) segment.close();
    this.segments = [];
  }

  /** The file is the oldest segment and the reader is nearly through it: new bytes may go to memory again. */
  private caughtUp(file: SpillFile): boolean {
    return this.segments[0] === file && file.unreadBytes < SPILL_READ_BYTES;
  }

  private spill(chunk: Buffer, waiting: number, last: Segment | undefined): void {
    const store = this.deps.spill;
    if (store === undefined || store.limitBytes === 0) {
      this.fail(
        `${describeBytes(waiting + chunk.length)} waiting for a local reader that stopped reading; memory for it is ` +
          `full and spilling is off (tuning.spillLimitBytes)`,
      );
      return;
    }
    let file = last instanceof MemorySegment ? undefined : last;
    if (file === undefined || file.size >= SPILL_FILE_ROTATE_BYTES) {
      try {
        file = store.open(
          () => this.pump(),
          (err) => this.fail(`spill file write failed: ${err.message}`),
        );
      } catch (err) {
        this.fail(`cannot create a spill file in ${store.directory}: ${(err as Error).message}`);
        return;
      }
      this.segments.push(file);
    }
    let pendingWrites = 0;
    for (const segment of this.segments)
      if (!(segment instanceof MemorySegment)) pendingWrites += segment.pendingWriteBytes;
    if (pendingWrites + chunk.length > SPILL_WRITE_BEHIND_BYTES) {
      this.fail(`spill file writes fell ${describeBytes(pendingWrites)} behind; the disk is too slow`);
      return;
    }
    if (!file.append(chunk)) {
      this.fail(
        `${describeBytes(waiting + chunk.length)} waiting for a local reader that stopped reading; the daemon-wide ` +
          `spill limit of ${describeBytes(store.limitBytes)} is spent (tuning.spillLimitBytes)`,
      );
    }
  }

  /** Hand queued bytes to the reader in order while it accepts them; start reading files back as needed. */
  private pump(): void {
    if (this.pumping || this.destroyed || this.failed) return;
    this.pumping = true;
    try {
      while (this.flowing && !this.destroyed && !this.failed) {
        if (this.readBack !== undefined) {
          const bytes = this.readBack;
          this.readBack = undefined;
          this.flowing = this.deps.push(bytes);
          continue;
        }
        const segment = this.segments[0];
        if (segment instanceof MemorySegment) {
          const chunk = segment.shift();
          if (chunk === undefined) {
            this.segments.shift();
            continue;
          }
          this.memoryBytes -= chunk.length;
          this.deps.memory.bytes -= chunk.length;
          this.flowing = this.deps.push(chunk);
          continue;
        }
        if (segment !== undefined) {
          if (segment.drained) {
            this.segments.shift();
            segment.close();
            continue;
          }
          // Reads back what is on disk; the rest waits for its write to land (onWritten pumps again).
          segment.read(SPILL_READ_BYTES, (err, bytes) => this.onReadBack(err, bytes));
          break;
        }
        if (this.ending && !this.ended) {
          this.ended = true;
          this.deps.end();
        }
        break;
      }
    } finally {
      this.pumping = false;
    }
  }

  private onReadBack(err: Error | undefined, bytes: Buffer): void {
    if (this.destroyed || this.failed) return;
    if (err !== undefined) {
      this.fail(`spill file read failed: ${err.message}`);
      return;
    }
    this.readBack = bytes;
    this.pump();
  }

  private fail(reason: string): void {
    if (this.failed || this.destroyed) return;
    this.failed = true;
    this.deps.fail(new TunnelError('PF_ERR_STREAM_BACKLOG', reason));
  }
}

const EMPTY = Buffer.alloc(0);
