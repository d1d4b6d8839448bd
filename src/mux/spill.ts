/**
 * Private, bounded spill files for bytes that wait for a slow local reader (spec §9.6, issue 10 item 1).
 *
 * smux v1 has no per-stream window, so the daemon must take every in-order message the agent sends. What a
 * stalled reader has not taken stays in memory up to `streamReceiveBufferBytes`; beyond that it goes to a
 * {@link SpillFile}: a FIFO of bytes in a file that
 * - is created with mode 0600 (`O_CREAT|O_EXCL`) inside its own fresh 0700 folder (`mkdtemp`), and is
 *   unlinked (and its folder removed) right after opening, so nothing is left on disk once the descriptor is
 *   closed, even after a crash, and no other user can open it by name meanwhile;
 * - is written and read sequentially, one write and one read in flight at most, positions explicit;
 * - counts every byte it holds against one daemon-wide {@link SpillStore} budget (disk space in use: the file's
 *   size, released when the file is closed).
 *
 * The store is injected (see docs/architecture.md, Conventions): the daemon creates one and hands it to every
 * forward, so the limit holds across forwards and sessions.
 */
import fs from 'node:fs';
import path from 'node:path';

/** Prefix of the private folder each spill file is created in (removed again at once). */
export const SPILL_FOLDER_PREFIX = 'pf-daemon-spill-';
/** Most chunks handed to one `writev` call (Linux IOV_MAX is 1024; we stay well below), protocol-independent. */
const SPILL_MAX_WRITE_CHUNKS = 256;
/** Permissions of a spill file: owner read/write only. */
const SPILL_FILE_MODE = 0o600;

/** Options of a {@link SpillStore}; resolved by the config layer (`tuning.spillLimitBytes`). */
export interface SpillStoreOptions {
  /** Existing folder under which spill files are created, e.g. `os.tmpdir()` (honours `TMPDIR`). */
  directory: string;
  /** Most bytes all spill files of this store may hold together, bytes; 0 disables spilling. */
  limitBytes: number;
}

/** Counters of a {@link SpillStore}, for stats and tests. */
export interface SpillStoreStats {
  /** The daemon-wide limit, bytes. */
  limitBytes: number;
  /** Bytes held by open spill files now (their sizes), bytes. */
  spilledBytes: number;
  /** Highest `spilledBytes` seen, bytes. */
  peakSpilledBytes: number;
  /** Spill files open now. */
  filesOpen: number;
  /** Spill files created since start. */
  filesCreated: number;
  /** Appends refused because the limit was reached (each resets one stream). */
  refusals: number;
}

/**
 * The daemon-wide spill budget and file factory. One instance is shared by every stream of every session of
 * every forward of a daemon.
 */
export class SpillStore {
  /** Most bytes all spill files may hold together, bytes; may be changed on reload. */
  limitBytes: number;
  /** Folder spill files are created under. */
  readonly directory: string;
  private readonly counters = {
    spilledBytes: 0,
    peakSpilledBytes: 0,
    filesOpen: 0,
    filesCreated: 0,
    refusals: 0,
  };

  constructor(options: SpillStoreOptions) {
    this.limitBytes = options.limitBytes;
    this.directory = options.directory;
  }

  /** A snapshot of the counters. */
  get stats(): SpillStoreStats {
    return { limitBytes: this.limitBytes, ...this.counters };
  }

  /**
   * Create a new, already unlinked spill file. Synchronous: it happens once per spill episode (and per
   * {@link SPILL_FILE_ROTATE_BYTES}), and a failure must reset the stream before more bytes are accepted.
   * @throws the `fs` error (ENOENT, EACCES, ENOSPC…) when the file cannot be created.
   */
  open(onWritten: () => void, onError: (error: Error) => void): SpillFile {
    const folder = fs.mkdtempSync(path.join(this.directory, SPILL_FOLDER_PREFIX));
    let fd: number | undefined;
    try {
      const name = path.join(folder, 'stream');
      fd = fs.openSync(name, 'wx+', SPILL_FILE_MODE);
      fs.unlinkSync(name);
    } catch (err) {
      if (fd !== undefined) fs.closeSync(fd);
      throw err;
    } finally {
      fs.rmSync(folder, { recursive: true, force: true });
    }
    this.counters.filesOpen++;
    this.counters.filesCreated++;
    return new SpillFile(this, fd, onWritten, onError);
  }

  /** @internal Take `bytes` from the budget; false (and counted) when that would pass the limit. */
  reserve(bytes: number): boolean {
    if (this.counters.spilledBytes + bytes > this.limitBytes) {
      this.counters.refusals++;
      return false;
    }
    this.counters.spilledBytes += bytes;
    if (this.counters.spilledBytes > this.counters.peakSpilledBytes)
      this.counters.peakSpilledBytes = this.counters.spilledBytes;
    return true;
  }

  /** @internal A file closed: give its bytes back. */
  release(bytes: number): void {
    this.counters.spilledBytes -= bytes;
    this.counters.filesOpen--;
  }
}

/**
 * Size at which a spill file stops taking appends and the next bytes go to a new file, bytes (our default).
 * Without it a reader that keeps a steady lag behind the writer would grow one file for ever, because a file
 * gives its space back only when closed; with it the disk in use is at most the bytes waiting plus one file.
 */
export const SPILL_FILE_ROTATE_BYTES = 64 * 1024 * 1024;

/**
 * One spill file: a FIFO of bytes on disk. Appends are buffered until written (`pendingWriteBytes`, bounded by
 * the caller); reads return the oldest written bytes not read yet. Created by {@link SpillStore.open}.
 */
export class SpillFile {
  /** The open descriptor (exposed for tests that check mode and link count). */
  readonly fd: number;
  private readonly store: SpillStore;
  private readonly onWritten: () => void;
  private readonly onError: (error: Error) => void;
  /** Bytes appended (reserved from the store), bytes. */
  private sizeBytes = 0;
  /** Bytes on disk, from offset 0, bytes. */
  private writtenBytes = 0;
  /** Bytes read back, from offset 0, bytes. */
  private readBytes = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private writing = false;
  private reading = false;
  private closing = false;
  private fdClosed = false;

  /** @internal Use {@link SpillStore.open}. */
  constructor(store: SpillStore, fd: number, onWritten: () => void, onError: (error: Error) => void) {
    this.store = store;
    this.fd = fd;
    this.onWritten = onWritten;
    this.onError = onError;
  }

  /** Bytes appended so far (the file's eventual size), bytes. */
  get size(): number {
    return this.sizeBytes;
  }

  /** Bytes appended and not read back yet (written or pending), bytes. */
  get unreadBytes(): number {
    return this.sizeBytes - this.readBytes;
  }

  /** Bytes on disk that a read may return now (0 while a read is in flight). */
  get readableBytes(): number {
    return this.reading ? 0 : this.writtenBytes - this.readBytes;
  }

  /** Bytes appended but not yet on disk (held in memory), bytes. */
  get pendingWriteBytes(): number {
    return this.pendingBytes;
  }

  /** Everything appended was read back and nothing is in flight. */
  get drained(): boolean {
    return this.readBytes === this.sizeBytes && !this.reading && !this.writing;
  }

  /**
   * Append `chunk` (kept by reference until written). Returns false, appending nothing, when the store's
   * daemon-wide limit would be passed.
   */
  append(chunk: Buffer): boolean {
    if (this.closing) return false;
    if (!this.store.reserve(chunk.length)) return false;
    this.sizeBytes += chunk.length;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.flush();
    return true;
  }

  /**
   * Read up to `maxBytes` of the oldest unread bytes on disk; one read at a time. `callback` gets the bytes
   * (never empty) or the error; it is not called after {@link close}.
   */
  read(maxBytes: number, callback: (error: Error | undefined, bytes: Buffer) => void): void {
    const length = Math.min(maxBytes, this.readableBytes);
    if (this.reading || this.closing || length <= 0) return;
    this.reading = true;
    const buffer = Buffer.allocUnsafe(length);
    fs.read(this.fd, buffer, 0, length, this.readBytes, (err, n) => {
      this.reading = false;
      if (this.closing) {
        this.closeFd();
        return;
      }
      if (err !== null || n <= 0) {
        callback(err ?? new Error('spill file shorter than written'), buffer.subarray(0, 0));
        return;
      }
      this.readBytes += n;
      callback(undefined, n === length ? buffer : buffer.subarray(0, n));
    });
  }

  /** Drop what is pending, give the bytes back to the store and close the descriptor once nothing is in flight. */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.pending = [];
    this.pendingBytes = 0;
    this.store.release(this.sizeBytes);
    this.closeFd();
  }

  private closeFd(): void {
    // Never close under an operation in flight: its descriptor number could be reused by another open.
    if (this.fdClosed || this.writing || this.reading) return;
    this.fdClosed = true;
    fs.close(this.fd, () => undefined);
  }

  private flush(): void {
    if (this.writing || this.closing || this.pending.length === 0) return;
    this.writing = true;
    const batch =
      this.pending.length <= SPILL_MAX_WRITE_CHUNKS
        ? this.pending
        : this.pending.slice(0, SPILL_MAX_WRITE_CHUNKS);
    this.pending = batch === this.pending ? [] : this.pending.slice(SPILL_MAX_WRITE_CHUNKS);
    let bytes = 0;
    for (const chunk of batch) bytes += chunk.length;
    fs.writev(this.fd, batch, this.writtenBytes, (err, written) => {
      this.writing = false;
      if (this.closing) {
        this.closeFd();
        return;
      }
      if (err !== null) {
        this.onError(err);
        return;
      }
      this.writtenBytes += written;
      this.pendingBytes -= written;
      if (written < bytes) this.pending.unshift(...remainder(batch, written));
      this.flush();
      this.onWritten();
    });
  }
}

/** The chunks of `batch` after its first `skip` bytes (a short write). */
function remainder(batch: Buffer[], skip: number): Buffer[] {
  const rest: Buffer[] = [];
  let left = skip;
  for (const chunk of batch) {
    if (left >= chunk.length) {
      left -= chunk.length;
      continue;
    }
    rest.push(left > 0 ? chunk.subarray(left) : chunk);
    left = 0;
  }
  return rest;
}
