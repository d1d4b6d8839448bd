/**
 * The emulated SSM Agent: the agent half of a port-forwarding session, imitating amazon-ssm-agent 3.3.x
 * (spec §6–§9, §12.1). Transport-independent: frames come in through {@link EmulatedAgent.receiveFromClient}
 * and go out through `deps.sendToClient`; the service (`service.ts`) relays them and applies faults.
 *
 * Life-cycle ({@link AgentState}): `start()` sends HandshakeRequest (seq 0, Flags 1) after
 * `handshakeDelayMs`; the HandshakeResponse's ClientVersion picks mux or basic mode with the agent's
 * version rule; HandshakeComplete (seq 1) follows; after the not-ready window the port plugin starts
 * (mux: smux server; basic: initial dial) and Output flows. Data arriving before HandshakeComplete is acked
 * and discarded; in-order data during the window is neither acked nor consumed.
 *
 * A frame handed to `receiveFromClient` from inside `deps.sendToClient` is queued and handled right after
 * the send, so a synchronous relay cannot re-enter the agent's state machine.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from '../log.js';
import { describeError } from '../errors.js';
import type { ClientMessage, InboundMessage } from '../datachannel/message.js';
import { decodeInbound, frameDigestMatches } from '../datachannel/message.js';
import {
  acknowledgedSequenceNumberOf,
  decodeFlag,
  decodeHandshakeResponse,
  encodeFlag,
  encodeHandshakeComplete,
  encodeHandshakeRequest,
  sessionTypeAction,
} from '../datachannel/payloads.js';
import type { RequestedClientAction } from '../datachannel/payloads.js';
import { ActionStatus, FlagCode, MessageType, PayloadType } from '../datachannel/constants.js';
import { agentCapabilities, agentModeFor } from './version.js';
import { AGENT_RELIABILITY, AgentReliability } from './agent-reliability.js';
import type { DeliveryResult } from './agent-reliability.js';
import { BasicPort } from './agent-basic.js';
import { destinationRefusal } from './denylist.js';
import { DestinationDialer, OutboundPump, PORT_PLUGIN, resolveDestination } from './port.js';
import { SMUX_SERVER, SmuxServer } from './smux-server.js';
import type { InjectedMessage } from './faults.js';

/**
 * Mode decisions of an agent that advertises `agentVersion`, from the HandshakeResponse's ClientVersion (spec §3.3).
 * The agent rule alone describes a current agent; an older one lacks the features the client-side thresholds stand
 * for: agents at or below 3.0.196.0 have no mux mode at all, and agents at or below 3.1.1511.0 always run smux
 * keep-alive ({@link agentCapabilities}, the emulator's own reading of spec §3.3, judged by the agent's comparison;
 * for the four-part numeric versions agents report it agrees with the client's). Without it the real plugin in
 * basic mode against `agentVersion: '3.0.196.0'` met a mux agent and the session died on its first byte.
 */
export function emulatedAgentModeFor(
  agentVersion: string,
  clientVersion: string,
  type: string,
): { mux: boolean; smuxKeepAlive: boolean } {
  const byClient = agentModeFor(clientVersion, type);
  const capable = agentCapabilities(agentVersion);
  return {
    mux: byClient.mux && capable.mux,
    smuxKeepAlive: byClient.smuxKeepAlive || capable.keepAliveAlwaysOn,
  };
}

/** Behaviour knobs of one emulated agent (spec §12.2). The service resolves defaults; nothing here is optional except `smuxKeepAlive`. */
export interface AgentOptions {
  /** AgentVersion in HandshakeRequest; also limits the modes (see {@link emulatedAgentModeFor}). Default in the service: '3.3.987.0'. */
  agentVersion: string;
  /** Document properties after substitution: portNumber, type ('LocalPortForwarding'), localPortNumber, optional host. */
  properties: Record<string, string>;
  /** Maps a `host` property to an address to dial (so ToRemoteHost is testable without DNS); identity if absent. */
  resolveHost: (host: string) => string;
  /** Agent Output payload size, bytes (default 1024). */
  chunkSize: number;
  /** Sleep after each Output message read from the destination, ms (default 1; 0 = unpaced). */
  pacingMs: number;
  /** Post-HandshakeComplete window in which in-order Output is neither acked nor consumed, ms (default 50). */
  notReadyWindowMs: number;
  /** HandshakeResponse timeout, ms (default 15000). */
  handshakeTimeoutMs: number;
  /** Delay before sending HandshakeRequest, ms (default 0). */
  handshakeDelayMs: number;
  /** Never send HandshakeComplete (default false). */
  skipHandshakeComplete: boolean;
  /** Add a KMSEncryption action to the request (default false). */
  requestKmsAction: boolean;
  /** SessionType of the request's SessionType action (default 'Port'). */
  sessionType: string;
  /** Force smux keep-alive on/off regardless of ClientVersion; undefined = version rule. */
  smuxKeepAlive?: boolean;
  /** Fail the destination dial for these smux stream ids. */
  dialFailStreamIds: number[];
  /** Fail the next N destination dials (either mode). */
  dialFailCount: number;
  /** Delay every destination dial by this much, ms. */
  dialDelayMs: number;
  /** Payload sent as HandshakeComplete instead of the real JSON; undefined = the real one. */
  handshakeCompletePayload?: Buffer;
  /** Messages to inject at chosen points (see {@link InjectedMessage}); default none. */
  injectMessages: readonly InjectedMessage[];
}

/** What the agent needs from the service. */
export interface AgentDeps {
  /** Clock, ms. Drives RTT/RTO, resend ages, CreatedDate and HandshakeTimeToComplete. */
  now(): number;
  /** Send one binary frame towards the client (the service applies faults/relay). A synchronous call back into `receiveFromClient` is queued, not re-entered. */
  sendToClient(frame: Buffer): void;
  logger: Logger;
}

/** Counters for assertions (spec §12.3). */
export interface AgentStats {
  /** Frames received from the client, including malformed ones. */
  framesIn: number;
  /** Frames sent to the client: sequenced messages, resends and acks. */
  framesOut: number;
  /** New sequenced messages (handshake, Output, Flag), not counting resends. */
  dataMessagesOut: number;
  /** Head resends. */
  resends: number;
  /** Acks sent, re-acks of duplicates included. */
  acksSent: number;
  /** Acks received. */
  acksReceived: number;
  /** `input_stream_data` with a sequence number already delivered. */
  duplicatesReceived: number;
  /** `input_stream_data` ahead of the expected sequence number. */
  outOfOrderReceived: number;
  /** Frames whose PayloadDigest is wrong (processed anyway, like the reference agent). */
  digestMismatches: number;
  /** Bytes written to destination sockets. */
  bytesToDestination: number;
  /** Bytes read from destination sockets. */
  bytesFromDestination: number;
  /** smux streams opened by the client (SYNs accepted). */
  streamsOpened: number;
  /** Destination dials that failed (injected or real). */
  dialFailures: number;
}

/** Payload of the `message` event: one frame in either direction. */
export interface AgentMessageEvent {
  direction: 'in' | 'out';
  messageType: string;
  sequenceNumber: number;
  payloadType: number;
  payloadLength: number;
  /** `deps.now()` when the frame passed, ms. */
  at: number;
}

/** Payload of the `handshakeComplete` event. */
export interface AgentHandshakeEvent {
  mode: 'mux' | 'basic';
  clientVersion: string;
}

/** Agent-side constants not owned by the reliability layer or the smux server. */
export const AGENT = {
  /** Longest wait for the outgoing buffer to be acked after Flag TerminateSession, ms (protocol, spec §9.5). */
  TERMINATE_FLUSH_MS: 2000,
  /** HandshakeComplete's CustomerMessage (the reference agent sends an empty string for port sessions). */
  CUSTOMER_MESSAGE: '',
  /** Nanoseconds per millisecond, for HandshakeTimeToComplete. */
  NS_PER_MS: 1_000_000,
  /** Placeholders of the KMSEncryption action requested by the `requestKmsAction` knob. */
  KMS_KEY_ID: 'arn:aws:kms:us-east-1:111122223333:key/emulated',
  KMS_CHALLENGE: 'ZW11bGF0ZWQtY2hhbGxlbmdl',
} as const;

/** Agent life-cycle; one `switch` in `deliver` dispatches on it. */
export const AgentState = {
  /** Before the HandshakeRequest was sent. */
  Created: 'created',
  /** HandshakeRequest sent; waiting for the response. */
  AwaitingResponse: 'awaitingResponse',
  /** Response accepted; HandshakeComplete not sent yet (or never, with `skipHandshakeComplete`). */
  Responded: 'responded',
  /** HandshakeComplete sent; the port plugin is being set up. In-order data is neither acked nor consumed. */
  NotReady: 'notReady',
  /** Port plugin running. */
  Ready: 'ready',
  /** TerminateSession flag received; flushing the outgoing buffer. */
  Terminating: 'terminating',
  /** Closed or failed. Nothing is sent or processed. */
  Closed: 'closed',
} as const;
export type AgentState = (typeof AgentState)[keyof typeof AgentState];

/** Fresh zeroed counters. */
function emptyStats(): AgentStats {
  return {
    framesIn: 0,
    framesOut: 0,
    dataMessagesOut: 0,
    resends: 0,
    acksSent: 0,
    acksReceived: 0,
    duplicatesReceived: 0,
    outOfOrderReceived: 0,
    digestMismatches: 0,
    bytesToDestination: 0,
    bytesFromDestination: 0,
    streamsOpened: 0,
    dialFailures: 0,
  };
}

/**
 * The emulated agent. Events: `handshakeComplete` ({@link AgentHandshakeEvent}), `ready` (mode),
 * `terminateRequested`, `failed` (reason), `streamOpened` (sid), `streamClosed` (sid), `dialFailed`
 * (sid | undefined), `destinationConnected` (sid | undefined), `message` ({@link AgentMessageEvent}).
 */
export class EmulatedAgent extends EventEmitter {
  /** Counters; mutated in place. */
  readonly stats: AgentStats = emptyStats();
  /** Bytes per smux stream id (mux mode only). */
  readonly streamBytes = new Map<number, { toDestination: number; fromDestination: number }>();

  private stateValue: AgentState = AgentState.Created;
  private modeValue: 'mux' | 'basic' | undefined;
  private keepAliveValue: boolean | undefined;
  private clientVersionValue: string | undefined;
  private readonly logger: Logger;
  private readonly reliability: AgentReliability;
  private requestSentAt = 0;
  private forcedStall = false;
  private drainScheduled = false;
  private inboundBlocked = false;
  private sendDepth = 0;
  private readonly inboundBacklog: Buffer[] = [];
  private terminateEmitted = false;
  private pump: OutboundPump | undefined;
  private dialer: DestinationDialer | undefined;
  private smux: SmuxServer | undefined;
  private basic: BasicPort | undefined;
  private pumpHigh = false;
  private scanTimer: NodeJS.Timeout | undefined;
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Output messages sent so far; the clock of `injectMessages`. */
  private outputsSent = 0;
  /** `injectMessages` in order of `afterOutputs`, and the index of the next one to send. */
  private injections: InjectedMessage[] | undefined;
  private nextInjection = 0;

  constructor(
    private readonly options: AgentOptions,
    private readonly deps: AgentDeps,
  ) {
    super();
    this.logger = deps.logger.child('agent');
    this.reliability = new AgentReliability({
      now: () => deps.now(),
      send: (frame) => this.sendFrame(frame),
      deliver: (message) => this.deliver(message),
      counters: this.stats,
      logger: this.logger,
    });
  }

  /** Mode chosen from the HandshakeResponse's ClientVersion; undefined before it. */
  get mode(): 'mux' | 'basic' | undefined {
    return this.modeValue;
  }

  /** smux keep-alive decision (mux mode; false in basic mode); undefined before the HandshakeResponse. */
  get smuxKeepAliveOn(): boolean | undefined {
    return this.keepAliveValue;
  }

  /** ClientVersion from the HandshakeResponse; undefined before it. */
  get clientVersion(): string | undefined {
    return this.clientVersionValue;
  }

  /** Current life-cycle state. */
  get state(): AgentState {
    return this.stateValue;
  }

  /** Current RTO of the agent's estimator, ms. */
  get rtoMs(): number {
    return this.reliability.rtt.rtoMs;
  }

  /** Sequenced messages sent and not yet acked. */
  get unackedCount(): number {
    return this.reliability.outgoingCount;
  }

  /** Next client sequence number the agent will deliver. */
  get expectedSequenceNumber(): number {
    return this.reliability.expectedSequenceNumber;
  }

  /** Begin: (after handshakeDelayMs) send HandshakeRequest as seq 0 with Flags 1; start the 100 ms resend scan timer. */
  start(): void {
    if (this.stateValue !== AgentState.Created || this.scanTimer !== undefined) return;
    this.scanTimer = setInterval(() => this.scanResends(), AGENT_RELIABILITY.RESEND_SCAN_INTERVAL_MS);
    this.scanTimer.unref();
    if (this.options.handshakeDelayMs > 0)
      this.after(this.options.handshakeDelayMs, () => this.sendRequest());
    else this.sendRequest();
  }

  /**
   * One resend scan: the body of the 100 ms timer (head-only resend when older than RTO). Public so tests
   * with an injected clock can drive it deterministically.
   */
  scanResends(): void {
    if (this.stateValue === AgentState.Closed) return;
    this.reliability.scanResends();
  }

  /**
   * One binary frame from the client (already relayed). Never throws; malformed → logged and dropped without ack.
   * The agent takes the buffer over: its payload is kept (reorder buffer, destination writes) without a copy, so
   * the caller must not reuse it (the service hands over its own copy of each WebSocket message).
   */
  receiveFromClient(frame: Buffer): void {
    if (this.stateValue === AgentState.Closed) return;
    this.stats.framesIn++;
    if (this.inboundBlocked) {
      this.inboundBacklog.push(frame);
      return;
    }
    if (this.sendDepth > 0) {
      // Called back from inside sendToClient: finish the send first, then handle the frame.
      this.runInbound(Promise.resolve());
      this.inboundBacklog.push(frame);
      return;
    }
    this.handleFrame(frame);
  }

  /** The service tells the agent the client side is away (pause_publication to agent). */
  pausePublication(): void {
    if (this.stateValue === AgentState.Closed || this.reliability.paused) return;
    this.logger.debug('publication paused');
    this.reliability.setPaused(true);
    this.updateReading();
  }

  /** The client side is back (start_publication). */
  startPublication(): void {
    this.clearPause();
  }

  /** Force-stop consuming smux input (simulates the 4 MiB receive stall) until releaseReceiveStall(). */
  stallReceive(): void {
    this.forcedStall = true;
  }

  /** End a forced receive stall; buffered messages are processed again. */
  releaseReceiveStall(): void {
    this.forcedStall = false;
    this.scheduleDrain();
  }

  /** End the plugin (TerminateSession API, idle, max duration): close destination sockets, stop timers. Idempotent. */
  close(reason: string): void {
    if (this.stateValue === AgentState.Closed) return;
    this.logger.debug('agent closed', { reason });
    this.shutdown();
  }

  // ---------------------------------------------------------------------------------------------
  // Frames

  private handleFrame(frame: Buffer): void {
    let message: InboundMessage;
    try {
      // No MessageId string (an ack writes it from the id's bytes) and no payload copy (the frame is ours).
      message = decodeInbound(frame, { verifyDigest: false, copyPayload: false });
    } catch (err) {
      this.logger.warn('malformed frame dropped', { error: describeError(err), bytes: frame.length });
      return;
    }
    this.emitMessage('in', message);
    const control =
      message.messageType === MessageType.PausePublication ||
      message.messageType === MessageType.StartPublication;
    if (!control && message.payload.length > 0 && !frameDigestMatches(frame)) this.stats.digestMismatches++;
    switch (message.messageType) {
      case MessageType.InputStreamData:
        this.clearPause();
        this.runInbound(this.reliability.receiveStreamData(message));
        return;
      case MessageType.Acknowledge:
        this.clearPause();
        this.onAck(message);
        return;
      case MessageType.PausePublication:
        this.pausePublication();
        return;
      case MessageType.StartPublication:
        this.startPublication();
        return;
      default:
        this.logger.info('unexpected message type ignored', { messageType: message.messageType });
    }
  }

  private onAck(message: ClientMessage): void {
    let sequenceNumber: number;
    try {
      // The one field acks are matched on; the same acceptance as decodeAcknowledge, without its strings.
      sequenceNumber = acknowledgedSequenceNumberOf(message.payload);
    } catch (err) {
      this.logger.warn('malformed acknowledge ignored', { error: describeError(err) });
      return;
    }
    this.reliability.handleAck(sequenceNumber);
    if (this.stateValue === AgentState.Terminating && this.reliability.outgoingCount === 0) {
      this.finishTerminate();
    }
  }

  /** While processing waits (a basic-mode redial), hold every later frame, like the agent's blocked read loop. */
  private runInbound(pending: Promise<void> | undefined): void {
    if (pending === undefined) return;
    this.inboundBlocked = true;
    pending
      .catch((err: unknown) => this.logger.error('inbound processing failed', { error: describeError(err) }))
      .finally(() => {
        this.inboundBlocked = false;
        while (!this.inboundBlocked && this.stateValue !== AgentState.Closed) {
          const next = this.inboundBacklog.shift();
          if (next === undefined) break;
          this.handleFrame(next);
        }
      });
  }

  /** Process one in-order `input_stream_data` message according to the state. */
  private deliver(message: ClientMessage): DeliveryResult {
    switch (this.stateValue) {
      case AgentState.Created:
      case AgentState.AwaitingResponse:
        if (message.payloadType === PayloadType.HandshakeResponse) this.onHandshakeResponse(message);
        else this.discard(message, 'before HandshakeComplete');
        return true;
      case AgentState.Responded:
        this.discard(message, 'before HandshakeComplete');
        return true;
      case AgentState.NotReady:
        return false;
      case AgentState.Ready:
        return this.deliverToPlugin(message);
      case AgentState.Terminating:
        this.discard(message, 'while terminating');
        return true;
      case AgentState.Closed:
        return true;
    }
  }

  private discard(message: ClientMessage, why: string): void {
    this.logger.debug(`input discarded ${why}`, {
      sequenceNumber: message.sequenceNumber,
      payloadType: message.payloadType,
    });
  }

  private deliverToPlugin(message: ClientMessage): DeliveryResult {
    switch (message.payloadType) {
      case PayloadType.Output:
        if (this.receiveStalled()) return false;
        if (this.smux !== undefined) {
          this.smux.feed(message.payload);
          return true;
        }
        return this.basic?.write(message.payload) ?? true;
      case PayloadType.Flag:
        this.onFlag(message.payload);
        return true;
      default:
        this.discard(message, `(payload type ${message.payloadType} unused by port sessions)`);
        return true;
    }
  }

  private receiveStalled(): boolean {
    return this.forcedStall || (this.smux?.receiveStalled ?? this.basic?.receiveStalled ?? false);
  }

  private onFlag(payload: Buffer): void {
    let code: number;
    try {
      code = decodeFlag(payload);
    } catch (err) {
      this.logger.warn('malformed flag ignored', { error: describeError(err) });
      return;
    }
    switch (code) {
      case FlagCode.DisconnectToPort:
        if (this.basic !== undefined) {
          this.logger.debug('DisconnectToPort: closing the destination');
          this.basic.disconnect();
        } else {
          this.logger.debug('DisconnectToPort ignored in mux mode');
        }
        return;
      case FlagCode.TerminateSession:
        this.beginTerminate();
        return;
      default:
        this.logger.info('unknown flag ignored', { code });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Handshake (spec §6)

  private sendRequest(): void {
    if (this.stateValue !== AgentState.Created) return;
    const actions: RequestedClientAction[] = [
      sessionTypeAction({ sessionType: this.options.sessionType, properties: this.options.properties }),
    ];
    if (this.options.requestKmsAction) {
      actions.push({
        actionType: 'KMSEncryption',
        actionParameters: { KMSKeyId: AGENT.KMS_KEY_ID, Challenge: AGENT.KMS_CHALLENGE },
      });
    }
    this.stateValue = AgentState.AwaitingResponse;
    this.requestSentAt = this.deps.now();
    this.reliability.sendStreamData(
      PayloadType.HandshakeRequest,
      encodeHandshakeRequest({ agentVersion: this.options.agentVersion, requestedClientActions: actions }),
    );
    this.after(this.options.handshakeTimeoutMs, () => {
      if (this.stateValue === AgentState.AwaitingResponse) {
        this.fail(`handshake timeout: no HandshakeResponse within ${this.options.handshakeTimeoutMs} ms`);
      }
    });
  }

  private onHandshakeResponse(message: ClientMessage): void {
    let response;
    try {
      response = decodeHandshakeResponse(message.payload);
    } catch (err) {
      this.fail(`malformed HandshakeResponse: ${describeError(err)}`);
      return;
    }
    for (const action of response.processedClientActions) {
      if (action.actionStatus !== ActionStatus.Success) {
        this.fail(
          `handshake action ${action.actionType} answered with status ${action.actionStatus}` +
            (action.error ? `: ${action.error}` : ''),
        );
        return;
      }
      if (action.actionType === 'KMSEncryption') {
        this.fail('KMSEncryption accepted by the client, but the emulator does not implement encryption');
        return;
      }
    }
    const decision = emulatedAgentModeFor(
      this.options.agentVersion,
      response.clientVersion,
      this.options.properties['type'] ?? '',
    );
    this.clientVersionValue = response.clientVersion;
    this.modeValue = decision.mux ? 'mux' : 'basic';
    this.keepAliveValue = decision.mux ? (this.options.smuxKeepAlive ?? decision.smuxKeepAlive) : false;
    this.stateValue = AgentState.Responded;
    this.logger.debug('handshake response accepted', {
      clientVersion: response.clientVersion,
      mode: this.modeValue,
      smuxKeepAlive: this.keepAliveValue,
    });
    // After the ack for the response has gone out, as the reference agent completes on another goroutine.
    if (!this.options.skipHandshakeComplete) queueMicrotask(() => this.completeHandshake());
  }

  private completeHandshake(): void {
    if (this.stateValue !== AgentState.Responded || this.modeValue === undefined) return;
    const elapsedMs = Math.max(0, this.deps.now() - this.requestSentAt);
    this.reliability.sendStreamData(
      PayloadType.HandshakeComplete,
      this.options.handshakeCompletePayload ??
        encodeHandshakeComplete({
          handshakeTimeToComplete: Math.round(elapsedMs * AGENT.NS_PER_MS),
          customerMessage: AGENT.CUSTOMER_MESSAGE,
        }),
    );
    this.stateValue = AgentState.NotReady;
    const event: AgentHandshakeEvent = { mode: this.modeValue, clientVersion: this.clientVersionValue ?? '' };
    this.emit('handshakeComplete', event);
    this.after(this.options.notReadyWindowMs, () => void this.startPlugin());
  }

  // ---------------------------------------------------------------------------------------------
  // Port plugin (spec §9)

  private async startPlugin(): Promise<void> {
    if (this.stateValue !== AgentState.NotReady) return;
    const destination = resolveDestination(this.options.properties, this.options.resolveHost);
    if (typeof destination === 'string') {
      this.fail(destination);
      return;
    }
    const logger = this.logger.child('port');
    const refusal = await destinationRefusal(this.options.properties['host'], this.options.agentVersion);
    if (this.stateValue !== AgentState.NotReady) return;
    if (refusal !== undefined) logger.info('destination refused by the denylist', { refusal });
    const dialer = new DestinationDialer(
      destination,
      {
        dialFailStreamIds: this.options.dialFailStreamIds,
        dialFailCount: this.options.dialFailCount,
        dialDelayMs: this.options.dialDelayMs,
      },
      logger,
      refusal,
    );
    this.dialer = dialer;
    this.pump = new OutboundPump(
      {
        chunkSize: this.options.chunkSize,
        pacingMs: this.options.pacingMs,
        highWaterBytes: PORT_PLUGIN.PUMP_HIGH_WATER_BYTES,
      },
      {
        emit: (chunk) => {
          this.reliability.sendStreamData(PayloadType.Output, chunk);
          this.outputsSent++;
          this.injectDue();
        },
        canRun: () =>
          (this.stateValue === AgentState.Ready || this.stateValue === AgentState.NotReady) &&
          !this.reliability.paused,
        onHigh: () => {
          this.pumpHigh = true;
          this.updateReading();
        },
        onLow: () => {
          this.pumpHigh = false;
          this.updateReading();
        },
      },
    );
    if (this.modeValue === 'mux') {
      this.smux = this.createSmuxServer(dialer, logger);
      this.becomeReady();
      return;
    }
    const basic = new BasicPort({
      dialer,
      pump: this.pump,
      bytes: (direction, count) => this.countBytes(undefined, direction, count),
      destinationConnected: () => this.emit('destinationConnected', undefined),
      maybeUnstalled: () => this.scheduleDrain(),
      maxReceiveBufferBytes: SMUX_SERVER.MAX_RECEIVE_BUFFER_BYTES,
      logger,
    });
    this.basic = basic;
    try {
      await basic.start();
    } catch (err) {
      if (this.isClosed()) return;
      this.stats.dialFailures++;
      this.emit('dialFailed', undefined);
      this.fail(`destination dial failed: ${describeError(err)}`);
      return;
    }
    this.becomeReady();
  }

  private becomeReady(): void {
    if (this.stateValue !== AgentState.NotReady) return;
    this.stateValue = AgentState.Ready;
    this.updateReading();
    this.emit('ready', this.modeValue);
    this.injectDue();
  }

  /** Send every injected message whose point has come (a fault knob; the real agent never does this). */
  private injectDue(): void {
    if (this.options.injectMessages.length === 0) return;
    this.injections ??= [...this.options.injectMessages].sort((a, b) => a.afterOutputs - b.afterOutputs);
    const planned = this.injections;
    for (;;) {
      const next = planned[this.nextInjection];
      if (next === undefined || next.afterOutputs > this.outputsSent || this.isClosed()) return;
      this.nextInjection++;
      this.logger.debug('injecting a message', { payloadType: next.payloadType, bytes: next.payload.length });
      this.reliability.sendStreamData(next.payloadType, next.payload);
    }
  }

  private createSmuxServer(dialer: DestinationDialer, logger: Logger): SmuxServer {
    const pump = this.pump as OutboundPump;
    return new SmuxServer(
      {
        keepAlive: this.keepAliveValue === true,
        keepAliveIntervalMs: SMUX_SERVER.KEEPALIVE_INTERVAL_MS,
        keepAliveTimeoutMs: SMUX_SERVER.KEEPALIVE_TIMEOUT_MS,
        maxReceiveBufferBytes: SMUX_SERVER.MAX_RECEIVE_BUFFER_BYTES,
      },
      {
        dial: (sid) => dialer.dial(sid),
        writeOutbound: (bytes) => pump.push(bytes),
        streamOpened: (sid) => {
          this.stats.streamsOpened++;
          if (!this.streamBytes.has(sid)) this.streamBytes.set(sid, { toDestination: 0, fromDestination: 0 });
          this.emit('streamOpened', sid);
        },
        dialFailed: (sid) => {
          this.stats.dialFailures++;
          this.emit('dialFailed', sid);
          this.reliability.sendStreamData(PayloadType.Flag, encodeFlag(FlagCode.ConnectToPortError));
        },
        destinationConnected: (sid) => this.emit('destinationConnected', sid),
        streamClosed: (sid) => this.emit('streamClosed', sid),
        bytes: (sid, direction, count) => this.countBytes(sid, direction, count),
        maybeUnstalled: () => this.scheduleDrain(),
        failed: (reason) => this.fail(reason),
      },
      logger.child('smux'),
    );
  }

  private countBytes(
    sid: number | undefined,
    direction: 'toDestination' | 'fromDestination',
    count: number,
  ): void {
    if (direction === 'toDestination') this.stats.bytesToDestination += count;
    else this.stats.bytesFromDestination += count;
    if (sid === undefined) return;
    const entry = this.streamBytes.get(sid);
    if (entry !== undefined) entry[direction] += count;
  }

  /** Read destinations only while publishing, running, and the pump is below its high-water mark. */
  private updateReading(): void {
    const on = this.stateValue === AgentState.Ready && !this.reliability.paused && !this.pumpHigh;
    this.smux?.setReading(on);
    this.basic?.setReading(on);
  }

  private clearPause(): void {
    if (!this.reliability.paused) return;
    this.logger.debug('publication resumed');
    this.reliability.setPaused(false);
    this.updateReading();
    this.pump?.kick();
  }

  /** After something freed receive buffer, process buffered messages again (never re-entrantly). */
  private scheduleDrain(): void {
    if (this.drainScheduled) return;
    this.drainScheduled = true;
    queueMicrotask(() => {
      this.drainScheduled = false;
      if (this.stateValue !== AgentState.Ready || this.inboundBlocked || this.receiveStalled()) return;
      this.runInbound(this.reliability.drainIncoming());
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Ending

  /** Flag TerminateSession: stop reading, wait ≤ 2 s for the outgoing buffer to be acked, then report. */
  private beginTerminate(): void {
    if (this.stateValue !== AgentState.Ready) return;
    this.logger.debug('TerminateSession flag: flushing');
    this.stateValue = AgentState.Terminating;
    this.updateReading();
    this.pump?.stop();
    this.after(AGENT.TERMINATE_FLUSH_MS, () => this.finishTerminate());
    // Checked after the flag's own ack has been sent.
    queueMicrotask(() => {
      if (this.reliability.outgoingCount === 0) this.finishTerminate();
    });
  }

  private finishTerminate(): void {
    if (this.terminateEmitted || this.stateValue !== AgentState.Terminating) return;
    this.terminateEmitted = true;
    this.emit('terminateRequested');
  }

  private fail(reason: string): void {
    if (this.stateValue === AgentState.Closed) return;
    this.logger.warn('agent failed', { reason });
    this.shutdown();
    this.emit('failed', reason);
  }

  private shutdown(): void {
    this.stateValue = AgentState.Closed;
    if (this.scanTimer !== undefined) clearInterval(this.scanTimer);
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.pump?.stop();
    this.dialer?.close();
    this.smux?.close();
    this.basic?.close();
    this.inboundBacklog.length = 0;
  }

  // ---------------------------------------------------------------------------------------------
  // Plumbing

  /** A method, not a narrowed field read, so checks after an `await` are not folded away by the compiler. */
  private isClosed(): boolean {
    return this.stateValue === AgentState.Closed;
  }

  private sendFrame(frame: Buffer): void {
    if (this.stateValue === AgentState.Closed) return;
    this.stats.framesOut++;
    if (this.listenerCount('message') > 0) {
      // Our own sealed frame: it decodes. Decoded only for listeners (issue 16).
      this.emitMessage('out', decodeInbound(frame, { verifyDigest: false, copyPayload: false }));
    }
    this.sendDepth++;
    try {
      this.deps.sendToClient(frame);
    } finally {
      this.sendDepth--;
    }
  }

  private emitMessage(direction: 'in' | 'out', message: ClientMessage): void {
    // Built only for listeners: one object per frame adds up at tens of thousands of frames per second.
    if (this.listenerCount('message') === 0) return;
    const event: AgentMessageEvent = {
      direction,
      messageType: message.messageType,
      sequenceNumber: message.sequenceNumber,
      payloadType: message.payloadType,
      payloadLength: message.payload.length,
      at: this.deps.now(),
    };
    this.emit('message', event);
  }

  /** A one-shot timer cleared on shutdown. */
  private after(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }
}
