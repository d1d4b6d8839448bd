/**
 * One smux v1 stream as a Node `Duplex` (spec §9.4). The stream owns no frames, queues or sockets: its
 * Writable side hands each chunk to the session through injected {@link SmuxStreamHooks} and the session
 * calls the write callback only once the chunk's bytes have been pulled onto the wire, so the Writable's own
 * buffer (`writableHighWaterMark`) is the honest, bounded send queue (ssh2 `Channel.js`). The Readable side is
 * fed by the session's per-stream receive queue (`receive-queue.ts`) with `push()`, which stops pushing when
 * `push()` returns false; `_read()` tells the session that the local reader has made room, and the queue
 * pushes what it kept meanwhile (docs/backpressure.md; docs/architecture.md, Conventions).
 *
 * Lifecycle: the stream is forgotten by its session when it is destroyed, which Node does on its own
 * (`autoDestroy`) once both `'end'` and `'finish'` have been emitted, or which happens when:
 * - the agent sent FIN and the local reader has consumed everything (`'end'`): v1 has no half-close, the
 *   destination is gone, so the stream destroys itself without waiting for a local `end()`;
 * - the user calls `destroy()` (a local socket error, say): the session sends FIN if it still owes one;
 * - the session dies: every stream is destroyed with a `TunnelError` `PF_ERR_STREAM_RESET`, so, as with any
 *   `net.Socket`, users MUST listen for `'error'`.
 */
import { Duplex } from 'node:stream';

/** Completion callback of a queued write or FIN; called without an error once its bytes were pulled. */
export type SmuxWriteCallback = (error?: Error | null) => void;

/**
 * The narrow functions a stream uses to reach its session (functions, not the parent: docs/architecture.md,
 * Conventions).
 * Every hook is called with the stream's own state already updated by Node.
 */
export interface SmuxStreamHooks {
  /**
   * Queue a batch of chunks (`_write` or `_writev`, ≥ 1 byte in total) as PSH data. `callback` fires when the
   * batch's last byte has been pulled by `pullOutgoing()`, or at once when the batch is discarded because the
   * agent already closed the stream.
   */
  write(chunks: Buffer[], callback: SmuxWriteCallback): void;
  /** Queue FIN after all data (local `end()`); `callback` fires once the FIN has been pulled or skipped. */
  end(callback: SmuxWriteCallback): void;
  /** The local reader wants more data (`_read()`): re-evaluate receive blocking. */
  read(): void;
  /**
   * `bytes` were accepted by `write()` (they count against the session's send budget until their batch is
   * pulled); returns false when the session holds the stream, so `write()` returns false too.
   */
  wrote(bytes: number): boolean;
  /** True while the session's send budget holds the stream: its source must stay paused. */
  held(): boolean;
  /**
   * The stream is being destroyed: drop queued data, queue FIN if one is still owed and forget the stream.
   * `error` is the destroy reason, if any; the session uses it to fail a write still in flight.
   */
  destroy(error: Error | null): void;
}

/** Node's own `writableNeedDrain` (its buffer reached `writableHighWaterMark`). */
const nodeWritableNeedDrain = Object.getOwnPropertyDescriptor(Duplex.prototype, 'writableNeedDrain')?.get;
function nodeNeedsDrain(stream: Duplex): boolean {
  return nodeWritableNeedDrain?.call(stream) === true;
}

/** Callback of `write()`. */
type WriteCallback = (error: Error | null | undefined) => void;

/** Bytes a `write()` chunk will occupy (0 for what Node rejects, e.g. a non-chunk). */
function chunkBytes(chunk: unknown, encoding: BufferEncoding | WriteCallback | undefined): number {
  if (chunk instanceof Uint8Array) return chunk.byteLength;
  if (typeof chunk === 'string')
    return Buffer.byteLength(chunk, typeof encoding === 'string' ? encoding : 'utf8');
  return 0;
}

/** Buffer bounds of one stream, resolved by the session from its options. */
export interface SmuxStreamOptions {
  /** Bytes the Readable side holds before `push()` reports it full (the session's queue keeps the rest). */
  readableHighWaterMark: number;
  /** Bytes the Writable side buffers before `write()` returns false (includes the chunk on the wire). */
  writableHighWaterMark: number;
}

/** A multiplexed smux v1 stream (spec §9.4). Created by `SmuxClientSession.openStream()`. */
export class SmuxStream extends Duplex {
  /** smux stream id: odd, ≥ 3, unique within its session (spec §9.4). */
  readonly id: number;
  private readonly hooks: SmuxStreamHooks;
  private remoteFinished = false;

  /** @internal Use `SmuxClientSession.openStream()`. */
  constructor(id: number, options: SmuxStreamOptions, hooks: SmuxStreamHooks) {
    super({
      // v1 cannot carry half-close; a remote FIN is handled by handleRemoteFin, not by ending our side.
      allowHalfOpen: true,
      readableHighWaterMark: options.readableHighWaterMark,
      writableHighWaterMark: options.writableHighWaterMark,
      decodeStrings: true,
    });
    this.id = id;
    this.hooks = hooks;
  }

  /** True once the agent's FIN has been handed to the reader (after every byte that came before it). */
  get remoteEnded(): boolean {
    return this.remoteFinished;
  }

  /**
   * @internal Called by the session's receive queue once the agent's FIN is next in line: ends the Readable side
   * after the data already pushed, and destroys the stream once the local reader has consumed it (no half-close
   * in v1).
   */
  handleRemoteFin(): void {
    if (this.remoteFinished) return;
    this.remoteFinished = true;
    this.once('end', () => this.destroy());
    this.push(null);
  }

  /**
   * Node's `write()`, plus the session's send budget (`src/mux/send-budget.ts`): returns false also while the
   * session holds this stream, and the 'drain' that lets the source go comes when the budget has room.
   */
  override write(
    chunk: unknown,
    encoding?: BufferEncoding | WriteCallback,
    callback?: WriteCallback,
  ): boolean {
    // Only a chunk Node will buffer is counted: not one written after end() or destroy().
    const bytes = this.destroyed || this.writableEnded ? 0 : chunkBytes(chunk, encoding);
    const keepReading = bytes > 0 ? this.hooks.wrote(bytes) : !this.hooks.held();
    const ok = super.write(chunk, encoding as BufferEncoding, callback);
    return ok && keepReading;
  }

  /** @internal Node's own 'drain' is withheld while the budget holds the stream; see {@link release}. */
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'drain' && this.hooks.held()) return false;
    return super.emit(event, ...args);
  }

  /**
   * @internal Called by the session when its send budget lets this held stream go: 'drain', unless Node's own
   * buffer is still full (then Node's own 'drain' follows).
   */
  release(): void {
    if (!nodeNeedsDrain(this) && !this.destroyed) super.emit('drain');
  }

  /** @internal True while the session's send budget holds this stream (its source must stay paused). */
  get isHeld(): boolean {
    return this.hooks.held();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: SmuxWriteCallback): void {
    if (chunk.length === 0) callback();
    else this.hooks.write([chunk], callback);
  }

  // Small writes buffered while a batch is on its way go out together, so pulls stay full.
  override _writev(chunks: { chunk: Buffer; encoding: BufferEncoding }[], callback: SmuxWriteCallback): void {
    const buffers: Buffer[] = [];
    for (const { chunk } of chunks) if (chunk.length > 0) buffers.push(chunk);
    if (buffers.length === 0) callback();
    else this.hooks.write(buffers, callback);
  }

  override _final(callback: SmuxWriteCallback): void {
    this.hooks.end(callback);
  }

  override _read(): void {
    this.hooks.read();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.hooks.destroy(error);
    callback(error);
  }
}

// `writableNeedDrain` is an accessor of Writable, declared a property by @types/node, so it is overridden
// here rather than in the class: a stream held by the send budget reports that it needs 'drain', so that
// `pipe()` leaves its source paused (Node's pipe() checks it before resuming the source).
Object.defineProperty(SmuxStream.prototype, 'writableNeedDrain', {
  get(this: SmuxStream): boolean {
    return nodeNeedsDrain(this) || this.isHeld;
  },
});
