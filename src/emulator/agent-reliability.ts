/**
 * The emulated agent's reliability layer (spec §7, §8): sequence numbers, per-message acks, the reorder
 * buffer and the head-only resend of the reference agent (amazon-ssm-agent 3.3.x
 * `agent/session/datachannel/datachannel.go`), reproduced exactly, quirks included:
 * - in-order messages are acked after processing; a processing failure leaves them neither acked nor consumed;
 * - out-of-order messages are acked and buffered (limit 100000), duplicates are re-acked;
 * - only the head of the outgoing buffer is resent, when `now − lastSentAt > RTO`, and its `lastSentAt`
 *   restarts; there is no give-up;
 * - acks are matched by sequence number only, and every ack is an RTT sample measured from the entry's
 *   `lastSentAt` (no Karn's rule);
 * - while paused nothing is sent or resent; new messages are buffered as if sent.
 *
 * This is the emulator's own implementation, independent of the daemon's `src/datachannel/reliable.ts`, so
 * that each side tests the other. It owns no sockets and no timers: the agent calls {@link
 * AgentReliability.scanResends} every 100 ms.
 */
import type { Logger } from '../log.js';
import type { ClientMessage, FrameHeader, InboundMessage } from '../datachannel/message.js';
import { HEADER, HeaderFlags, MessageType, SCHEMA_VERSION } from '../datachannel/constants.js';
import { allocateFrame, sealFrame } from '../datachannel/message.js';
import { encodeAcknowledgeMessage, encodeInputAcknowledgeMessage } from '../datachannel/payloads.js';

/** Reliability constants of the reference agent (spec §7.2, §7.3). All protocol values. */
export const AGENT_RELIABILITY = {
  /** Smoothed RTT before the first sample, ms. */
  INITIAL_RTT_MS: 100,
  /** RTT variation before the first sample, ms. */
  INITIAL_RTT_VARIATION_MS: 0,
  /** RTO before the first sample, ms. */
  INITIAL_RTO_MS: 200,
  /** Gain α for a new RTT sample. */
  RTT_GAIN: 1 / 8,
  /** Gain β for a new RTT deviation. */
  RTT_VARIATION_GAIN: 1 / 4,
  /** Clock granularity G, ms: lower bound of the variation term. */
  CLOCK_GRANULARITY_MS: 10,
  /** Largest RTO, ms. The agent has no lower bound other than G. */
  MAX_RTO_MS: 1000,
  /** Interval of the resend scan, ms. */
  RESEND_SCAN_INTERVAL_MS: 100,
  /** Capacity of the outgoing buffer, messages; when full the agent stops buffering (the message is lost). */
  OUTGOING_BUFFER_CAPACITY: 100_000,
  /** Capacity of the incoming reorder buffer, messages; beyond it out-of-order messages are dropped unacked. */
  INCOMING_BUFFER_CAPACITY: 100_000,
} as const;

/**
 * The agent's RTT/RTO estimator (spec §7.3), without the daemon's 200 ms floor: the reference agent clamps
 * only at 1 s, so RTO can fall to `rtt + 10 ms` on a fast link.
 */
export class AgentRttEstimator {
  private rtt: number = AGENT_RELIABILITY.INITIAL_RTT_MS;
  private variation: number = AGENT_RELIABILITY.INITIAL_RTT_VARIATION_MS;
  private rto: number = AGENT_RELIABILITY.INITIAL_RTO_MS;

  /** Feed one sample, ms: variation from the previous RTT first, then RTT, then `RTO = min(1 s, rtt + max(G, 4·var))`. */
  sample(ms: number): void {
    if (!Number.isFinite(ms)) return;
    const s = Math.max(0, ms);
    this.variation =
      (1 - AGENT_RELIABILITY.RTT_VARIATION_GAIN) * this.variation +
      AGENT_RELIABILITY.RTT_VARIATION_GAIN * Math.abs(this.rtt - s);
    this.rtt = (1 - AGENT_RELIABILITY.RTT_GAIN) * this.rtt + AGENT_RELIABILITY.RTT_GAIN * s;
    this.rto = Math.min(
      AGENT_RELIABILITY.MAX_RTO_MS,
      this.rtt + Math.max(AGENT_RELIABILITY.CLOCK_GRANULARITY_MS, 4 * this.variation),
    );
  }

  /** Current retransmission timeout, ms. */
  get rtoMs(): number {
    return this.rto;
  }

  /** Current smoothed RTT, ms. */
  get srttMs(): number {
    return this.rtt;
  }

  /** Current RTT variation, ms. */
  get rttVariationMs(): number {
    return this.variation;
  }
}

/** Counters the reliability layer updates; a subset of the agent's `AgentStats`. */
export interface ReliabilityCounters {
  /** New sequenced messages committed (not resends). */
  dataMessagesOut: number;
  /** Head resends. */
  resends: number;
  /** Acks sent (including re-acks of duplicates). */
  acksSent: number;
  /** Acks received that matched nothing or something; every decoded ack counts. */
  acksReceived: number;
  /** Sequenced messages with `seq < expected`. */
  duplicatesReceived: number;
  /** Sequenced messages with `seq > expected` (acked and buffered, or dropped when the buffer is full). */
  outOfOrderReceived: number;
}

/**
 * What processing one in-order message did: `true` consumed (ack, advance), `false` not ready (neither acked
 * nor consumed), or a promise of either when processing must wait (a basic-mode redial).
 */
export type DeliveryResult = boolean | Promise<boolean>;

/**
 * Everything the reliability layer needs from its owner (narrow functions: docs/architecture.md,
 * Conventions).
 */
export interface AgentReliabilityDeps {
  /** Clock, ms. */
  now(): number;
  /** Write one encoded frame towards the client (a frame this layer sealed: its header is valid). */
  send(frame: Buffer): void;
  /** Process one in-order `input_stream_data` message. */
  deliver(message: ClientMessage): DeliveryResult;
  /** Counters to update. */
  counters: ReliabilityCounters;
  logger: Logger;
}

/** One un-acked outgoing message (spec §7.3). */
interface OutgoingEntry {
  sequenceNumber: number;
  /** The encoded frame; a resend writes these exact bytes. */
  frame: Buffer;
  /** When it was last written (or buffered while paused), ms. */
  lastSentAt: number;
}

/** Sequencing, acks and head-only resend for the agent → client direction, and the reorder buffer for the other. */
export class AgentReliability {
  /** RTT/RTO estimator; exposed for assertions. */
  readonly rtt = new AgentRttEstimator();
  private nextSequence = 0;
  private expected = 0;
  /** Oldest first; a Map keeps insertion order, which is sequence order here. */
  private readonly outgoing = new Map<number, OutgoingEntry>();
  private readonly incoming = new Map<number, InboundMessage>();
  private pausedState = false;
  /**
   * Header fields of the next sealed `output_stream_data` frame: one record reused for every message, as
   * sealing is synchronous (no object per message, issue 16).
   */
  private readonly outputHeader: FrameHeader = {
    messageType: MessageType.OutputStreamData,
    schemaVersion: SCHEMA_VERSION,
    createdDate: 0,
    sequenceNumber: 0,
    flags: HeaderFlags.Data,
    messageId: undefined,
    payloadType: 0,
  };

  constructor(private readonly deps: AgentReliabilityDeps) {}

  /** Next agent sequence number to be assigned. */
  get nextSequenceNumber(): number {
    return this.nextSequence;
  }

  /** Next client sequence number the agent will deliver. */
  get expectedSequenceNumber(): number {
    return this.expected;
  }

  /** Un-acked outgoing messages. */
  get outgoingCount(): number {
    return this.outgoing.size;
  }

  /** Buffered out-of-order incoming messages. */
  get incomingCount(): number {
    return this.incoming.size;
  }

  /** Whether sending and resending are paused (spec §8). */
  get paused(): boolean {
    return this.pausedState;
  }

  /** Pause or resume publication (spec §8). Resuming does not resend anything by itself: the scan does. */
  setPaused(paused: boolean): void {
    this.pausedState = paused;
  }

  /**
   * Commit one sequenced `output_stream_data` message: assign the next number, buffer it and send it unless
   * paused. Flags is 1 on sequence 0 (spec §4.4). Returns the sequence number.
   */
  sendStreamData(payloadType: number, payload: Buffer): number {
    const sequenceNumber = this.nextSequence++;
    // Encoded in place with fresh random MessageId bytes.
    const frame = allocateFrame(payload.length);
    frame.set(payload, HEADER.PAYLOAD_OFFSET);
    const now = this.deps.now();
    const header = this.outputHeader;
    header.createdDate = createdDateAt(now);
    header.sequenceNumber = sequenceNumber;
    header.flags = sequenceNumber === 0 ? HeaderFlags.First : HeaderFlags.Data;
    header.payloadType = payloadType;
    sealFrame(frame, header);
    this.deps.counters.dataMessagesOut++;
    if (this.outgoing.size < AGENT_RELIABILITY.OUTGOING_BUFFER_CAPACITY) {
      this.outgoing.set(sequenceNumber, { sequenceNumber, frame, lastSentAt: now });
    } else {
      this.deps.logger.warn('outgoing buffer full; message not buffered', { sequenceNumber });
    }
    if (!this.pausedState) this.deps.send(frame);
    return sequenceNumber;
  }

  /**
   * One resend scan (the body of the agent's 100 ms loop): resend the head only, when it is older than RTO,
   * and restart its clock. Does nothing while paused.
   */
  scanResends(): void {
    if (this.pausedState) return;
    const head = this.outgoing.values().next();
    if (head.done) return;
    const entry = head.value;
    const now = this.deps.now();
    if (now - entry.lastSentAt > this.rtt.rtoMs) {
      this.deps.counters.resends++;
      this.deps.logger.debug('resend head', { sequenceNumber: entry.sequenceNumber, rtoMs: this.rtt.rtoMs });
      this.deps.send(entry.frame);
      entry.lastSentAt = now;
    }
  }

  /** An incoming ack: remove the entry with that sequence number, if any, and take an RTT sample. */
  handleAck(sequenceNumber: number): void {
    this.deps.counters.acksReceived++;
    const entry = this.outgoing.get(sequenceNumber);
    if (entry === undefined) return;
    this.rtt.sample(this.deps.now() - entry.lastSentAt);
    this.outgoing.delete(sequenceNumber);
  }

  /**
   * An incoming `input_stream_data` message (spec §7.2). Returns a promise when in-order processing has to
   * wait; the caller must not feed further messages until it settles.
   */
  receiveStreamData(message: InboundMessage): Promise<void> | undefined {
    const seq = message.sequenceNumber;
    if (seq < this.expected) {
      this.deps.counters.duplicatesReceived++;
      this.sendAck(message);
      return undefined;
    }
    if (seq > this.expected) {
      this.deps.counters.outOfOrderReceived++;
      if (this.incoming.size >= AGENT_RELIABILITY.INCOMING_BUFFER_CAPACITY) {
        this.deps.logger.warn('incoming buffer full; dropping without ack', { sequenceNumber: seq });
        return undefined;
      }
      this.sendAck(message);
      if (!this.incoming.has(seq)) this.incoming.set(seq, message);
      return undefined;
    }
    return this.settle(this.deps.deliver(message), () => {
      this.sendAck(message);
      this.expected++;
    });
  }

  /**
   * Deliver buffered messages from `expected` on while present (each was acked when buffered). Called after an
   * in-order delivery, and by the agent when a stall that refused the head clears.
   */
  drainIncoming(): Promise<void> | undefined {
    for (;;) {
      const next = this.incoming.get(this.expected);
      if (next === undefined) return undefined;
      const result = this.deps.deliver(next);
      if (result instanceof Promise) return this.settle(result, () => this.consumeBuffered(next));
      if (!result) return undefined;
      this.consumeBuffered(next);
    }
  }

  private consumeBuffered(message: InboundMessage): void {
    this.incoming.delete(message.sequenceNumber);
    this.expected++;
  }

  /** Apply `onConsumed` when the delivery succeeded, then drain the buffer; async when delivery is. */
  private settle(result: DeliveryResult, onConsumed: () => void): Promise<void> | undefined {
    if (result instanceof Promise) {
      return result.then((ok) => {
        if (!ok) return undefined;
        onConsumed();
        return this.drainIncoming();
      });
    }
    if (!result) return undefined;
    onConsumed();
    return this.drainIncoming();
  }

  private sendAck(acked: InboundMessage): void {
    const createdDate = createdDateAt(this.deps.now());
    // The template covers the one type the agent acks; anything else takes the general encoder.
    const frame =
      acked.messageType === MessageType.InputStreamData
        ? encodeInputAcknowledgeMessage(acked, createdDate)
        : encodeAcknowledgeMessage(
            {
              acknowledgedMessageType: acked.messageType,
              acknowledgedMessageId: acked.messageId,
              acknowledgedMessageSequenceNumber: acked.sequenceNumber,
              isSequentialMessage: true,
            },
            createdDate,
          );
    this.deps.counters.acksSent++;
    this.deps.send(frame);
  }
}

/** CreatedDate for clock reading `now`, ms; never 0, which receivers reject (spec §4.1). */
function createdDateAt(now: number): number {
  return Math.max(1, Math.round(now));
}
