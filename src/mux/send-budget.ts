/**
 * The session-wide send budget (issue 16): how many bytes the local sockets of one smux session may have
 * read and not yet seen pulled onto the wire, across all its streams. Without it every stream could hold
 * its own write buffer plus one socket read (Node reads accepted sockets 64 KiB at a time, whatever their
 * `highWaterMark`), so 1 000 connections that each send at once held 64 MB in the daemon before the first
 * of them was on the wire.
 *
 * Model (no I/O, no timers of its own; the session injects how to wait for the next poll):
 * - Each stream is a {@link BudgetMember}. Bytes count from the stream's `write()` until its write batch
 *   has been pulled (or dropped): {@link SendBudget.queuedBytes}.
 * - A source (local socket) may read only while its stream holds a *read reserve* of
 *   `readReserveBytes`, the most one socket read delivers: a stream is granted one when it opens, and
 *   again at each `write()`, while `queuedBytes + reservedBytes + readReserveBytes ≤ limitBytes` and no
 *   other stream waits. Otherwise the stream is *held*: `write()` returns false (a new stream starts with
 *   `writableNeedDrain` true), so `pipe()` pauses the socket and its bytes stay in the kernel.
 * - Held streams wait in one line, first come first served, and are let go one reserve at a time as
 *   pulled batches free room ('drain' on the stream resumes its source): a stream that wrote goes to the
 *   back of the line, so every connection progresses and none starves.
 * - While streams wait, a reserve not used within one full poll of the event loop lapses (a connection that
 *   has nothing to send, e.g. one waiting for the server to speak first, must not keep others out). Such a
 *   stream keeps reading; should it send while the budget is full, that one read (≤ `readReserveBytes`) is
 *   the only way `queuedBytes` can pass `limitBytes`, and the stream is held right after it. Nobody
 *   waiting, nothing lapses and no sweep runs: an uncontended session (one bulk transfer, request/response
 *   traffic) pays a few additions per write and no extra turn of the event loop.
 *
 * Every figure is kept incrementally (plain additions on the hot path) and clamped per member, so a member
 * that leaves takes exactly its own share with it.
 */

/** One stream's share of its session's {@link SendBudget}; owned and changed by the budget only. */
export interface BudgetMember {
  /** Bytes written into the stream and not yet pulled or dropped. */
  queuedBytes: number;
  /** Read reserve held: 0 or the budget's `readReserveBytes`. */
  reservedBytes: number;
  /** Sweep generation in which the reserve was granted or last renewed. */
  reserveTurn: number;
  /** Waiting in the budget's line; its source is paused. */
  held: boolean;
  /** Gone (stream destroyed or forgotten): every later call about it is ignored. */
  left: boolean;
  /** Let a held stream go: its source may read again (the stream emits 'drain'). */
  readonly resume: () => void;
}

/** Figures of one budget, for the session's stats. */
export interface SendBudgetStats {
  /** Bytes written into streams and not yet pulled onto the wire (or dropped), bytes. */
  sendQueuedBytes: number;
  /** Highest `sendQueuedBytes` seen, bytes. */
  sendPeakQueuedBytes: number;
  /** Read reserves held by streams whose sources may read now, bytes. */
  sendReservedBytes: number;
  /** Streams held now: their sources are paused until the budget has room. */
  sendHeldStreams: number;
  /** Times a stream was held (since the session was created). */
  sendHolds: number;
}

/** What a budget needs. */
export interface SendBudgetOptions {
  /** Most bytes queued plus reserved across the session's streams, bytes (≥ `readReserveBytes`). */
  limitBytes: number;
  /** Most bytes one read of a source delivers, held per reading stream, bytes. */
  readReserveBytes: number;
  /**
   * Run `fn` right after the event loop's next I/O poll (the check phase that follows it): one sweep of
   * unused reserves, while streams wait. {@link afterPoll} in production; tests drive it.
   */
  afterPoll: (fn: () => void) => void;
}

/**
 * Run `fn` in the check phase of the event loop, i.e. right after an I/O poll. A reserve lapses at the
 * second sweep after it was granted, so a full poll in which its socket could have read lies between.
 */
export function afterPoll(fn: () => void): void {
  setImmediate(fn);
}

/** The send budget of one smux session. See the module comment. */
export class SendBudget {
  /** Bytes written into member streams and not yet pulled or dropped. */
  queuedBytes = 0;
  /** Read reserves held. */
  reservedBytes = 0;
  /** Highest `queuedBytes` seen. */
  peakQueuedBytes = 0;
  /** Times a member was held. */
  holds = 0;
  private readonly line = new Set<BudgetMember>();
  /** Members holding a reserve (at most `limitBytes / readReserveBytes`). */
  private readonly reservers = new Set<BudgetMember>();
  /** Sweeps run so far: the generation of reserves granted now. */
  private turn = 0;
  private sweepScheduled = false;
  private readonly sweep = (): void => this.runSweep();

  constructor(private readonly options: Readonly<SendBudgetOptions>) {}

  /** Streams waiting for room. */
  get heldStreams(): number {
    return this.line.size;
  }

  /** A snapshot for the session's stats. */
  get stats(): SendBudgetStats {
    return {
      sendQueuedBytes: this.queuedBytes,
      sendPeakQueuedBytes: this.peakQueuedBytes,
      sendReservedBytes: this.reservedBytes,
      sendHeldStreams: this.line.size,
      sendHolds: this.holds,
    };
  }

  /**
   * A new stream joins: it gets a reserve at once when there is room and nobody waits, or is held.
   * Returns the member; `member.held` tells which.
   */
  join(resume: () => void): BudgetMember {
    const member: BudgetMember = {
      queuedBytes: 0,
      reservedBytes: 0,
      reserveTurn: -1,
      held: false,
      left: false,
      resume,
    };
    if (!this.tryReserve(member)) this.hold(member);
    return member;
  }

  /**
   * `bytes` were written into the member's stream (the stream accepted them). Uses up its reserve and
   * grants the next one when there is room; returns false when the member is held instead (its source
   * must pause).
   */
  wrote(member: BudgetMember, bytes: number): boolean {
    if (member.left) return true;
    member.queuedBytes += bytes;
    this.queuedBytes += bytes;
    if (this.queuedBytes > this.peakQueuedBytes) this.peakQueuedBytes = this.queuedBytes;
    if (member.held) return false;
    // The read used the reserve; the next one takes its place when it fits and nobody waits.
    const others = this.reservedBytes - member.reservedBytes;
    if (
      this.line.size === 0 &&
      this.queuedBytes + others + this.options.readReserveBytes <= this.options.limitBytes
    ) {
      if (member.reservedBytes === 0) this.grant(member);
      else member.reserveTurn = this.turn;
      return true;
    }
    this.dropReserve(member);
    this.hold(member);
    return false;
  }

  /** `bytes` of the member's writes were pulled onto the wire or dropped: free them, let waiters go. */
  done(member: BudgetMember, bytes: number): void {
    if (member.left) return;
    const freed = Math.min(bytes, member.queuedBytes);
    member.queuedBytes -= freed;
    this.queuedBytes -= freed;
    this.admit();
  }

  /** The member's stream is gone: free everything it holds and take it out of the line. */
  leave(member: BudgetMember): void {
    if (member.left) return;
    this.queuedBytes -= member.queuedBytes;
    member.queuedBytes = 0;
    this.dropReserve(member);
    this.line.delete(member);
    member.held = false;
    member.left = true;
    this.admit();
  }

  /** Let held members go, first come first served, while a reserve for each fits. */
  private admit(): void {
    const reserve = this.options.readReserveBytes;
    while (this.line.size > 0 && this.queuedBytes + this.reservedBytes + reserve <= this.options.limitBytes) {
      const member = this.line.values().next().value as BudgetMember;
      this.line.delete(member);
      member.held = false;
      this.grant(member);
      member.resume();
    }
    this.scheduleSweep();
  }

  /** Grant a reserve when it fits and nobody waits ahead. */
  private tryReserve(member: BudgetMember): boolean {
    if (this.line.size > 0) return false;
    if (this.queuedBytes + this.reservedBytes + this.options.readReserveBytes > this.options.limitBytes) {
      return false;
    }
    this.grant(member);
    return true;
  }

  private grant(member: BudgetMember): void {
    member.reservedBytes = this.options.readReserveBytes;
    member.reserveTurn = this.turn;
    this.reservedBytes += member.reservedBytes;
    this.reservers.add(member);
  }

  private dropReserve(member: BudgetMember): void {
    if (member.reservedBytes === 0) return;
    this.reservedBytes -= member.reservedBytes;
    member.reservedBytes = 0;
    this.reservers.delete(member);
  }

  private hold(member: BudgetMember): void {
    member.held = true;
    this.line.add(member);
    this.holds++;
    this.scheduleSweep();
  }

  /** Sweep after the next poll while someone waits and reserves could lapse. */
  private scheduleSweep(): void {
    if (this.sweepScheduled || this.line.size === 0 || this.reservers.size === 0) return;
    this.sweepScheduled = true;
    this.options.afterPoll(this.sweep);
  }

  /**
   * One generation ends: reserves granted or renewed before the previous sweep and unused since lapse (a
   * full poll has passed), then the room they held goes to the line.
   */
  private runSweep(): void {
    this.sweepScheduled = false;
    for (const member of this.reservers) {
      if (member.reserveTurn < this.turn) this.dropReserve(member);
    }
    this.turn++;
    this.admit();
    this.scheduleSweep();
  }
}
