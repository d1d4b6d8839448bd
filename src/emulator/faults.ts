/**
 * Fault injection for the SSM emulator (spec §12.2): a live-mutable {@link Faults} configuration that the
 * API and the relay consult on every call and frame, and the per-direction {@link FaultPipe} that applies
 * loss, duplication, reordering, latency, digest corruption and ack loss to relayed frames.
 *
 * Every random decision comes from one seeded PRNG ({@link createPrng}), so a run with the same seed and the
 * same traffic makes the same decisions.
 */
import { HEADER, MessageType } from '../datachannel/constants.js';
import { decodeAcknowledge } from '../datachannel/payloads.js';

/** SSM API operations the emulator serves (spec §2). */
export type ApiOperation =
  | 'StartSession'
  | 'ResumeSession'
  | 'TerminateSession'
  | 'DescribeInstanceInformation'
  | 'ListTasks'
  | 'DescribeTasks';

/** Error codes the emulator can answer with (spec §2.4), plus the generic validation error. */
export type ApiErrorCode =
  | 'TargetNotConnected'
  | 'InvalidDocument'
  | 'InvalidParameters'
  | 'DoesNotExistException'
  | 'AccessDeniedException'
  | 'ThrottlingException'
  | 'ValidationException'
  | 'InternalServerError';

/** One pending API fault: the next `count` calls of `op` fail with `code` (spec §12.2 `apiError`). */
export interface ApiErrorFault {
  /** Operation to fail. */
  op: ApiOperation;
  /** Error code answered (its HTTP status follows spec §2.4). */
  code: ApiErrorCode;
  /** How many calls still fail; decremented per failed call, removed at 0. */
  count: number;
  /** Message text; default names the fault. */
  message?: string;
}

/** Relay direction: client → agent (`toAgent`) or agent → client (`toClient`). */
export type Direction = 'toAgent' | 'toClient';

/** One value per relay direction. */
export interface Directional<T> {
  /** Applied to frames from the client to the agent. */
  toAgent: T;
  /** Applied to frames from the agent to the client. */
  toClient: T;
}

/** Added latency of one direction (spec §12.2 `delayMs`). */
export interface DelayFault {
  /** Fixed delay per frame, ms. 0 = none. */
  ms: number;
  /** Extra uniformly random delay in `[0, jitterMs)`, ms; jitter reorders frames. */
  jitterMs: number;
}

/** Client WebSocket drops (spec §12.2 `dropWebSocket`, client side). */
export interface DropWebSocketFault {
  /** Close every client connection this long after it was accepted, ms. */
  everyMs?: number;
  /** Close the client connection after this many frames were relayed on it (both directions counted). */
  afterMessages?: number;
  /** `abrupt`: TCP reset without a close frame; `bye`: close frame 1000 "Bye" like the real service. */
  mode: 'abrupt' | 'bye';
  /** Stop after this many drops; default unlimited. */
  times?: number;
}

/** One targeted frame: a sequence number in one direction. */
export interface SeqFault {
  /** Direction the affected frame travels. Default `toClient` for digests, `toAgent` for acks. */
  direction?: Direction;
  /** For `corruptDigest`: the sequenced message's SequenceNumber. For `dropAck`: the acked SequenceNumber. */
  seq: number;
}

/** How ResumeSession behaves (spec §12.2 `resumeBehavior`). */
export type ResumeBehavior =
  /** New token and new cell-number (real service). */
  | 'normal'
  /** Answer without TokenValue: the session cannot be resumed (spec §2.2). */
  | 'noToken'
  /** Answer DoesNotExistException. */
  | 'doesNotExist'
  /** Like `normal`, but a connect whose `cell-number` is not the latest one is refused. */
  | 'rejectStaleUrl';

/**
 * Knobs passed through to the emulated agent when a session's agent is created (spec §12.2). Unset fields use
 * the emulator options. Names match the agent's `AgentOptions`.
 */
export interface AgentFaults {
  /** AgentVersion in the HandshakeRequest (test thresholds 3.0.196.0, 3.1.1511.0, 2.3.722.0). */
  agentVersion?: string;
  /** Agent Output payload size, bytes (default 1024; 1 and 1023 stress reassembly). */
  chunkSize?: number;
  /** Agent per-message sleep, ms (default 1; 0 for speed tests). */
  pacingMs?: number;
  /** Post-handshake not-ready window, ms. */
  notReadyWindowMs?: number;
  /** HandshakeResponse timeout, ms. */
  handshakeTimeoutMs?: number;
  /** Delay before the agent sends HandshakeRequest, ms. */
  handshakeDelayMs?: number;
  /** Never send HandshakeComplete. */
  skipHandshakeComplete?: boolean;
  /** Add a KMSEncryption action to the HandshakeRequest. */
  requestKmsAction?: boolean;
  /** SessionType in the HandshakeRequest (default `Port`). */
  sessionType?: string;
  /** Properties merged over the document's properties in the HandshakeRequest. */
  propertiesOverride?: Record<string, string>;
  /** Force smux keep-alive on/off regardless of ClientVersion. */
  smuxKeepAlive?: boolean;
  /** smux stream ids whose destination dial fails (ConnectToPortError path). */
  dialFailStreamIds?: number[];
  /** The next N destination dials fail. */
  dialFailCount?: number;
  /** Delay of every destination dial, ms (serial-dial head-of-line blocking). */
  dialDelayMs?: number;
  /** Payload sent as HandshakeComplete instead of the real JSON (bad-agent tests, issue 10). */
  handshakeCompletePayload?: Buffer;
  /** Extra sequenced messages the agent sends at chosen points (bad-agent tests, issue 10). */
  injectMessages?: InjectedMessage[];
}

/**
 * One sequenced message a misbehaving agent sends: committed like any other (next sequence number, valid
 * digest, resent until acked), so it passes the client's codec and reaches its session layer.
 */
export interface InjectedMessage {
  /** Send it once the agent has sent this many Output messages; 0 = as soon as the port plugin is ready. */
  afterOutputs: number;
  /** PayloadType of the message (spec §4.3); any number, valid or not. */
  payloadType: number;
  /** Payload bytes, sent as given. */
  payload: Buffer;
}

/** The whole fault configuration. Every field is read live, so tests may change it mid-session. */
export interface FaultConfig {
  /** PRNG seed; set before traffic for reproducible runs. */
  seed: number;
  /** Pending API errors, consumed in order of insertion per operation. */
  apiErrors: ApiErrorFault[];
  /** Client WebSocket drops; undefined = none. */
  dropWebSocket: DropWebSocketFault | undefined;
  /** Probability 0–1 that a sequenced message or ack is dropped. */
  dropRate: Directional<number>;
  /** Probability 0–1 that a sequenced message or ack is delivered twice. */
  dupRate: Directional<number>;
  /** Hold up to N frames and release them shuffled (≤ 1 = off). */
  reorderWindow: Directional<number>;
  /** Longest time a frame is held for reordering before the held frames are released, ms. */
  reorderFlushMs: number;
  /** Added latency per direction. */
  delay: Directional<DelayFault>;
  /** End every session this long after its first client connect with channel_closed, ms; 0 = off. */
  terminateAfterMs: number;
  /** Flip a payload byte of these sequenced messages after the digest was computed; each applies once. */
  corruptDigest: SeqFault[];
  /** Lose the ack of these sequence numbers once each. */
  dropAck: SeqFault[];
  /**
   * Lose every copy (first send and every resend) of these sequenced messages, for good: what the client sees
   * when the real agent's outgoing buffer overflowed and the message is held by neither side (issue 10).
   * Default direction `toClient`.
   */
  loseForever: SeqFault[];
  /** ResumeSession behaviour. */
  resumeBehavior: ResumeBehavior;
  /** Agent knobs for agents created from now on. */
  agent: AgentFaults;
}

/** A configuration with every fault off. */
export function defaultFaultConfig(): FaultConfig {
  return {
    seed: 1,
    apiErrors: [],
    dropWebSocket: undefined,
    dropRate: { toAgent: 0, toClient: 0 },
    dupRate: { toAgent: 0, toClient: 0 },
    reorderWindow: { toAgent: 0, toClient: 0 },
    reorderFlushMs: 20,
    delay: { toAgent: { ms: 0, jitterMs: 0 }, toClient: { ms: 0, jitterMs: 0 } },
    terminateAfterMs: 0,
    corruptDigest: [],
    dropAck: [],
    loseForever: [],
    resumeBehavior: 'normal',
    agent: {},
  };
}

/** A PRNG returning floats in `[0, 1)`. */
export type Prng = () => number;

/** mulberry32: a small, fast, seedable PRNG (quality is ample for fault decisions). */
export function createPrng(seed: number): Prng {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The emulator's live fault state: every {@link FaultConfig} field as a public, mutable property (read on each
 * call and frame, so tests may change them mid-session), plus the seeded PRNG and helpers that consume
 * one-shot faults.
 */
export class Faults implements FaultConfig {
  seed = 1;
  apiErrors: ApiErrorFault[] = [];
  dropWebSocket: DropWebSocketFault | undefined = undefined;
  dropRate: Directional<number> = { toAgent: 0, toClient: 0 };
  dupRate: Directional<number> = { toAgent: 0, toClient: 0 };
  reorderWindow: Directional<number> = { toAgent: 0, toClient: 0 };
  reorderFlushMs = 20;
  delay: Directional<DelayFault> = { toAgent: { ms: 0, jitterMs: 0 }, toClient: { ms: 0, jitterMs: 0 } };
  terminateAfterMs = 0;
  corruptDigest: SeqFault[] = [];
  dropAck: SeqFault[] = [];
  loseForever: SeqFault[] = [];
  resumeBehavior: ResumeBehavior = 'normal';
  agent: AgentFaults = {};
  private prng: Prng;
  private seededWith: number;

  /** @param initial fields to set over {@link defaultFaultConfig} */
  constructor(initial: Partial<FaultConfig> = {}) {
    Object.assign(this, defaultFaultConfig(), initial);
    this.seededWith = this.seed;
    this.prng = createPrng(this.seed);
  }

  /** Next random float in `[0, 1)`; reseeds when `seed` was changed. */
  random(): number {
    if (this.seed !== this.seededWith) {
      this.seededWith = this.seed;
      this.prng = createPrng(this.seed);
    }
    return this.prng();
  }

  /** Queue an API error: the next `count` calls of `op` fail with `code`. */
  failApi(op: ApiOperation, code: ApiErrorCode, count = 1, message?: string): void {
    this.apiErrors.push(message === undefined ? { op, code, count } : { op, code, count, message });
  }

  /** Throttle the next `count` StartSession calls (spec §12.2). */
  throttleStartSession(count: number): void {
    this.failApi('StartSession', 'ThrottlingException', count, 'Rate exceeded');
  }

  /** Consume one pending error for `op`, if any. */
  takeApiError(op: ApiOperation): ApiErrorFault | undefined {
    const index = this.apiErrors.findIndex((f) => f.op === op && f.count > 0);
    if (index < 0) return undefined;
    const fault = this.apiErrors[index] as ApiErrorFault;
    fault.count -= 1;
    if (fault.count <= 0) this.apiErrors.splice(index, 1);
    return fault;
  }

  /** Remove every fault and restore defaults (the seed is kept). */
  reset(): void {
    const seed = this.seed;
    Object.assign(this, defaultFaultConfig(), { seed });
  }
}

/** What a {@link FaultPipe} did to a frame, for counters and the frame log. */
export type FaultFate = 'dropped' | 'duplicated' | 'corrupted' | 'reordered' | 'delayed';

/** Timer functions a pipe uses (injected so tests could drive them). */
export interface PipeTimers {
  setTimeout(fn: () => void, ms: number): NodeJS.Timeout;
  clearTimeout(handle: NodeJS.Timeout): void;
}

/** Summary of a frame that the pipe needs to decide on faults. */
interface FrameFacts {
  messageType: string;
  sequenceNumber: number;
  /** For acks: the acknowledged sequence number. */
  ackedSequenceNumber: number | undefined;
}

/** Read the few header fields a fault decision needs; undefined for frames too short to be messages. */
function frameFacts(frame: Buffer): FrameFacts | undefined {
  if (frame.length < HEADER.TOTAL_BYTES) return undefined;
  let messageType = '';
  for (let i = HEADER.MESSAGE_TYPE_OFFSET; i < HEADER.MESSAGE_TYPE_OFFSET + HEADER.MESSAGE_TYPE_BYTES; i++) {
    const byte = frame[i] as number;
    if (byte !== 0) messageType += String.fromCharCode(byte);
  }
  messageType = messageType.trim();
  const sequenceNumber = Number(frame.readBigInt64BE(HEADER.SEQUENCE_NUMBER_OFFSET));
  let ackedSequenceNumber: number | undefined;
  if (messageType === MessageType.Acknowledge) {
    const length = frame.readUInt32BE(HEADER.PAYLOAD_LENGTH_OFFSET);
    try {
      ackedSequenceNumber = decodeAcknowledge(
        frame.subarray(HEADER.PAYLOAD_OFFSET, HEADER.PAYLOAD_OFFSET + length),
      ).acknowledgedMessageSequenceNumber;
    } catch {
      // A malformed ack is relayed untouched; the receiver decides what to do with it.
      ackedSequenceNumber = undefined;
    }
  }
  return { messageType, sequenceNumber, ackedSequenceNumber };
}

/** True for frames the loss/dup/reorder knobs apply to: sequenced messages and acks (spec §12.2). */
function isFaultable(facts: FrameFacts): boolean {
  return (
    facts.messageType === MessageType.InputStreamData ||
    facts.messageType === MessageType.OutputStreamData ||
    facts.messageType === MessageType.Acknowledge
  );
}

/**
 * Applies the live faults of one direction to a stream of frames and hands the survivors to `deliver`.
 * Order of application: drop, dropAck, corruptDigest, duplicate, reorder, delay.
 */
export class FaultPipe {
  private held: Buffer[] = [];
  private holdTimer: NodeJS.Timeout | undefined;
  private readonly pending = new Set<NodeJS.Timeout>();
  private closed = false;

  /**
   * @param direction which direction's knobs apply
   * @param faults the live fault state
   * @param deliver receives each surviving frame, possibly later and out of order
   * @param onFault told about every fault applied (for counters and the frame log)
   * @param timers timer functions
   */
  constructor(
    private readonly direction: Direction,
    private readonly faults: Faults,
    private readonly deliver: (frame: Buffer) => void,
    private readonly onFault: (fate: FaultFate, frame: Buffer) => void,
    private readonly timers: PipeTimers = { setTimeout, clearTimeout },
  ) {}

  /** Frames held for reordering or delay, not yet delivered. */
  get heldFrames(): number {
    return this.held.length + this.pending.size;
  }

  /** Feed one frame. */
  push(frame: Buffer): void {
    if (this.closed) return;
    const config = this.faults;
    if (this.quiet()) {
      // No knob can touch this frame: skip parsing it (the emulator's hot path when no faults are set).
      this.deliver(frame);
      return;
    }
    const facts = frameFacts(frame);
    if (facts === undefined || !isFaultable(facts)) {
      this.schedule(frame);
      return;
    }
    if (
      facts.messageType !== MessageType.Acknowledge &&
      config.loseForever.some(
        (f) => (f.direction ?? 'toClient') === this.direction && f.seq === facts.sequenceNumber,
      )
    ) {
      this.onFault('dropped', frame);
      return;
    }
    const dropRate = config.dropRate[this.direction];
    if (dropRate > 0 && this.faults.random() < dropRate) {
      this.onFault('dropped', frame);
      return;
    }
    if (facts.ackedSequenceNumber !== undefined) {
      const index = config.dropAck.findIndex(
        (f) => (f.direction ?? 'toAgent') === this.direction && f.seq === facts.ackedSequenceNumber,
      );
      if (index >= 0) {
        config.dropAck.splice(index, 1);
        this.onFault('dropped', frame);
        return;
      }
    }
    let out = frame;
    if (facts.messageType !== MessageType.Acknowledge) {
      const index = config.corruptDigest.findIndex(
        (f) => (f.direction ?? 'toClient') === this.direction && f.seq === facts.sequenceNumber,
      );
      if (index >= 0 && frame.length > HEADER.PAYLOAD_OFFSET) {
        config.corruptDigest.splice(index, 1);
        out = Buffer.from(frame);
        out[HEADER.PAYLOAD_OFFSET] = (out[HEADER.PAYLOAD_OFFSET] as number) ^ 0xff;
        this.onFault('corrupted', out);
      }
    }
    const dupRate = config.dupRate[this.direction];
    const copies = dupRate > 0 && this.faults.random() < dupRate ? 2 : 1;
    if (copies === 2) this.onFault('duplicated', out);
    for (let i = 0; i < copies; i++) this.reorder(out);
  }

  /**
   * True when every knob of this direction is off, so {@link push} would hand any frame straight to `deliver`
   * (read live, like every knob).
   */
  private quiet(): boolean {
    const config = this.faults;
    const delay = config.delay[this.direction];
    return (
      !(config.dropRate[this.direction] > 0) &&
      !(config.dupRate[this.direction] > 0) &&
      !(config.reorderWindow[this.direction] > 1) &&
      !(delay.ms > 0) &&
      !(delay.jitterMs > 0) &&
      config.corruptDigest.length === 0 &&
      config.dropAck.length === 0 &&
      config.loseForever.length === 0
    );
  }

  /** Release everything held for reordering now (delays still apply). */
  flush(): void {
    if (this.holdTimer !== undefined) {
      this.timers.clearTimeout(this.holdTimer);
      this.holdTimer = undefined;
    }
    const frames = this.held;
    this.held = [];
    for (let i = frames.length - 1; i > 0; i--) {
      const j = Math.floor(this.faults.random() * (i + 1));
      const tmp = frames[i] as Buffer;
      frames[i] = frames[j] as Buffer;
      frames[j] = tmp;
    }
    if (frames.length > 1) for (const f of frames) this.onFault('reordered', f);
    for (const f of frames) this.schedule(f);
  }

  /** Drop everything held and stop delivering. */
  close(): void {
    this.closed = true;
    this.held = [];
    if (this.holdTimer !== undefined) this.timers.clearTimeout(this.holdTimer);
    for (const handle of this.pending) this.timers.clearTimeout(handle);
    this.pending.clear();
  }

  private reorder(frame: Buffer): void {
    const window = this.faults.reorderWindow[this.direction];
    if (window <= 1) {
      this.schedule(frame);
      return;
    }
    this.held.push(frame);
    if (this.held.length >= window) {
      this.flush();
    } else if (this.holdTimer === undefined) {
      // Held frames must not wait forever for the window to fill: a quiet link would stall.
      this.holdTimer = this.timers.setTimeout(() => {
        this.holdTimer = undefined;
        this.flush();
      }, this.faults.reorderFlushMs);
    }
  }

  private schedule(frame: Buffer): void {
    const delay = this.faults.delay[this.direction];
    const ms = delay.ms + (delay.jitterMs > 0 ? this.faults.random() * delay.jitterMs : 0);
    if (ms <= 0) {
      this.deliver(frame);
      return;
    }
    this.onFault('delayed', frame);
    const handle = this.timers.setTimeout(() => {
      this.pending.delete(handle);
      if (!this.closed) this.deliver(frame);
    }, ms);
    this.pending.add(handle);
  }
}
