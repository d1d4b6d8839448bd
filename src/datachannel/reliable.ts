/**
 * Client side of the data channel's reliability layer (spec §5, §7, §8): sequence numbers, per-message
 * acks, the reorder buffer, resends with RTO backoff, the send window, pause/start publication and
 * link loss/resume.
 *
 * A transport-independent state machine: it owns no socket and no timer. The I/O layer hands it every
 * incoming binary frame ({@link ReliableChannel.receive}), gives it a {@link ChannelTransport} while the
 * WebSocket is up ({@link ReliableChannel.attach}) and calls {@link ReliableChannel.tick} every 50 ms.
 * Outgoing sequenced messages are `input_stream_data`; incoming ones are `output_stream_data`.
 *
 * Send timing (issue 10 item 4): a message's clock starts when its copy has left the transport (the
 * transport's "written" notification), not when it was handed over, and a copy still waiting in the
 * transport is never resent. The retransmission timer is measured from the later of that moment and the
 * latest ack progress, so a slow but moving uplink (acks arriving in order while the rest waits in socket
 * buffers) never triggers timer resends; a message lost while later ones are acked is found by the
 * RACK-style rule ({@link RACK_REORDER_WINDOW_MS}). Bytes waiting in the transport stop new transmissions
 * above {@link SEND_QUEUE_LIMIT_BYTES}.
 */
import { EventEmitter } from 'node:events';
import { ProtocolError } from '../errors.js';
import type { Logger } from '../log.js';
import { HEADER, HeaderFlags, MessageType, SCHEMA_VERSION } from './constants.js';
import type { ClientMessage, FrameHeader, InboundMessage } from './message.js';
import { allocateFrame, decodeInbound, sealFrame } from './message.js';
import type { ChannelClosed } from './payloads.js';
import {
  acknowledgedSequenceNumberOf,
  decodeChannelClosed,
  encodeOutputAcknowledgeMessage,
} from './payloads.js';
import { RTT, RttEstimator } from './rtt.js';

/** Interval at which the I/O layer is expected to call {@link ReliableChannel.tick}, ms (daemon default, spec §7.3). */
export const RELIABLE_TICK_MS = 50;

/**
 * While paused with the link up, resend the oldest un-acked message once per this period, ms, as a
 * probe that the peer is still there (daemon default, spec §8 "SHOULD probe … after 60 s").
 */
export const PAUSE_PROBE_MS = 60_000;

/**
 * After HandshakeComplete the agent neither acks nor consumes in-order Output until its port plugin is set
 * up (spec §6.4, "the first smux SYN/PSH is often resent once"). Meanwhile the oldest message sent after the
 * handshake is resent this often instead of waiting out the 200 ms RTO floor, ms (our default): the first
 * connection of a new session then waits for the agent's set-up, not for our timer. Cost: a few copies of one
 * message per session start; the agent drops the copies it has consumed already (seq < expected).
 */
export const NOT_READY_PROBE_MS = 20;

/** How long after the handshake {@link NOT_READY_PROBE_MS} probing lasts at most, ms (our default). */
export const NOT_READY_PROBE_WINDOW_MS = 1_000;

/**
 * Most probe copies per session start (our default): 10 × 20 ms covers the 200 ms RTO floor, after which the
 * ordinary timer takes over, so a slow link is never fed more than 10 extra copies of one message.
 */
export const NOT_READY_PROBE_LIMIT = 10;

/**
 * Probing happens only while at most this many messages are in flight (our default): a connection's SYN and
 * its first data. A bulk upload that starts at once fills the window; its head is left to the RTO, so probe
 * copies never pile up in a slow uplink in front of a window of data.
 */
export const NOT_READY_PROBE_MAX_IN_FLIGHT = 2;

/**
 * Most bytes the transport may hold not yet written out (ws `bufferedAmount`) before the channel stops
 * handing it new messages, bytes (our default). Resends and acks are not held back by it, but at most one
 * copy of a message ever waits in the transport, so the transport holds at most this plus one window of
 * messages plus acks.
 */
export const SEND_QUEUE_LIMIT_BYTES = 64 * 1024;

/**
 * A transmitted message not yet acked when a message that left the transport after it has been acked, and
 * older than that message's round trip plus this allowance, is taken as lost and resent at once, ms (our
 * default; RFC 8985 RACK with a fixed reorder window). It covers the reordering the service may apply;
 * over one WebSocket the path is otherwise in order.
 */
export const RACK_REORDER_WINDOW_MS = 50;

/**
 * What the channel needs from the transport while linked (see docs/architecture.md, Conventions): a way to
 * send and a reading of what is still queued. A plain `(frame) => void` function is taken as a transport that
 * writes at once.
 */
export interface ChannelTransport {
  /**
   * Hand one frame to the transport. The transport must not modify `frame` (it is kept for resends, spec
   * §7.4). When given, `onWritten` is called at most once: with no argument (or null) once the frame has left
   * the transport (for ws: the `send` callback, i.e. handed to the kernel), with an error if it never will.
   */
  send(frame: Buffer, onWritten?: (err?: Error | null) => void): void;
  /** Bytes handed to `send` and not yet written out (for ws: `bufferedAmount`). */
  queuedBytes(): number;
}

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

/** Narrow functions the channel needs from its owner (see docs/architecture.md, Conventions). */
export interface ReliableChannelDeps {
  /** Monotonic clock, ms. */
  now(): number;
  /**
   * In-order delivery of a sequenced incoming message. Return false to refuse it: then it is NOT
   * consumed and NOT acked (the agent resends later); call retryDelivery() when ready again.
   */
  deliver(message: ClientMessage): boolean;
  /**
   * The peer acknowledged our sequence number `seq` (the same moment as the 'acked' event): the owner's hook
   * on the ack path without an emit per ack (issue 16).
   */
  acked?(seq: number): void;
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
  /** Resends of messages found lost by a later message's ack (RACK rule), a subset of `resends`. */
  rackResends: number;
  /** Ticks at which a due timer resend was skipped because the previous copy had not left the transport. */
  resendsHeldQueued: number;
  /** Largest `queuedBytes()` of the transport seen right after a write, bytes. */
  peakQueuedBytes: number;
  /** Resends by the post-handshake not-ready probe ({@link NOT_READY_PROBE_MS}), a subset of `resends`. */
  notReadyProbes: number;
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
  /** The peer acknowledged our sequence number `seq`. Emitted only while listened to (see `deps.acked`). */
  acked: [seq: number];
}

/**
 * How {@link ReliableChannel.receive} decodes: digests always verified (spec §4.1); payloads copied out of the
 * frame only for sequenced data, which outlives the call (the frame may be a slice of a socket read).
 */
const RECEIVE_DECODE = Object.freeze({ verifyDigest: true, copyPayload: 'stream-data' as const });

/**
 * The header fields of every message {@link ReliableChannel} commits: one shared record whose per-message
 * fields are set just before the synchronous {@link sealFrame}, instead of one object per message (issue 16).
 */
const dataHeader: FrameHeader = {
  messageType: MessageType.InputStreamData,
  schemaVersion: SCHEMA_VERSION,
  createdDate: 0,
  sequenceNumber: 0,
  flags: HeaderFlags.Data,
  messageId: undefined,
  payloadType: 0,
};

/** One committed outgoing message (spec §7.3 outgoing buffer entry). */
interface OutgoingEntry {
  /** Client sequence number, assigned at commit. */
  readonly seq: number;
  /** The encoded frame; every (re)transmission sends exactly these bytes (spec §7.4). */
  readonly frame: Buffer;
  /** Monotonic time the first copy was handed to the transport, ms; -1 while never transmitted. */
  firstSentAt: number;
  /**
   * Monotonic time the latest copy left the transport, ms; -1 while that copy still waits in it (or was
   * never sent). Timers run from here: a copy that has not left is never resent.
   */
  lastSentAt: number;
  /** Link generation of the latest copy: written notifications of an older link are ignored. */
  link: number;
  /** Retransmissions so far; 0 means an ack gives a valid RTT sample (Karn's rule). */
  attempts: number;
  /** Timeout of the latest transmission, ms: base RTO doubled per timer resend, capped at 1 s. */
  rto: number;
}

/** One incoming message held for in-order delivery. */
interface BufferedIncoming {
  readonly message: InboundMessage;
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
    rackResends: 0,
    resendsHeldQueued: 0,
    peakQueuedBytes: 0,
    notReadyProbes: 0,
  };

  private transport: ChannelTransport | undefined;
  /** Incremented on every attach; tags copies so a dead link's late notifications are ignored. */
  private linkGeneration = 0;
  /** Latest ack that removed a transmitted message on this link (or the attach), monotonic ms. */
  private lastAckProgressAt = 0;
  /** RACK: when the most recently sent acked message left the transport, ms; -1 none on this link. */
  private rackSentAt = -1;
  /** RACK: round trip of that message, ms. */
  private rackRttMs = 0;
  /** RACK: its sequence number (orders copies that left at the same moment). */
  private rackSeq = -1;
  /** Smallest first-attempt round trip seen, ms (guards RACK against acks of earlier copies). */
  private minRttMs = Number.POSITIVE_INFINITY;
  /** Committed, un-acked messages keyed by sequence number, in sequence order. */
  private readonly outgoing = new Map<number, OutgoingEntry>();
  private nextSeq = 0;
  /** Lowest sequence number not yet transmitted even once. */
  private firstUnsentSeq = 0;
  /** `send()` returned false and 'drain' is owed. */
  private drainOwed = false;
  /** True inside {@link pump}: a written notification must not start a second loop. */
  private pumping = false;
  /** True inside the transport's `send`: a synchronous written notification pumps nothing. */
  private writing = false;
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
  /**
   * Not-ready probing (see {@link NOT_READY_PROBE_MS}): the first sequence number sent after the handshake,
   * and when probing ends, ms; -1 = not probing.
   */
  private notReadyFromSeq = -1;
  private notReadyUntil = -1;
  /** The message the probe resent (its acks then say nothing about which copy arrived: no RACK). */
  private notReadyProbedSeq = -1;
  /** Start of the current "no ack progress" period (only time attached and unpaused counts). */
  private progressAt = 0;
  private stallReported = false;
  /** `expected` when the current receive gap was first seen; -1 while there is no gap. */
  private gapExpected = -1;
  /** When the current receive gap was first seen (injected clock), ms. */
  private gapSince = 0;
  private wedgeReported = false;
  /**
   * Waiters of {@link whenAckedThrough}, ascending `seq`; each is resolved by the ack that leaves no un-acked
   * message at or below its `seq`. Bounded by the owner (one per connection being opened, see
   * src/forward/session.ts).
   */
  private readonly ackWaiters: { seq: number; resolve: () => void }[] = [];

  constructor(options: ReliableChannelOptions, deps: ReliableChannelDeps) {
    super();
    this.options = options;
    this.deps = deps;
    this.log = deps.logger;
  }

  /** Whether a transport is linked (between `attach()` and `detach()`). */
  get attached(): boolean {
    return this.transport !== undefined;
  }

  /** Committed messages not yet acked (in flight + queued). */
  get unacked(): number {
    return this.outgoing.size;
  }

  /**
   * True while the send window has room for one more committed message (`unacked < sendWindowMessages`,
   * spec §9.6): the producer's test before {@link sendFrom}, owned by the channel that owns the window.
   */
  get canSend(): boolean {
    return this.outgoing.size < this.options.sendWindowMessages;
  }

  /** Whether `pause_publication` is in force (spec §8). */
  get paused(): boolean {
    return this.isPaused;
  }

  /** Sequence number the next `send()` will assign (spec §7.1). */
  get nextSendSequence(): number {
    return this.nextSeq;
  }

  /** Lowest sequence number not yet acked; {@link nextSendSequence} when every committed message is. */
  get lowestUnacked(): number {
    // The map is in sequence order (see the class comment): its first key is the oldest un-acked message.
    for (const seq of this.outgoing.keys()) return seq;
    return this.nextSeq;
  }

  /**
   * True once every message with sequence number ≤ `seq` has been acked by the peer (spec §5: an ack means the
   * agent consumed the message, §6.4). False for a `seq` not committed yet. O(1).
   */
  ackedThrough(seq: number): boolean {
    return seq < this.lowestUnacked;
  }

  /**
   * Resolves once {@link ackedThrough}(`seq`) holds (at once if it does now). Never rejects: a channel that
   * dies leaves it pending, so the owner races it with its own end. Resolved from the ack path, which looks
   * only at the waiters that are due.
   */
  whenAckedThrough(seq: number): Promise<void> {
    if (this.ackedThrough(seq)) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const waiters = this.ackWaiters;
      let at = waiters.length;
      // Usually appended (connections open in sequence order); otherwise a short walk back keeps the order.
      while (at > 0 && (waiters[at - 1] as { seq: number }).seq > seq) at--;
      waiters.splice(at, 0, { seq, resolve });
    });
  }

  /** Waiters of {@link whenAckedThrough} still pending. */
  get ackWaitersPending(): number {
    return this.ackWaiters.length;
  }

  /** Resolve the waiters that {@link ackedThrough} now satisfies (a prefix of the list). */
  private settleAckWaiters(): void {
    const waiters = this.ackWaiters;
    const low = this.lowestUnacked;
    let due = 0;
    while (due < waiters.length && (waiters[due] as { seq: number }).seq < low) due++;
    if (due === 0) return;
    for (const waiter of waiters.splice(0, due)) waiter.resolve();
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
   * Link up with a new transport; resends every un-acked message oldest first (bounded by the window).
   * Counters/buffers survive detach/attach (ResumeSession, spec §10.3). A new link also clears a pause:
   * the service sends `pause_publication` again on the new socket if the peer is still away, whereas a
   * `start_publication` sent while we were disconnected would be lost for good.
   */
  attach(transport: ChannelTransport | ((frame: Buffer) => void)): void {
    this.transport =
      typeof transport === 'function' ? { send: immediateSend(transport), queuedBytes: () => 0 } : transport;
    this.linkGeneration++;
    const now = this.deps.now();
    this.progressAt = now;
    // A new link gets the full give-up to fill an old gap: the agent resends its head on it.
    this.gapExpected = -1;
    this.lastAckProgressAt = now;
    this.rackSentAt = -1;
    const wasPaused = this.isPaused;
    this.isPaused = false;
    this.resendAll(now);
    this.pump(now);
    if (wasPaused) this.emit('resume');
  }

  /** Link down: nothing is sent until attach(); send() keeps committing. */
  detach(): void {
    this.transport = undefined;
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
   * is used. Returns the payload bytes committed (0 = nothing). The window check is the caller's: test
   * {@link canSend} before calling, as with `send()`'s return value.
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
    dataHeader.createdDate = Date.now();
    dataHeader.sequenceNumber = seq;
    dataHeader.payloadType = payloadType;
    sealFrame(frame, dataHeader);
    const now = this.deps.now();
    if (this.outgoing.size === 0) {
      this.progressAt = now;
      this.stallReported = false;
    }
    this.outgoing.set(seq, { seq, frame, firstSentAt: -1, lastSentAt: -1, link: 0, attempts: 0, rto: 0 });
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
    let message: InboundMessage;
    try {
      // Only sequenced data outlives this call (delivered or buffered): acks and service messages are read
      // here and dropped, so their payload may alias the frame.
      message = decodeInbound(frame, RECEIVE_DECODE);
    } catch (err) {
      this.protocolError(err, 'dropped malformed frame');
      return;
    }
    switch (message.messageType) {
      case MessageType.OutputStreamData:
        // Inline, not through withDeliveryHold(): no closure per message on the hottest path.
        this.deliveryHold++;
        try {
          this.onData(message);
        } finally {
          this.deliveryHold--;
        }
        if (this.isPaused) this.clearPause();
        else if (this.firstUnsentSeq < this.nextSeq) this.pump(this.deps.now());
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

  /**
   * The handshake is complete: until the agent acks the first message sent from now on (or
   * {@link NOT_READY_PROBE_WINDOW_MS} pass), {@link probeNotReady} resends it every {@link NOT_READY_PROBE_MS}.
   */
  expectNotReady(): void {
    this.notReadyFromSeq = this.nextSeq;
    this.notReadyUntil = this.deps.now() + NOT_READY_PROBE_WINDOW_MS;
  }

  /**
   * Resend the first message sent after the handshake if the agent has not acked it and its latest copy left
   * the transport {@link NOT_READY_PROBE_MS} ago or more; call every {@link NOT_READY_PROBE_MS}. Returns false
   * once probing is over (the message was acked, the window passed), so the caller can stop its timer.
   */
  probeNotReady(): boolean {
    if (this.notReadyFromSeq < 0) return false;
    const now = this.deps.now();
    const entry = this.outgoing.get(this.notReadyFromSeq);
    const acked = entry === undefined && this.notReadyFromSeq < this.firstUnsentSeq;
    if (
      acked ||
      now >= this.notReadyUntil ||
      this.isPaused ||
      this.counters.notReadyProbes >= NOT_READY_PROBE_LIMIT
    ) {
      this.notReadyFromSeq = -1;
      return false;
    }
    // Nothing sent yet, detached, or the previous copy has not left the transport: wait for the next call.
    if (entry === undefined || this.transport === undefined || entry.seq >= this.firstUnsentSeq) return true;
    if (entry.lastSentAt < 0 || now - entry.lastSentAt < NOT_READY_PROBE_MS) return true;
    if (this.inFlight > NOT_READY_PROBE_MAX_IN_FLIGHT) return true;
    this.notReadyProbedSeq = entry.seq;
    entry.attempts++;
    this.counters.resends++;
    this.counters.notReadyProbes++;
    this.transmit(entry);
    return true;
  }

  /** Resend scan, give-up and wedge checks; call every 50 ms. Detached time counts for none of them. */
  tick(): void {
    if (this.transport === undefined) return;
    const now = this.deps.now();
    this.checkWedged(now);
    if (this.isPaused) this.probeWhilePaused(now);
    else if (this.inFlight > 0) this.resendExpired(now);
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
  private onData(message: InboundMessage): void {
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
  private offer(message: InboundMessage): boolean {
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
  private sendAck(message: InboundMessage): void {
    if (this.transport === undefined) return;
    const frame = encodeOutputAcknowledgeMessage(message, Date.now());
    this.counters.acksSent++;
    this.write(frame);
  }

  // -------------------------------------------------------------------------------------------
  // Incoming acks and service messages (spec §5, §8, §10.1)

  /** Handle an `acknowledge`: match by sequence number only, Karn's rule, open the window. */
  private onAcknowledge(message: InboundMessage): void {
    let seq: number;
    try {
      seq = acknowledgedSequenceNumberOf(message.payload);
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
      // Clocks run from when the copy left the transport; an ack racing its notification gives no sample.
      if (entry.lastSentAt >= 0) {
        const rttMs = now - entry.lastSentAt;
        if (entry.attempts === 0) {
          this.rtt.sample(rttMs);
          this.counters.rttSamples++;
          this.minRttMs = Math.min(this.minRttMs, rttMs);
        }
        // A resent message's ack may answer an older copy: only trust it when its round trip is plausible.
        if (
          entry.link === this.linkGeneration &&
          (entry.lastSentAt > this.rackSentAt ||
            (entry.lastSentAt === this.rackSentAt && entry.seq > this.rackSeq)) &&
          (entry.attempts === 0 || (rttMs >= this.minRttMs && entry.seq !== this.notReadyProbedSeq))
        ) {
          this.rackSentAt = entry.lastSentAt;
          this.rackSeq = entry.seq;
          this.rackRttMs = rttMs;
        }
      }
      this.lastAckProgressAt = now;
      this.progressAt = now;
      this.stallReported = false;
      if (this.ackWaiters.length > 0 && (this.ackWaiters[0] as { seq: number }).seq < this.lowestUnacked) {
        this.settleAckWaiters();
      }
      this.deps.acked?.(seq);
      if (this.listenerCount('acked') > 0) this.emit('acked', seq);
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
    if (this.inFlight > 0) this.resendExpired(now, Math.min(this.lastAckProgressAt, this.pausedAt));
    this.pump(now);
    // Emitted last: a listener that sends at once must queue behind the resends (spec §7.4).
    this.emit('resume');
  }

  /** `channel_closed`: an unparseable payload still ends the session, with an empty reason. */
  private onChannelClosed(message: InboundMessage): void {
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

  /**
   * Transmit queued messages, oldest first, while the link is usable, the window has room and the
   * transport holds less than {@link SEND_QUEUE_LIMIT_BYTES} not yet written out.
   */
  private pump(now: number): void {
    const transport = this.transport;
    if (transport === undefined || this.isPaused || this.deliveryHold > 0 || this.pumping) return;
    const window = this.options.sendWindowMessages;
    this.pumping = true;
    try {
      let inFlight = this.inFlight;
      while (
        this.firstUnsentSeq < this.nextSeq &&
        inFlight < window &&
        transport.queuedBytes() < SEND_QUEUE_LIMIT_BYTES
      ) {
        const entry = this.outgoing.get(this.firstUnsentSeq);
        this.firstUnsentSeq++;
        if (entry === undefined) continue;
        entry.firstSentAt = now;
        entry.rto = this.rtt.rtoMs;
        this.counters.dataMessagesSent++;
        inFlight++;
        this.transmit(entry);
        if (this.transport !== transport) break;
      }
    } finally {
      this.pumping = false;
    }
  }

  /**
   * Retransmit every transmitted, un-acked entry at once, oldest first, with a fresh base RTO (new link
   * or end of a pause: earlier losses say nothing about the new path). Bounded by the window because
   * at most a window's worth is ever in flight. On the same link a copy still waiting in the transport
   * is not sent again.
   */
  private resendAll(now: number): void {
    if (this.transport === undefined) return;
    this.lastAckProgressAt = now;
    for (const entry of this.outgoing.values()) {
      if (entry.seq >= this.firstUnsentSeq) break;
      entry.rto = this.rtt.rtoMs;
      if (this.waitingInTransport(entry)) continue;
      entry.attempts++;
      this.counters.resends++;
      this.transmit(entry);
    }
  }

  /**
   * Timer and RACK resends, oldest first, at most one window per call. A copy still waiting in the
   * transport is never resent. An entry is resent when
   * - RACK: a message that left the transport after it has been acked, and it is older than that
   *   message's round trip plus {@link RACK_REORDER_WINDOW_MS} (lost while later ones got through), or
   * - RTO: neither it nor any ack progress happened for its RTO (`now − max(left, lastAck) > rto`); each
   *   timer resend doubles that entry's RTO up to 1 s. Measuring from the latest ack progress keeps a slow
   *   uplink, whose queue drains in order, from re-queueing the whole window every RTO.
   * `ackClockFrom` is the ack progress that counts; at the end of a pause it is the progress made before the
   * pause, since acks that arrived while the peer was away say nothing about the messages after them.
   */
  private resendExpired(now: number, ackClockFrom = this.lastAckProgressAt): void {
    let budget = this.options.sendWindowMessages;
    const rackDeadline = this.rackSentAt >= 0 ? this.rackRttMs + RACK_REORDER_WINDOW_MS : Infinity;
    for (const entry of this.outgoing.values()) {
      if (budget <= 0 || entry.seq >= this.firstUnsentSeq) break;
      const left = entry.lastSentAt;
      if (left < 0) {
        if (now - entry.firstSentAt > entry.rto) this.counters.resendsHeldQueued++;
        continue;
      }
      const sentBefore = left < this.rackSentAt || (left === this.rackSentAt && entry.seq < this.rackSeq);
      const lost = sentBefore && now - left >= rackDeadline;
      const expired = now - Math.max(left, ackClockFrom) > entry.rto;
      if (!lost && !expired) continue;
      budget--;
      entry.attempts++;
      if (lost) this.counters.rackResends++;
      else entry.rto = Math.min(RTT.MAX_RTO_MS, entry.rto * 2);
      this.counters.resends++;
      if (this.log.debugEnabled) {
        this.log.debug('resend', { seq: entry.seq, attempts: entry.attempts, rtoMs: entry.rto, lost });
      }
      this.transmit(entry);
      if (this.transport === undefined) break;
    }
  }

  /** While paused with the link up, resend the head once per {@link PAUSE_PROBE_MS} (spec §8). */
  private probeWhilePaused(now: number): void {
    if (now - this.lastProbeAt < PAUSE_PROBE_MS) return;
    this.lastProbeAt = now;
    const head = this.outgoing.values().next();
    if (head.done === true || head.value.seq >= this.firstUnsentSeq) return;
    if (this.waitingInTransport(head.value)) return;
    head.value.attempts++;
    this.counters.resends++;
    this.transmit(head.value);
  }

  /** True when the entry's latest copy, sent on the current link, has not left the transport yet. */
  private waitingInTransport(entry: OutgoingEntry): boolean {
    return entry.lastSentAt < 0 && entry.link === this.linkGeneration && entry.firstSentAt >= 0;
  }

  /**
   * Hand one entry's frame to the transport; its clock restarts when the copy has left the transport
   * (the written notification of the same link), and until then it cannot be resent on this link.
   */
  private transmit(entry: OutgoingEntry): void {
    const link = this.linkGeneration;
    entry.lastSentAt = -1;
    entry.link = link;
    this.write(entry.frame, (err) => {
      // A copy that never left (the link failed) keeps the entry waiting; the next link resends it.
      if ((err !== undefined && err !== null) || entry.link !== link || entry.lastSentAt >= 0) return;
      entry.lastSentAt = this.deps.now();
      // A transport that writes synchronously reports from inside write(): the caller's loop goes on.
      if (!this.writing) this.onTransportDrained();
    });
  }

  /** Hand one frame to the transport. A throwing transport loses only this write; resends recover it (#20). */
  private write(frame: Buffer, onWritten?: (err?: Error | null) => void): void {
    const transport = this.transport;
    if (transport === undefined) return;
    this.counters.framesSent++;
    this.writing = true;
    try {
      transport.send(frame, onWritten);
    } catch (err) {
      // Nothing will leave: let the timer treat this copy as sent now, so the resend recovers it.
      onWritten?.();
      this.log.warn('sendFrame failed; relying on resend', { error: String(err) });
    } finally {
      this.writing = false;
    }
    const queued = transport.queuedBytes();
    if (queued > this.counters.peakQueuedBytes) this.counters.peakQueuedBytes = queued;
  }

  /** A copy left the transport: room below {@link SEND_QUEUE_LIMIT_BYTES} may let queued messages go. */
  private onTransportDrained(): void {
    if (this.firstUnsentSeq < this.nextSeq) this.pump(this.deps.now());
  }
}

/** Adapt a plain send function to {@link ChannelTransport.send}: written as soon as it returns. */
function immediateSend(send: (frame: Buffer) => void): ChannelTransport['send'] {
  return (frame, onWritten) => {
    send(frame);
    onWritten?.();
  };
}
