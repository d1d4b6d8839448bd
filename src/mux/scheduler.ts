/**
 * The smux send scheduler (xtaci/smux `shaper.go` beside `session.go`): the queue of frames the client session
 * has to send, and how a pull of the outgoing byte stream is cut from it. No I/O, no timers, no events: the
 * session (`src/mux/session.ts`) queues SYN, write batches, FIN and NOP here, and the data-channel pump pulls.
 *
 * Order:
 * - A pending NOP goes first (one keep-alive is as good as many, so at most one is queued).
 * - Streams with frames to send are served round-robin, one frame per turn; per stream the order SYN → PSH… →
 *   FIN is kept. A stream that sent a frame and has more goes to the back of the line.
 * - PSH frames are cut when pulled, never longer than `maxFrameDataBytes` nor than the space left in the pull,
 *   so each pull normally holds whole frames and streams alternate frame by frame even inside one 1 KiB
 *   data-channel payload. Only when the next frame cannot fit and nothing was written yet (a pull smaller than
 *   a header) is a frame split across pulls; it is finished first on the next pull.
 *
 * Every figure it reports ({@link SmuxSendScheduler.queuedBytes}, {@link SmuxSendScheduler.readyStreams}) is
 * computed from the queue itself, so no counter can drift from what is queued.
 */
import { SMUX_HEADER_BYTES, SmuxCommand, writeFrameHeader } from './frame.js';
import type { SmuxWriteCallback } from './stream.js';

/** Outgoing state of one stream's FIN frame. */
export enum FinState {
  /** Not requested. */
  None,
  /** Requested (local `end()` or destroy) and not yet pulled. */
  Queued,
  /** At least its first byte was pulled (or the stream must never send one). */
  Sent,
}

/** The send side of one stream, owned by the scheduler; the session reads `synPending` and `fin`. */
export interface OutgoingStream {
  /** smux stream id. */
  readonly id: number;
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
  /** Where this stream's FIN is. */
  fin: FinState;
  /** `_final` callback waiting for FIN to be pulled. */
  finCallback: SmuxWriteCallback | undefined;
}

/** A frame cut across pulls: its serialised bytes and what completes when the last byte leaves. */
interface SplitFrame {
  readonly bytes: Buffer;
  offset: number;
  readonly stream: OutgoingStream | undefined;
  readonly completes: 'write' | 'fin' | undefined;
}

/** What the scheduler needs (see docs/architecture.md, Conventions: narrow dependencies). */
export interface SmuxSchedulerDeps {
  /** Most PSH data bytes per frame, bytes (validated by the session: 1 … `SMUX_FRAME_DATA_LIMIT_BYTES`). */
  maxFrameDataBytes: number;
  /** The queue went from empty to non-empty (the session tells the pump). */
  onReady: () => void;
}

/** Round-robin frame queue of one smux client session. See the module comment for the order. */
export class SmuxSendScheduler {
  /** Streams with frames to send, in round-robin order (Set keeps insertion order; re-adding moves to the tail). */
  private readonly ready = new Set<OutgoingStream>();
  private split: SplitFrame | undefined;
  private nopPending = false;
  /** Frames serialised into pulled bytes (a frame split across pulls counts once). */
  framesOut = 0;
  /** Bytes pulled. */
  bytesOut = 0;

  constructor(private readonly deps: SmuxSchedulerDeps) {}

  /** True while a pull would return bytes. */
  get hasOutgoing(): boolean {
    return this.split !== undefined || this.nopPending || this.ready.size > 0;
  }

  /** Streams with at least one frame queued. */
  get readyStreams(): number {
    return this.ready.size;
  }

  /** Bytes queued and not yet pulled: data, one header per queued SYN/FIN/NOP and the rest of a split frame. */
  get queuedBytes(): number {
    const q = this.tally();
    return q.splitBytes + q.dataBytes + SMUX_HEADER_BYTES * q.controlFrames;
  }

  /**
   * Bytes the next pull can produce at most: everything queued plus one header per frame it may cut (one per
   * batch end, one per full-size frame, one for the frame that fills the pull).
   */
  get pullBoundBytes(): number {
    const q = this.tally();
    const frames = q.controlFrames + q.batches + Math.floor(q.dataBytes / this.deps.maxFrameDataBytes) + 1;
    return q.splitBytes + q.dataBytes + SMUX_HEADER_BYTES * frames;
  }

  /** Register a new stream with its SYN queued. */
  open(id: number): OutgoingStream {
    const stream: OutgoingStream = {
      id,
      synPending: true,
      batch: undefined,
      batchIndex: 0,
      batchOffset: 0,
      batchRemaining: 0,
      writeCallback: undefined,
      fin: FinState.None,
      finCallback: undefined,
    };
    this.markReady(stream);
    return stream;
  }

  /** Queue one write batch of `stream` (Node's Writable keeps at most one in flight per stream). */
  queueWrite(stream: OutgoingStream, chunks: Buffer[], callback: SmuxWriteCallback): void {
    let bytes = 0;
    for (const chunk of chunks) bytes += chunk.length;
    stream.batch = chunks;
    stream.batchIndex = 0;
    stream.batchOffset = 0;
    stream.batchRemaining = bytes;
    stream.writeCallback = callback;
    this.markReady(stream);
  }

  /** Queue `stream`'s FIN; `callback` (if given) runs once its last byte is pulled. */
  queueFin(stream: OutgoingStream, callback?: SmuxWriteCallback): void {
    stream.fin = FinState.Queued;
    if (callback !== undefined) stream.finCallback = callback;
    this.markReady(stream);
  }

  /** Queue a NOP (sid 0). At most one is pending. */
  queueNop(): void {
    if (this.nopPending) return;
    const had = this.hasOutgoing;
    this.nopPending = true;
    if (!had) this.deps.onReady();
  }

  /**
   * Remove all not-yet-started output of a stream (SYN if still pending, data, FIN); a frame already split
   * across pulls is finished regardless. Returns the callbacks of what was dropped, for the caller to run.
   * A stream whose SYN never left is marked so that it never sends a FIN either.
   */
  drop(stream: OutgoingStream): SmuxWriteCallback[] {
    const callbacks: SmuxWriteCallback[] = [];
    const neverAnnounced = stream.synPending;
    stream.synPending = false;
    if (stream.batch !== undefined) clearBatch(stream);
    const splitting = this.split?.stream === stream;
    if (stream.writeCallback !== undefined && !splitting) {
      callbacks.push(stream.writeCallback);
      stream.writeCallback = undefined;
    }
    if (stream.fin === FinState.Queued) stream.fin = FinState.None;
    if (stream.finCallback !== undefined && !splitting) {
      callbacks.push(stream.finCallback);
      stream.finCallback = undefined;
    }
    // The agent never heard of this stream, so it must not hear a FIN for it either.
    if (neverAnnounced) stream.fin = FinState.Sent;
    this.ready.delete(stream);
    return callbacks;
  }

  /** Forget everything queued (the session is destroyed); no callback runs. */
  clear(): void {
    this.ready.clear();
    this.split = undefined;
    this.nopPending = false;
  }

  /**
   * Serialise queued frames into `out[start, end)`, round-robin; returns the end position. Callbacks of
   * batches and FINs whose last byte is in the region are appended to `completed` for the caller to run.
   */
  fill(out: Buffer, start: number, end: number, completed: SmuxWriteCallback[]): number {
    let pos = start;
    if (this.split) pos = this.continueSplit(out, start, end, completed);
    while (pos < end) {
      let next: number;
      if (this.nopPending) {
        next = this.emitFrame(out, start, end, pos, SmuxCommand.NOP, 0, undefined, 0, completed, undefined);
        if (next !== pos) this.nopPending = false;
      } else {
        const stream = this.firstReady();
        if (stream === undefined) break;
        next = this.emitFromStream(stream, out, start, end, pos, completed);
        if (next !== pos) {
          // Round-robin: one frame per turn, then to the back of the line if it has more.
          this.ready.delete(stream);
          if (hasPendingFrames(stream)) this.ready.add(stream);
        }
      }
      if (next === pos) break;
      pos = next;
    }
    this.bytesOut += pos - start;
    return pos;
  }

  private markReady(stream: OutgoingStream): void {
    if (this.ready.has(stream)) return;
    const had = this.hasOutgoing;
    this.ready.add(stream);
    if (!had) this.deps.onReady();
  }

  /** What is queued, counted from the queue (the derived figures above). */
  private tally(): { splitBytes: number; dataBytes: number; batches: number; controlFrames: number } {
    let dataBytes = 0;
    let batches = 0;
    let controlFrames = this.nopPending ? 1 : 0;
    for (const stream of this.ready) {
      if (stream.synPending) controlFrames++;
      if (stream.fin === FinState.Queued) controlFrames++;
      if (stream.batch !== undefined) {
        batches++;
        dataBytes += stream.batchRemaining;
      }
    }
    const splitBytes = this.split ? this.split.bytes.length - this.split.offset : 0;
    return { splitBytes, dataBytes, batches, controlFrames };
  }

  private firstReady(): OutgoingStream | undefined {
    for (const stream of this.ready) return stream;
    return undefined;
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
      if (split.stream !== undefined) completeFrame(split.stream, split.completes, completed);
    }
    return start + n;
  }

  /** Emit the next frame of one stream at `pos` (pull region `[start, end)`); returns `pos` if it does not fit. */
  private emitFromStream(
    stream: OutgoingStream,
    out: Buffer,
    start: number,
    end: number,
    pos: number,
    completed: SmuxWriteCallback[],
  ): number {
    if (stream.synPending) {
      const next = this.emitFrame(
        out,
        start,
        end,
        pos,
        SmuxCommand.SYN,
        stream.id,
        undefined,
        0,
        completed,
        undefined,
      );
      if (next !== pos) stream.synPending = false;
      return next;
    }
    if (stream.batch !== undefined) {
      const space = end - pos;
      let length = Math.min(stream.batchRemaining, this.deps.maxFrameDataBytes);
      if (space > SMUX_HEADER_BYTES) length = Math.min(length, space - SMUX_HEADER_BYTES);
      else if (pos > start) return pos;
      const last = length === stream.batchRemaining;
      const next = this.emitFrame(
        out,
        start,
        end,
        pos,
        SmuxCommand.PSH,
        stream.id,
        stream,
        length,
        completed,
        last ? stream : undefined,
      );
      if (next === pos) return pos;
      if (last) clearBatch(stream);
      return next;
    }
    if (stream.fin === FinState.Queued) {
      return this.emitFrame(
        out,
        start,
        end,
        pos,
        SmuxCommand.FIN,
        stream.id,
        undefined,
        0,
        completed,
        stream,
      );
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
    source: OutgoingStream | undefined,
    dataLength: number,
    completed: SmuxWriteCallback[],
    completes: OutgoingStream | undefined,
  ): number {
    const frameBytes = SMUX_HEADER_BYTES + dataLength;
    const space = end - pos;
    if (frameBytes > space && pos > start) return pos;
    const kind = completes === undefined ? undefined : cmd === SmuxCommand.FIN ? 'fin' : 'write';
    if (kind === 'fin') (completes as OutgoingStream).fin = FinState.Sent;
    this.framesOut++;
    if (frameBytes <= space) {
      writeFrameHeader(out, pos, cmd, sid, dataLength);
      if (source !== undefined) copyBatch(source, out, pos + SMUX_HEADER_BYTES, dataLength);
      if (completes !== undefined) completeFrame(completes, kind, completed);
      return pos + frameBytes;
    }
    const bytes = Buffer.allocUnsafe(frameBytes);
    writeFrameHeader(bytes, 0, cmd, sid, dataLength);
    if (source !== undefined) copyBatch(source, bytes, SMUX_HEADER_BYTES, dataLength);
    bytes.copy(out, pos, 0, space);
    this.split = { bytes, offset: space, stream: completes, completes: kind };
    return end;
  }
}

function hasPendingFrames(stream: OutgoingStream): boolean {
  return stream.synPending || stream.batch !== undefined || stream.fin === FinState.Queued;
}

function clearBatch(stream: OutgoingStream): void {
  stream.batch = undefined;
  stream.batchIndex = 0;
  stream.batchOffset = 0;
  stream.batchRemaining = 0;
}

/** Copy the next `length` bytes of a stream's batch to `target` at `offset`, advancing the batch. */
function copyBatch(stream: OutgoingStream, target: Buffer, offset: number, length: number): void {
  const batch = stream.batch as Buffer[];
  let copied = 0;
  while (copied < length) {
    const chunk = batch[stream.batchIndex] as Buffer;
    const take = Math.min(chunk.length - stream.batchOffset, length - copied);
    chunk.copy(target, offset + copied, stream.batchOffset, stream.batchOffset + take);
    copied += take;
    stream.batchOffset += take;
    if (stream.batchOffset === chunk.length) {
      stream.batchIndex++;
      stream.batchOffset = 0;
    }
  }
  stream.batchRemaining -= length;
}

function completeFrame(
  stream: OutgoingStream,
  kind: 'write' | 'fin' | undefined,
  completed: SmuxWriteCallback[],
): void {
  const callback = kind === 'fin' ? stream.finCallback : kind === 'write' ? stream.writeCallback : undefined;
  if (kind === 'fin') stream.finCallback = undefined;
  else if (kind === 'write') stream.writeCallback = undefined;
  if (callback !== undefined) completed.push(callback);
}
