/**
 * Client side of the data channel's reliability layer (spec §5, §7, §8): sequence numbers, per-message
 * acks, the reorder buffer, resends with RTO backoff, the send window, pause/start publication and
 * link loss/resume.
 *
 * A transport-independent state machine: it owns no socket and no timer. The I/O layer hands it every
 * incoming binary frame ({@link ReliableChannel.receive}), gives it a `sendFrame` function while the
 * WebSocket is up ({@link ReliableChannel.attach}) and calls {@link ReliableChannel.tick} every 50 ms.
 * Outgoing sequenced messages are `input_stream_data`; incoming ones are `output_stream_data`.
 */
import { EventEmitter } from 'node:events';
import { ProtocolError } from '../errors.js';
import type { Logger } from '../log.js';
import { HEADER, HeaderFlags, MessageType, SCHEMA_VERSION } from './constants.js';
import type { ClientMessage } from './message.js';
import { allocateFrame, decodeMessage, sealFrame } from './message.js';
import type { ChannelClosed } from './payloads.js';
import { decodeAcknowledge, decodeChannelClosed, encodeAcknowledgeMessage } from './payloads.js';
import { RTT, RttEstimator } from './rtt.js';

/** Interval at which the I/O layer is expected to call {@link ReliableChannel.tick}, ms (daemon default, spec §7.3). */
export const RELIABLE_TICK_MS = 50;

/**
 * While paused with the link up, resend the oldest un-acked message once per this period, ms, as a
 * probe that the peer is still there (daemon default, spec §8 "SHOULD probe … after 60 s").
 */
export const PAUSE_PROBE_MS = 60_000;

/** Tuning of one {@link ReliableChannel}; validated by the config layer. */
export interface ReliableChannelOptions {
  /** Max un-acked sequenced messages transmitted at once (spec §9.6). */
  sendWindowMessages: number;
  /** Max out-of-order incoming messages buffered (spec §7.2). */
  reorderLimitMessages: number;
  /**
   * Give-up period, ms (spec §7.3, §8): no ack progress while attached for this long (paused time counts),
   * or one pause that lasts this long ⇒ 'stalled'; the next expected incoming message missing this long while
   * later ones wait in the reorder buffer ⇒ 'wedged'.
   */
  giveUpMs: number;
}

/** Narrow functions the channel needs from its owner (house style §11). */
export interface ReliableChannelDeps {
  /** Monotonic clock, ms. */
  now(): number;
  /**
   * In-order delivery of a sequenced incoming message. Return false to refuse it: then it is NOT
   * consumed and NOT acked (the agent resends later); call retryDelivery() when ready again.
   */
  deliver(message: ClientMessage): boolean;
  logger: Logger;
}

/** Counters for metrics and tests. All are totals since construction; they survive detach/attach. */
export interface ReliableChannelStats {
  /** Binary frames handed to `sendFrame` (acks, first transmissions and resends). */
  framesSent: number;
  /** Binary frames passed to `receive`, valid or not. */
  framesReceived: number;
  /** Sequenced messages transmitted for the first time. */
  dataMessagesSent: number;
  /** Retransmissions of sequenced messages (timer, attach, resume and pause probe). */
  resends: number;
  /** Acks transmitted (first acks and re-acks). */
  acksSent: number;
  /** Valid `acknowledge` messages received (matching or not). */
  acksReceived: number;
  /** Incoming sequenced messages already delivered or already buffered. */
  duplicatesReceived: number;
  /** Incoming sequenced messages stored in the reorder buffer ahead of a gap. */
  outOfOrderReceived: number;
  /** Out-of-order messages dropped without ack because the reorder buffer was full. */
  reorderDropped: number;
  /** Times `deliver()` returned false. */
  refusedDeliveries: number;
  /** Malformed frames or payloads (dropped without ack). */
  protocolErrors: number;
  /** Frames of a message type the client does not handle (ignored, never acked). */
  unknownMessages: number;
  /** RTT samples fed to the estimator (first-attempt acks only, Karn's rule). */
  rttSamples: number;
}

/** Events of {@link ReliableChannel} and their arguments. */
export interface ReliableChannelEvents {
  /** `unacked` dropped below the window after `send()` returned false: produce again. */
  drain: [];
  /** `pause_publication` received: new data and resends are held. */
  pause: [];
  /** The pause ended (start_publication, incoming data/ack, or a new link). */
  resume: [];
  /** The service ended the session (spec §10.1). */
  channelClosed: [closed: ChannelClosed];
  /** A frame or payload was malformed and dropped without ack. */
  protocolError: [error: ProtocolError];
  /**
   * No ack progress for `giveUpMs` while attached, or a pause that lasted `giveUpMs` (spec §7.3, §8: a pause
   * counts toward the give-up). Emitted once per stall.
   */
  stalled: [];
  /**
   * The next expected incoming message has been missing for `giveUpMs` while `buffered` later ones wait in the
   * reorder buffer: the agent resends only its head, so a message it no longer holds never comes and the
   * session is dead although the link is up (issue 10). Emitted once per gap.
   */
  wedged: [expected: number, buffered: number, sinceMs: number];
  /** A message type the client does not handle arrived; it was ignored and not acked (spec §4.2). */
  unknownMessage: [messageType: string];
  /** The peer acknowledged our sequence number `seq`. */
  acked: [seq: number];
}

/** One committed outgoing message (spec §7.3 outgoing buffer entry). */
interface OutgoingEntry {
  /** Client sequence number, assigned at commit. */
  readonly seq: number;
  /** The encoded frame; every (re)transmission sends exactly these bytes (spec §7.4). */
  readonly frame: Buffer;
  /** Monotonic time of the first transmission, ms; -1 while queued. */
  firstSentAt: number;
  /** Monotonic time of the latest transmission, ms; -1 while queued. */
  lastSentAt: number;
  /** Retransmissions so far; 0 means an ack gives a valid RTT sample (Karn's rule). */
  attempts: number;
  /** Timeout of the latest transmission, ms: base RTO doubled per timer resend, capped at 1 s. */
  rto: number;
}

/** One incoming message held for in-order delivery. */
interface BufferedIncoming {
  readonly message: ClientMessage;
  /** False only for an in-order head that `deliver()` refused: it is acked when finally delivered. */
  acked: boolean;
}

/**
 * The client end of the sequenced, acknowledged message stream (spec §7). See the module comment for
 * how the I/O layer drives it.
 *
 * Outgoing: every `send()` commits a message with the next sequence number into an insertion-ordered
 * map (= sequence order). Transmitted entries form a prefix of that map, queued ones the suffix
 * `[firstUnsentSeq, nextSendSequence)`, so acks are O(1) and the resend scan visits at most one window.
 */
export class ReliableChannel extends EventEmitter<ReliableChannelEvents> {
  private readonly options: ReliableChannelOptions;
  private readonly deps: ReliableChannelDeps;
  private readonly log: Logger;
  private readonly rtt = new RttEstimator();
  private readonly counters: ReliableChannelStats = {
    framesSent: 0,
    framesReceived: 0,
    dataMessagesSent: 0,
    resends: 0,
    acksSent: 0,
    acksReceived: 0,
    duplicatesReceived: 0,
    outOfOrderReceived: 0,
    reorderDropped: 0,
    refusedDeliveries: 0,
    protocolErrors: 0,
    unknownMessages: 0,
    rttSamples: 0,
  };

  private sendFrame: ((frame: Buffer) => void) | undefined;
  /** Committed, un-acked messages keyed by sequence number, in sequence order. */
  private readonly outgoing = new Map<number, OutgoingEntry>();
  private nextSeq = 0;
  /** Lowest sequence number not yet transmitted even once. */
  private firstUnsentSeq = 0;
  /** Earliest `lastSentAt + rto` over transmitted entries (may be stale-early, never late). */
  private nextResendAt = Number.POSITIVE_INFINITY;
  /** `send()` returned false and 'drain' is owed. */
  private drainOwed = false;
  /** Non-zero while `deliver()` may be running: new data waits so acks go first. */
  private deliveryHold = 0;

  /** Next incoming sequence number to deliver (spec §7.2 `expected`). */
  private expected = 0;
  /** Highest sequence number of any valid incoming data message seen, delivered or not; -1 before one. */
  private highestSeen = -1;
  /** Reorder buffer: incoming messages with `seq >= expected`, keyed by sequence number. */
  private readonly reorder = new Map<number, BufferedIncoming>();

  private isPaused = false;
  private pausedAt = 0;
  private lastProbeAt = 0;
  /** Start of the current "no ack progress" period (only time attached and unpaused counts). */
  private progressAt = 0;
  private stallReported = false;
  /** `expected` when the current receive gap was first seen; -1 while there is no gap. */
  private gapExpected = -1;
  /** When the current receive gap was first seen (injected clock), ms. */
  private gapSince = 0;
  private wedgeReported = false;

  constructor(options: ReliableChannelOptions, deps: ReliableChannelDeps) {
    super();
    this.options = options;
    this.deps = deps;
    this.log = deps.logger;
  }

  /** Whether a transport is linked (between `attach()` and `detach()`). */
  get attached(): boolean {
    return this.sendFrame !== undefined;
  }

  /** Committed messages not yet acked (in flight + queued). */
  get unacked(): number {
    return this.outgoing.size;
  }

  /** Whether `pause_publication` is in force (spec §8). */
  get paused(): boolean {
    return this.isPaused;
  }

  /** Sequence number the next `send()` will assign (spec §7.1). */
  get nextSendSequence(): number {
    return this.nextSeq;
  }

  /** Next incoming sequence number to be delivered (spec §7.2). */
  get expectedReceiveSequence(): number {
    return this.expected;
  }

  /**
   * Highest sequence number of any valid `output_stream_data` received so far (in order, early, duplicate
   * or dropped for lack of reorder room); -1 before the first. Basic mode's connection boundary uses it.
   */
  get highestReceivedSequence(): number {
    return this.highestSeen;
  }

  /** Live counters (a read-only view of the channel's own object: no copy per read). */
  get stats(): Readonly<ReliableChannelStats> {
    return this.counters;
  }

  /** Messages in the reorder buffer (bounded by `reorderLimitMessages`). */
  get reorderBuffered(): number {
    return this.reorder.size;
  }

  /** Transmitted, un-acked messages (bounded by `sendWindowMessages`). */
  private get inFlight(): number {
    return this.outgoing.size - (this.nextSeq - this.firstUnsentSeq);
  }

  /**
   * Link up with a new transport send function; resends every un-acked message oldest first (bounded
   * by the window). Counters/buffers survive detach/attach (ResumeSession, spec §10.3). A new link
   * also clears a pause: the service sends `pause_publication` again on the new socket if the peer is
   * still away, whereas a `start_publication` sent while we were disconnected would be lost for good.
   */
  attach(sendFrame: (frame: Buffer) => void): void {
    this.sendFrame = sendFrame;
    const now = this.deps.now();
    this.progressAt = now;
    // A new link gets the full give-up to fill an old gap: the agent resends its head on it.
    this.gapExpected = -1;
    const wasPaused = this.isPaused;
    this.isPaused = false;
    this.resendAll(now);
    this.pump(now);
    if (wasPaused) this.emit('resume');
  }

  /** Link down: nothing is sent until attach(); send() keeps committing. */
  detach(): void {
    this.sendFrame = undefined;
  }

  /**
   * Commit a sequenced message (assigns the next client sequence number at commit time, spec §7.1),
   * transmit it if attached, not paused and within the window, else queue it. Never drops. The payload
   * is copied into the frame at once, so the caller may reuse its buffer. Returns false when
   * un-acked+queued >= sendWindowMessages (caller should stop producing until 'drain').
   */
  send(payloadType: number, payload: Buffer): boolean {
    const frame = allocateFrame(payload.length);
    payload.copy(frame, HEADER.PAYLOAD_OFFSET);
    return this.commit(payloadType, frame);
  }

  /**
   * Like {@link send}, but the payload is written by `fill` straight into the new frame (at most
   * `maxPayloadBytes` at the offset it is given): one allocation per message, no payload copy (issue 7).
   * `fill` returns how many bytes it wrote; when it writes none, nothing is committed and no sequence number
   * is used. Returns the payload bytes committed (0 = nothing). The window check is the caller's: compare
   * {@link unacked} with the window before calling, as with `send()`'s return value.
   */
  sendFrom(
    payloadType: number,
    maxPayloadBytes: number,
    fill: (target: Buffer, offset: number, maxBytes: number) => number,
  ): number {
    const frame = allocateFrame(maxPayloadBytes);
    const written = fill(frame, HEADER.PAYLOAD_OFFSET, maxPayloadBytes);
    if (!(written > 0)) return 0;
    const length = Math.min(written, maxPayloadBytes);
    this.commit(
      payloadType,
      length === maxPayloadBytes ? frame : frame.subarray(0, HEADER.PAYLOAD_OFFSET + length),
    );
    return length;
  }

  /** Seal `frame` (payload in place) with the next sequence number and commit it; see {@link send}. */
  private commit(payloadType: number, frame: Buffer): boolean {
    const seq = this.nextSeq;
    sealFrame(frame, {
      messageType: MessageType.InputStreamData,
      schemaVersion: SCHEMA_VERSION,
      createdDate: Date.now(),
      sequenceNumber: seq,
      flags: HeaderFlags.Data,
      messageId: undefined,
      payloadType,
    });
    const now = this.deps.now();
    if (this.outgoing.size === 0) {
      this.progressAt = now;
      this.stallReported = false;
    }
    this.outgoing.set(seq, { seq, frame, firstSentAt: -1, lastSentAt: -1, attempts: 0, rto: 0 });
    this.nextSeq = seq + 1;
    this.pump(now);
    if (this.outgoing.size >= this.options.sendWindowMessages) {
      this.drainOwed = true;
      return false;
    }
    return true;
  }

  /**
   * Validate and handle one incoming binary frame. Never throws: malformed frames are counted, emitted
   * as 'protocolError' and dropped without ack. (Exceptions thrown by `deliver()` or by event listeners
   * are the owner's bugs and do propagate; the receive state is then left unadvanced.)
   */
  receive(frame: Buffer): void {
    this.counters.framesReceived++;
    let message: ClientMessage;
    try {
      message = decodeMessage(frame);
    } catch (err) {
      this.protocolError(err, 'dropped malformed frame');
      return;
    }
    switch (message.messageType) {
      case MessageType.OutputStreamData:
        this.withDeliveryHold(() => this.onData(message));
        if (this.isPaused) this.clearPause();
        else this.pump(this.deps.now());
        break;
      case MessageType.Acknowledge:
        this.onAcknowledge(message);
        break;
      case MessageType.PausePublication:
        this.onPause();
        break;
      case MessageType.StartPublication:
        this.clearPause();
        break;
      case MessageType.ChannelClosed:
        this.onChannelClosed(message);
        break;
      default:
        // input_stream_data and agent_session_state never travel towards a client either.
        this.counters.unknownMessages++;
        this.log.warn('ignoring unexpected message type', { messageType: message.messageType });
        this.emit('unknownMessage', message.messageType);
    }
  }

  /** Resend scan, give-up and wedge checks; call every 50 ms. Detached time counts for none of them. */
  tick(): void {
    if (this.sendFrame === undefined) return;
    const now = this.deps.now();
    this.checkWedged(now);
    if (this.isPaused) this.probeWhilePaused(now);
    else if (now >= this.nextResendAt) this.resendExpired(now);
    if (this.stallReported) return;
    // Spec §8: a pause counts toward the give-up, whether or not anything is waiting for an ack.
    const pausedMs = this.isPaused ? now - this.pausedAt : 0;
    const stalledMs = this.outgoing.size > 0 ? now - this.progressAt : 0;
    if (pausedMs >= this.options.giveUpMs || stalledMs >= this.options.giveUpMs) {
      this.stallReported = true;
      this.log.warn(
        pausedMs >= this.options.giveUpMs ? 'paused too long; giving up' : 'no ack progress; giving up',
        {
          unacked: this.outgoing.size,
          sinceMs: Math.max(pausedMs, stalledMs),
        },
      );
      this.emit('stalled');
    }
  }

  /**
   * Receive-side wedge detection: the next expected message missing while later ones wait (a held, refused
   * head is not a gap). Times the gap per value of `expected`, so any delivery restarts it.
   */
  private checkWedged(now: number): void {
    if (this.reorder.size === 0 || this.reorder.has(this.expected)) {
      this.gapExpected = -1;
      return;
    }
    if (this.gapExpected !== this.expected) {
      this.gapExpected = this.expected;
      this.gapSince = now;
      this.wedgeReported = false;
      return;
    }
    const sinceMs = now - this.gapSince;
    if (this.wedgeReported || sinceMs < this.options.giveUpMs) return;
    this.wedgeReported = true;
    this.log.warn('next agent message missing for the give-up period; the session is wedged', {
      expected: this.expected,
      buffered: this.reorder.size,
      sinceMs,
    });
    this.emit('wedged', this.expected, this.reorder.size, sinceMs);
  }

  /** Re-offer refused in-order messages (head of reorder buffer) to deliver(). */
  retryDelivery(): void {
    this.withDeliveryHold(() => this.drainReorder());
    this.pump(this.deps.now());
  }

  /**
   * Run `fn` (which calls `deliver()`) with transmission of new data held, so data the owner sends from
   * inside `deliver()` goes out after the ack of the message being delivered (spec §7.4: acks first).
   */
  private withDeliveryHold(fn: () => void): void {
    this.deliveryHold++;
    try {
      fn();
    } finally {
      this.deliveryHold--;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Incoming sequenced data (spec §7.2)

  /** Handle one `output_stream_data` message; may advance `expected` and deliver buffered successors. */
  private onData(message: ClientMessage): void {
    const seq = message.sequenceNumber;
    if (seq > this.highestSeen) this.highestSeen = seq;
    if (seq < this.expected) {
      this.counters.duplicatesReceived++;
      this.sendAck(message);
      return;
    }
    if (seq === this.expected) {
      if (this.offer(message)) {
        this.reorder.delete(seq);
        this.expected = seq + 1;
        // Receive state already advanced: a lost ack only causes a duplicate, never a redelivery (#19).
        this.sendAck(message);
        this.drainReorder();
        return;
      }
      // Refused: keep one copy so retryDelivery() need not wait for the agent's resend.
      const held = this.reorder.get(seq);
      if (held === undefined && this.reorder.size < this.options.reorderLimitMessages) {
        this.reorder.set(seq, { message, acked: false });
      }
      return;
    }
    const held = this.reorder.get(seq);
    if (held !== undefined) {
      this.counters.duplicatesReceived++;
      this.sendAck(message);
      held.acked = true;
      return;
    }
    if (this.reorder.size >= this.options.reorderLimitMessages) {
      this.counters.reorderDropped++;
      if (this.log.debugEnabled) {
        this.log.debug('reorder buffer full; dropped without ack', { seq, expected: this.expected });
      }
      return;
    }
    this.counters.outOfOrderReceived++;
    this.reorder.set(seq, { message, acked: true });
    this.sendAck(message);
  }

  /** Offer one in-order message to the owner; counts refusals. */
  private offer(message: ClientMessage): boolean {
    if (this.deps.deliver(message)) return true;
    this.counters.refusedDeliveries++;
    return false;
  }

  /** Deliver `reorder[expected]` repeatedly until a gap or a refusal. */
  private drainReorder(): void {
    for (;;) {
      const head = this.reorder.get(this.expected);
      if (head === undefined) return;
      if (!this.offer(head.message)) return;
      this.reorder.delete(this.expected);
      this.expected++;
      if (!head.acked) this.sendAck(head.message);
    }
  }

  /** Ack one received sequenced message, ahead of any data (spec §5, §7.4). Not sent while detached. */
  private sendAck(message: ClientMessage): void {
    if (this.sendFrame === undefined) return;
    const frame = encodeAcknowledgeMessage(
      {
        acknowledgedMessageType: MessageType.OutputStreamData,
        acknowledgedMessageId: message.messageId,
        acknowledgedMessageSequenceNumber: message.sequenceNumber,
        isSequentialMessage: true,
      },
      Date.now(),
    );
    this.counters.acksSent++;
    this.write(frame);
  }

  // -------------------------------------------------------------------------------------------
  // Incoming acks and service messages (spec §5, §8, §10.1)

  /** Handle an `acknowledge`: match by sequence number only, Karn's rule, open the window. */
  private onAcknowledge(message: ClientMessage): void {
    let seq: number;
    try {
      seq = decodeAcknowledge(message.payload).acknowledgedMessageSequenceNumber;
    } catch (err) {
      this.protocolError(err, 'dropped malformed acknowledge');
      return;
    }
    this.counters.acksReceived++;
    const now = this.deps.now();
    const entry = this.outgoing.get(seq);
    // Unknown, already acked or never transmitted (a bogus ack cannot skip a queued message).
    if (entry !== undefined && entry.firstSentAt >= 0) {
      this.outgoing.delete(seq);
      if (entry.attempts === 0) {
        this.rtt.sample(now - entry.firstSentAt);
        this.counters.rttSamples++;
      }
      this.progressAt = now;
      this.stallReported = false;
      this.emit('acked', seq);
    }
    if (this.isPaused) this.clearPause();
    else this.pump(now);
    if (this.drainOwed && this.outgoing.size < this.options.sendWindowMessages) {
      this.drainOwed = false;
      this.emit('drain');
    }
  }

  /** `pause_publication`: hold new data and resends, keep acking (spec §8); the give-up clock keeps running. */
  private onPause(): void {
    if (this.isPaused) return;
    this.isPaused = true;
    const now = this.deps.now();
    this.pausedAt = now;
    this.lastProbeAt = now;
    this.log.info('peer away: publication paused');
    this.emit('pause');
  }

  /**
   * End a pause: resend the un-acked messages whose RTO expired meanwhile (after a real outage that is all of
   * them, spec §8), then queued data. Only the expired ones: a pause that flaps must not resend the whole
   * window on every transition (issue 10). Neither the give-up clock nor its report is reset: only an ack is
   * progress.
   */
  private clearPause(): void {
    if (!this.isPaused) return;
    this.isPaused = false;
    const now = this.deps.now();
    this.log.info('peer back: publication resumed', { pausedMs: now - this.pausedAt });
    if (now >= this.nextResendAt) this.resendExpired(now);
    this.pump(now);
    // Emitted last: a listener that sends at once must queue behind the resends (spec §7.4).
    this.emit('resume');
  }

  /** `channel_closed`: an unparseable payload still ends the session, with an empty reason. */
  private onChannelClosed(message: ClientMessage): void {
    let closed: ChannelClosed;
    try {
      closed = decodeChannelClosed(message.payload);
    } catch (err) {
      this.counters.protocolErrors++;
      this.log.warn('channel_closed payload unreadable', { error: String(err) });
      closed = { sessionId: '', output: '' };
    }
    this.emit('channelClosed', closed);
  }

  /** Count, log and emit a malformed-input error; never rethrows. */
  private protocolError(err: unknown, what: string): void {
    const error =
      err instanceof ProtocolError
        ? err
        : new ProtocolError('PF_ERR_PAYLOAD', `${what}: ${String(err)}`, { cause: err });
    this.counters.protocolErrors++;
    this.log.warn(what, { code: error.code, error: error.message });
    this.emit('protocolError', error);
  }

  // -------------------------------------------------------------------------------------------
  // Outgoing transmission (spec §7.3, §7.4, §9.6)

  /** Transmit queued messages, oldest first, while the link is usable and the window has room. */
  private pump(now: number): void {
    if (this.sendFrame === undefined || this.isPaused || this.deliveryHold > 0) return;
    const window = this.options.sendWindowMessages;
    let inFlight = this.inFlight;
    while (this.firstUnsentSeq < this.nextSeq && inFlight < window) {
      const entry = this.outgoing.get(this.firstUnsentSeq);
      this.firstUnsentSeq++;
      if (entry === undefined) continue;
      entry.firstSentAt = now;
      entry.lastSentAt = now;
      entry.rto = this.rtt.rtoMs;
      this.nextResendAt = Math.min(this.nextResendAt, now + entry.rto);
      this.counters.dataMessagesSent++;
      inFlight++;
      this.write(entry.frame);
    }
  }

  /**
   * Retransmit every transmitted, un-acked entry at once, oldest first, with a fresh base RTO (new link
   * or end of a pause: earlier losses say nothing about the new path). Bounded by the window because
   * at most a window's worth is ever in flight.
   */
  private resendAll(now: number): void {
    if (this.sendFrame === undefined) return;
    let next = Number.POSITIVE_INFINITY;
    for (const entry of this.outgoing.values()) {
      if (entry.seq >= this.firstUnsentSeq) break;
      entry.attempts++;
      entry.lastSentAt = now;
      entry.rto = this.rtt.rtoMs;
      next = Math.min(next, now + entry.rto);
      this.counters.resends++;
      this.write(entry.frame);
    }
    this.nextResendAt = next;
  }

  /**
   * Timer resends: every entry with `now − lastSentAt > rto`, oldest first, at most one window per
   * call; each resend doubles that entry's RTO up to 1 s. Recomputes the earliest deadline.
   */
  private resendExpired(now: number): void {
    let budget = this.options.sendWindowMessages;
    let next = Number.POSITIVE_INFINITY;
    for (const entry of this.outgoing.values()) {
      if (entry.seq >= this.firstUnsentSeq) break;
      if (budget > 0 && now - entry.lastSentAt > entry.rto) {
        budget--;
        entry.attempts++;
        entry.lastSentAt = now;
        entry.rto = Math.min(RTT.MAX_RTO_MS, entry.rto * 2);
        this.counters.resends++;
        if (this.log.debugEnabled) {
          this.log.debug('resend', { seq: entry.seq, attempts: entry.attempts, rtoMs: entry.rto });
        }
        this.write(entry.frame);
      }
      next = Math.min(next, entry.lastSentAt + entry.rto);
      if (this.sendFrame === undefined) break;
    }
    this.nextResendAt = next;
  }

  /** While paused with the link up, resend the head once per {@link PAUSE_PROBE_MS} (spec §8). */
  private probeWhilePaused(now: number): void {
    if (now - this.lastProbeAt < PAUSE_PROBE_MS) return;
    this.lastProbeAt = now;
    const head = this.outgoing.values().next();
    if (head.done === true || head.value.seq >= this.firstUnsentSeq) return;
    head.value.attempts++;
    head.value.lastSentAt = now;
    this.counters.resends++;
    this.write(head.value.frame);
  }

  /** Hand one frame to the transport. A throwing transport loses only this write; resends recover it (#20). */
  private write(frame: Buffer): void {
    const send = this.sendFrame;
    if (send === undefined) return;
    this.counters.framesSent++;
    try {
      send(frame);
    } catch (err) {
      this.log.warn('sendFrame failed; relying on resend', { error: String(err) });
    }
  }
}
