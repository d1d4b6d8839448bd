/**
 * Per-session state of the emulated Session Manager service (spec §8, §10, §12.1): the current token and
 * cell-number, the one client WebSocket, the emulated agent, the relay between them through the fault pipes,
 * the idle / maximum-duration timers, and the counters and frame log tests assert on (spec §12.3).
 *
 * The service does not ack or sequence anything itself (spec §1); it only relays and injects
 * `channel_closed`, `pause_publication` and `start_publication`.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { RawData, WebSocket } from 'ws';
import { MessageType, PayloadType } from '../datachannel/constants.js';
import { encodeMessage, newMessage } from '../datachannel/message.js';
import type { OpenDataChannelInput } from '../datachannel/payloads.js';
import { encodeChannelClosed } from '../datachannel/payloads.js';
import { WriteCoalescer, underlyingSocketOf } from '../transport/write-coalescer.js';
import type { Logger } from '../log.js';
import type { AgentDeps, AgentOptions, EmulatedAgent } from './agent.js';
import type { StartSessionInput } from './api.js';
import { FaultPipe, SlowLink } from './faults.js';
import type { Direction, FaultFate, Faults } from './faults.js';
import { FrameLog } from './frame-log.js';
import type { FrameRecord } from './frame-log.js';

export type { FrameRecord } from './frame-log.js';

/** Session state as the service sees it. */
export type SessionState =
  /** StartSession answered, no client has connected yet. */
  | 'waiting'
  /** A client WebSocket passed OpenDataChannel and is attached. */
  | 'connected'
  /** The client socket went away; the session can be resumed (spec §10.3). */
  | 'disconnected'
  /** Ended; ResumeSession answers without a token and connects are refused (spec §10.1). */
  | 'terminated';

/** Why a session ended. */
export type SessionEndReason =
  /** TerminateSession API call. */
  | 'terminated'
  /** No data-channel message for `idleTimeoutMs` (spec §10.2). */
  | 'idleTimeout'
  /** `maxDurationMs` since StartSession elapsed (spec §10.2). */
  | 'maxDuration'
  /** The `terminateAfterMs` fault fired. */
  | 'terminateFault'
  /** The agent acted on the client's TerminateSession flag (spec §9.5). */
  | 'agentTerminated'
  /** The agent failed (handshake timeout, basic-mode dial failure, protocol error). */
  | 'agentFailed'
  /** The emulator was closed. */
  | 'emulatorClosed';

/**
 * `Output` text of the `channel_closed` message per end reason. The real texts are not confirmable
 * (spec §13) [inferred]; these are ours, and clients must not depend on them.
 */
export const CHANNEL_CLOSED_OUTPUT: Readonly<Record<SessionEndReason, string>> = {
  terminated: 'Session terminated by TerminateSession',
  idleTimeout: 'Session idle timeout reached',
  maxDuration: 'Session maximum duration reached',
  terminateFault: 'Session terminated by the emulator (terminateAfterMs fault)',
  agentTerminated: 'Session terminated by the client',
  agentFailed: 'Session failed on the agent',
  emulatorClosed: 'Emulator shutting down',
};

/** Close code and reason when a connect is refused or a socket is replaced (RFC 6455). */
export const WS_CLOSE = {
  /** Normal closure; the real service closes with 1000 "Bye" (spec §3.5). */
  NORMAL: 1000,
  /** Policy violation: bad token, terminated session, no OpenDataChannel (spec §3.2 [inferred]). */
  POLICY: 1008,
} as const;

/** Text of the refusal when a client connects to an ended session (spec §10.3, agent wording). */
export const SESSION_TERMINATED_TEXT = 'Session is already terminated';

/** Counters of one session (spec §12.3); the agent's own counters are on `agent.stats`. */
export interface SessionCounters {
  /** Binary frames received from client sockets. */
  clientFramesIn: number;
  /** Frames written to client sockets (relayed agent frames and service messages). */
  clientFramesOut: number;
  /** Bytes received from client sockets. */
  clientBytesIn: number;
  /** Bytes written to client sockets. */
  clientBytesOut: number;
  /** Accepted connects after the first one. */
  reconnects: number;
  /** Frames dropped by `dropRate` or `dropAck`, per direction. */
  droppedByFault: { toAgent: number; toClient: number };
  /** Frames delivered twice by `dupRate`. */
  duplicatedByFault: number;
  /** Frames whose payload was corrupted by `corruptDigest`. */
  corruptedByFault: number;
  /** Frames released from a shuffled reorder window. */
  reorderedByFault: number;
  /** Successful ResumeSession calls. */
  resumes: number;
  /** Agent frames thrown away because no client was connected (spec §8 [inferred]). */
  discardedWhileAway: number;
  /** Agent frames held back by `pauseFor`, in total. */
  heldByPause: number;
  /** Client sockets closed by the `dropWebSocket` fault or `dropClient()`. */
  webSocketDrops: number;
  /** Text frames received after OpenDataChannel (logged, ignored). */
  textFramesIgnored: number;
  /** Service messages sent to the client (channel_closed, pause/start_publication). */
  serviceMessagesOut: number;
}

/** What tests may read about a session. */
export interface EmulatedSessionInfo {
  /** SessionId, `<user>-<17 hex>`. */
  readonly id: string;
  /** StartSession Target. */
  readonly target: string;
  /** StartSession DocumentName. */
  readonly document: string;
  /** StartSession Parameters, list-valued as sent. */
  readonly parameters: Readonly<Record<string, string[]>>;
  /** StartSession Reason, if any. */
  readonly reason: string | undefined;
  readonly state: SessionState;
  /** Why the session ended; undefined while live. */
  readonly closeReason: SessionEndReason | undefined;
  /** The channel_closed Output sent (or that would have been sent) at the end. */
  readonly closeOutput: string | undefined;
  /** Created on the first client connect. */
  readonly agent: EmulatedAgent | undefined;
  readonly counters: Readonly<SessionCounters>;
  /** Last `maxFramesLogged` frames, oldest first. */
  readonly frames: readonly FrameRecord[];
  /** ClientId of every accepted OpenDataChannel, in order. */
  readonly clientIds: readonly string[];
  /** RequestId of every accepted OpenDataChannel, in order. */
  readonly requestIds: readonly string[];
  /** ClientVersion of every accepted OpenDataChannel, in order. */
  readonly clientVersions: readonly string[];
  /** Current cell-number (changes on every ResumeSession). */
  readonly cellNumber: number;
  /** Handshake mode once the agent reported HandshakeComplete. */
  readonly mode: 'mux' | 'basic' | undefined;
}

/** The agent settings of the emulator that are not derived from the session. */
export type AgentDefaults = Omit<AgentOptions, 'properties' | 'resolveHost'>;

/** What a session needs from the emulator (narrow functions: docs/architecture.md, Conventions). */
export interface SessionEnvironment {
  /** Live faults. */
  faults: Faults;
  /** Scoped logger for this session. */
  logger: Logger;
  /** Clock, Unix ms. */
  now(): number;
  /** Builds the agent on first connect. */
  createAgent(options: AgentOptions, deps: AgentDeps): EmulatedAgent;
  /** Agent settings from the emulator options (faults override them per field). */
  agentDefaults: Readonly<AgentDefaults>;
  /** Map a destination host to the address the agent dials. */
  resolveHost(host: string): string;
  /** Idle timeout, ms; 0 = off. */
  idleTimeoutMs: number;
  /** Maximum session duration, ms; 0 = off. */
  maxDurationMs: number;
  /** Frame-log length. */
  maxFramesLogged: number;
  /** Most agent frames held during a pause; further ones are discarded. */
  maxHeldFrames: number;
  /** Emit an emulator event (`clientConnected`, `handshakeComplete`, …) with the session id first. */
  emit(event: string, ...args: unknown[]): void;
}

/** Options of every binary send: one shared object instead of one per frame. */
const SEND_BINARY = Object.freeze({ binary: true });

/** Hex digits of a SessionId suffix (observed format `alice-0a1b2c3d4e5f67890`). */
const SESSION_ID_SUFFIX_HEX = 17;
/** Bytes of entropy in a TokenValue (our choice; real tokens are longer opaque base64). */
const TOKEN_BYTES = 96;

/** A fresh SessionId for `user`. */
export function newSessionId(user: string): string {
  return `${user}-${randomBytes(9).toString('hex').slice(0, SESSION_ID_SUFFIX_HEX)}`;
}

/** A fresh opaque bearer token. */
export function newToken(): string {
  return randomBytes(TOKEN_BYTES).toString('base64');
}

function rawToBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/** A live emulated session. */
export class EmulatedSession implements EmulatedSessionInfo {
  readonly id: string;
  readonly target: string;
  readonly document: string;
  readonly parameters: Readonly<Record<string, string[]>>;
  readonly reason: string | undefined;
  state: SessionState = 'waiting';
  closeReason: SessionEndReason | undefined;
  closeOutput: string | undefined;
  agent: EmulatedAgent | undefined;
  mode: 'mux' | 'basic' | undefined;
  readonly counters: SessionCounters = {
    clientFramesIn: 0,
    clientFramesOut: 0,
    clientBytesIn: 0,
    clientBytesOut: 0,
    reconnects: 0,
    droppedByFault: { toAgent: 0, toClient: 0 },
    duplicatedByFault: 0,
    corruptedByFault: 0,
    reorderedByFault: 0,
    resumes: 0,
    discardedWhileAway: 0,
    heldByPause: 0,
    webSocketDrops: 0,
    textFramesIgnored: 0,
    serviceMessagesOut: 0,
  };
  readonly clientIds: string[] = [];
  readonly requestIds: string[] = [];
  readonly clientVersions: string[] = [];
  cellNumber = 1;
  /** Current bearer token; only this one is accepted (spec §12.1). */
  token: string;

  private readonly frameLog: FrameLog;
  private socket: WebSocket | undefined;
  /** Coalesces the relay's writes to `socket` per tick (one writev instead of one syscall per frame). */
  private writes: WriteCoalescer | undefined;
  private readonly input: StartSessionInput;
  private readonly toAgent: FaultPipe;
  private readonly toClient: FaultPipe;
  private lastActivityAt: number;
  private idleTimer: NodeJS.Timeout | undefined;
  private maxTimer: NodeJS.Timeout | undefined;
  private terminateTimer: NodeJS.Timeout | undefined;
  private pauseTimer: NodeJS.Timeout | undefined;
  private paused = false;
  private held: Buffer[] = [];
  private connection: { messages: number; dropTimer: NodeJS.Timeout | undefined } | undefined;
  private drops = 0;

  /**
   * @param id SessionId
   * @param input the validated StartSession request
   * @param env emulator hooks
   */
  constructor(
    id: string,
    input: StartSessionInput,
    private readonly env: SessionEnvironment,
  ) {
    this.id = id;
    this.input = input;
    this.target = input.target;
    this.document = input.documentName;
    const parameters: Record<string, string[]> = { portNumber: [input.parameters.portNumber] };
    if (input.parameters.localPortNumber !== undefined)
      parameters['localPortNumber'] = [input.parameters.localPortNumber];
    if (input.parameters.host !== undefined) parameters['host'] = [input.parameters.host];
    for (const [name, value] of Object.entries(input.extraParameters ?? {})) parameters[name] = [value];
    this.parameters = parameters;
    this.reason = input.reason;
    this.token = newToken();
    this.lastActivityAt = env.now();
    this.frameLog = new FrameLog(env.maxFramesLogged);
    this.toAgent = new FaultPipe(
      'toAgent',
      env.faults,
      (frame) => this.deliverToAgent(frame),
      (fate, frame) => this.onFault('toAgent', fate, frame),
    );
    this.toClient = new FaultPipe(
      'toClient',
      env.faults,
      (frame) => this.deliverToClient(frame, 'agent'),
      (fate, frame) => this.onFault('toClient', fate, frame),
    );
    if (env.idleTimeoutMs > 0) this.armIdleTimer(env.idleTimeoutMs);
    if (env.maxDurationMs > 0) {
      this.maxTimer = setTimeout(() => this.terminate('maxDuration'), env.maxDurationMs);
    }
  }

  /** Last `maxFramesLogged` frames, oldest first. */
  get frames(): readonly FrameRecord[] {
    return this.frameLog.records();
  }

  /** True while a client socket is attached and open. */
  get clientConnected(): boolean {
    return this.socket !== undefined && this.socket.readyState === this.socket.OPEN;
  }

  /** Issue a new token and cell-number (ResumeSession, spec §2.2). The old token stops working. */
  resume(): void {
    this.token = newToken();
    this.cellNumber += 1;
    this.counters.resumes += 1;
  }

  /**
   * Attach a client socket that passed OpenDataChannel validation. Replaces an attached socket, creates and
   * starts the agent on the first connect, and resumes the agent's publication on later ones.
   * Changes `state` to `connected`.
   */
  attach(ws: WebSocket, open: OpenDataChannelInput): void {
    if (this.state === 'terminated') {
      ws.close(WS_CLOSE.POLICY, SESSION_TERMINATED_TEXT);
      return;
    }
    this.clientIds.push(open.clientId);
    this.requestIds.push(open.requestId);
    this.clientVersions.push(open.clientVersion);
    const previous = this.socket;
    const firstConnect = this.agent === undefined;
    this.socket = ws;
    const tcp = underlyingSocketOf(ws);
    this.writes = new WriteCoalescer(tcp);
    // ws reads from this socket already: every ack and frame one read produces leaves in one writev (issue 16).
    this.writes.watchReads(tcp);
    if (previous !== undefined) {
      this.env.logger.debug('client socket replaced by a new connect');
      this.endConnection();
      previous.close(WS_CLOSE.NORMAL, 'replaced by a new connection');
    }
    if (!firstConnect) this.counters.reconnects += 1;
    this.state = 'connected';
    this.connection = { messages: 0, dropTimer: undefined };
    const drop = this.env.faults.dropWebSocket;
    if (drop?.everyMs !== undefined && drop.everyMs > 0 && this.dropAllowed()) {
      const conn = this.connection;
      conn.dropTimer = setTimeout(() => {
        conn.dropTimer = undefined;
        if (this.socket === ws) this.dropClient(this.env.faults.dropWebSocket?.mode ?? 'bye');
      }, drop.everyMs);
    }
    // The uplink's rate (toAgentBytesPerSec): pausing the socket lets TCP backpressure reach the client.
    const link = new SlowLink(
      () => this.env.faults.toAgentBytesPerSec,
      (frame, isBinary) => {
        if (this.socket === ws) this.onClientMessage(frame, isBinary);
      },
      () => ws.pause(),
      () => ws.resume(),
    );
    ws.on('message', (data: RawData, isBinary: boolean) => link.push(rawToBuffer(data), isBinary));
    ws.on('close', () => {
      link.close();
      if (this.socket === ws) this.onClientGone();
    });
    ws.on('error', (err) => this.env.logger.debug('client socket error', { error: err }));
    this.env.logger.debug('client connected', { clientId: open.clientId, cell: this.cellNumber });
    this.env.emit('clientConnected', this.id);
    if (firstConnect) {
      this.startAgent();
      const after = this.env.faults.terminateAfterMs;
      if (after > 0) this.terminateTimer = setTimeout(() => this.terminate('terminateFault'), after);
    } else {
      this.agent?.startPublication();
    }
  }

  /**
   * Send `pause_publication` to the client, hold every agent frame for `ms`, then send `start_publication`
   * and release the held frames (spec §12.2 `pauseFor`).
   */
  pauseFor(ms: number): void {
    if (this.state === 'terminated') return;
    this.pause();
    this.pauseTimer = setTimeout(() => {
      this.pauseTimer = undefined;
      this.endPause();
    }, ms);
  }

  /**
   * Send `pause_publication` to the client and hold every agent frame, with no `start_publication` to follow
   * (spec §12.2 "pause without start": the agent side never comes back, issue 10).
   */
  pause(): void {
    if (this.state === 'terminated') return;
    this.paused = true;
    this.sendServiceMessage(MessageType.PausePublication, Buffer.alloc(0));
    if (this.pauseTimer !== undefined) clearTimeout(this.pauseTimer);
    this.pauseTimer = undefined;
  }

  /** Close the client socket now: `abrupt` without a close frame, `bye` with 1000 "Bye" (spec §3.5). */
  dropClient(mode: 'abrupt' | 'bye'): void {
    const ws = this.socket;
    if (ws === undefined) return;
    this.drops += 1;
    this.counters.webSocketDrops += 1;
    this.env.logger.debug('dropping client socket', { mode });
    // Frames relayed before the drop were written before it; only a cork could still hold them back.
    this.writes?.flush();
    if (mode === 'abrupt') ws.terminate();
    else ws.close(WS_CLOSE.NORMAL, 'Bye');
  }

  /**
   * End the session: `channel_closed` with the reason's Output to a connected client, close its socket, close
   * the agent. Idempotent. Changes `state` to `terminated`.
   */
  terminate(reason: SessionEndReason, detail?: string): void {
    if (this.state === 'terminated') return;
    const output = detail ? `${CHANNEL_CLOSED_OUTPUT[reason]}: ${detail}` : CHANNEL_CLOSED_OUTPUT[reason];
    this.env.logger.debug('session ending', { reason, output });
    this.flushHeldOnEnd();
    this.state = 'terminated';
    this.closeReason = reason;
    this.closeOutput = output;
    for (const timer of [this.idleTimer, this.maxTimer, this.terminateTimer, this.pauseTimer]) {
      if (timer !== undefined) clearTimeout(timer);
    }
    this.toAgent.close();
    this.toClient.close();
    const ws = this.socket;
    if (ws !== undefined && ws.readyState === ws.OPEN) {
      const payload = encodeChannelClosed({
        messageId: randomUUID(),
        destinationId: this.clientIds[this.clientIds.length - 1] ?? '',
        sessionId: this.id,
        output,
        createdDate: this.env.now(),
      });
      this.sendServiceMessage(MessageType.ChannelClosed, payload);
      ws.close(WS_CLOSE.NORMAL, 'channel closed');
      // The emulator may terminate the socket right after (close()); channel_closed must be out first.
      this.writes?.flush();
    }
    this.endConnection();
    this.socket = undefined;
    this.agent?.close(output);
    this.env.emit('sessionTerminated', this.id, reason);
  }

  // ---------------------------------------------------------------------------------------------
  // Relay

  private onClientMessage(frame: Buffer, isBinary: boolean): void {
    if (this.state === 'terminated') return;
    if (!isBinary) {
      // Spec §3.5: text frames after OpenDataChannel are not expected; log and ignore.
      this.counters.textFramesIgnored += 1;
      this.env.logger.debug('ignoring text frame after OpenDataChannel', { bytes: frame.length });
      return;
    }
    this.counters.clientFramesIn += 1;
    this.counters.clientBytesIn += frame.length;
    this.touch();
    this.countConnectionMessage();
    // The ws message is a view of a whole socket read, and the agent keeps payloads (reorder buffer, destination
    // writes): it gets its own copy, the one copy a frame gets (agent.ts and smux-server.ts keep views of it).
    const copy = Buffer.allocUnsafe(frame.length);
    copy.set(frame);
    this.toAgent.push(copy);
  }

  private deliverToAgent(frame: Buffer): void {
    if (this.state === 'terminated' || this.agent === undefined) return;
    this.record('toAgent', 'client', 'relayed', frame);
    this.agent.receiveFromClient(frame);
  }

  /** The agent's `sendToClient`: pause hold, away discard, or into the fault pipe. */
  private fromAgent(frame: Buffer): void {
    if (this.state === 'terminated') return;
    if (this.paused) {
      if (this.held.length < this.env.maxHeldFrames) {
        this.held.push(frame);
        this.counters.heldByPause += 1;
        this.record('toClient', 'agent', 'held', frame);
      } else {
        this.counters.discardedWhileAway += 1;
        this.record('toClient', 'agent', 'discarded', frame);
      }
      return;
    }
    if (!this.clientConnected) {
      // Spec §8 [inferred]: the service discards what a side sends while its peer is away; the agent resends.
      this.counters.discardedWhileAway += 1;
      this.record('toClient', 'agent', 'discarded', frame);
      return;
    }
    this.toClient.push(frame);
  }

  private deliverToClient(frame: Buffer, source: 'agent' | 'service'): void {
    const ws = this.socket;
    if (ws === undefined || ws.readyState !== ws.OPEN) {
      this.counters.discardedWhileAway += 1;
      this.record('toClient', source, 'discarded', frame);
      return;
    }
    this.writes?.hold();
    ws.send(frame, SEND_BINARY);
    this.counters.clientFramesOut += 1;
    this.counters.clientBytesOut += frame.length;
    this.record('toClient', source, 'relayed', frame);
    if (source === 'agent') {
      this.touch();
      this.countConnectionMessage();
    }
  }

  private sendServiceMessage(messageType: string, payload: Buffer): void {
    const frame = encodeMessage(
      newMessage({
        messageType,
        sequenceNumber: 0,
        flags: 0,
        payloadType: PayloadType.None,
        payload,
        createdDate: this.env.now(),
      }),
    );
    this.counters.serviceMessagesOut += 1;
    this.deliverToClient(frame, 'service');
  }

  private endPause(): void {
    this.paused = false;
    if (this.state === 'terminated') return;
    this.sendServiceMessage(MessageType.StartPublication, Buffer.alloc(0));
    const held = this.held;
    this.held = [];
    for (const frame of held) this.fromAgent(frame);
  }

  private flushHeldOnEnd(): void {
    this.held = [];
    this.paused = false;
  }

  private onClientGone(): void {
    this.endConnection();
    this.socket = undefined;
    if (this.state === 'terminated') return;
    this.state = 'disconnected';
    this.env.logger.debug('client disconnected');
    // Spec §8: the agent's peer is away; the service tells it to pause.
    this.agent?.pausePublication();
    this.env.emit('clientDisconnected', this.id);
  }

  private endConnection(): void {
    if (this.connection?.dropTimer !== undefined) clearTimeout(this.connection.dropTimer);
    this.connection = undefined;
  }

  private dropAllowed(): boolean {
    const drop = this.env.faults.dropWebSocket;
    return drop !== undefined && (drop.times === undefined || this.drops < drop.times);
  }

  private countConnectionMessage(): void {
    const conn = this.connection;
    if (conn === undefined) return;
    conn.messages += 1;
    const drop = this.env.faults.dropWebSocket;
    if (drop?.afterMessages !== undefined && conn.messages === drop.afterMessages && this.dropAllowed()) {
      // Deferred so the frame that hit the limit is relayed first.
      const ws = this.socket;
      setImmediate(() => {
        if (this.socket === ws && ws !== undefined) this.dropClient(drop.mode);
      });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Agent

  private startAgent(): void {
    const faults = this.env.faults.agent;
    const { propertiesOverride, ...agentKnobs } = faults;
    const properties: Record<string, string> = {
      portNumber: this.input.parameters.portNumber,
      type: 'LocalPortForwarding',
      localPortNumber: this.input.parameters.localPortNumber ?? '',
    };
    if (this.input.parameters.host !== undefined) properties['host'] = this.input.parameters.host;
    const defined = Object.fromEntries(Object.entries(agentKnobs).filter(([, v]) => v !== undefined));
    const options: AgentOptions = {
      ...this.env.agentDefaults,
      ...defined,
      properties: { ...properties, ...propertiesOverride },
      resolveHost: (host) => this.env.resolveHost(host),
    };
    const agent = this.env.createAgent(options, {
      now: () => this.env.now(),
      sendToClient: (frame) => this.fromAgent(frame),
      logger: this.env.logger.child('agent'),
    });
    this.agent = agent;
    agent.on('handshakeComplete', (info: { mode: 'mux' | 'basic' }) => {
      this.mode = info.mode;
      this.env.emit('handshakeComplete', this.id, info.mode);
    });
    agent.on('terminateRequested', () => this.terminate('agentTerminated'));
    agent.on('failed', (reason: unknown) => this.terminate('agentFailed', String(reason)));
    agent.start();
  }

  // ---------------------------------------------------------------------------------------------
  // Timers and bookkeeping

  /** A data-channel message passed: reset the idle clock (pings never get here, spec §3.4). */
  private touch(): void {
    this.lastActivityAt = this.env.now();
  }

  private armIdleTimer(ms: number): void {
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      const idleFor = this.env.now() - this.lastActivityAt;
      const remaining = this.env.idleTimeoutMs - idleFor;
      if (remaining <= 0) this.terminate('idleTimeout');
      else this.armIdleTimer(remaining);
    }, ms);
  }

  private onFault(direction: Direction, fate: FaultFate, frame: Buffer): void {
    switch (fate) {
      case 'dropped':
        this.counters.droppedByFault[direction] += 1;
        break;
      case 'duplicated':
        this.counters.duplicatedByFault += 1;
        break;
      case 'corrupted':
        this.counters.corruptedByFault += 1;
        break;
      case 'reordered':
        this.counters.reorderedByFault += 1;
        break;
      case 'delayed':
        return;
    }
    this.record(direction, direction === 'toAgent' ? 'client' : 'agent', fate, frame);
    this.env.emit('fault', this.id, direction, fate);
  }

  private record(
    direction: Direction,
    source: FrameRecord['source'],
    fate: FrameRecord['fate'],
    frame: Buffer,
  ): void {
    this.frameLog.add(this.env.now(), direction, source, fate, frame);
  }
}
